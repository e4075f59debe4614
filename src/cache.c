/* Embedding cache in shared memory: see include/mmembed/cache.h for the
 * model (keys, generations, threads). This file is the layout and the
 * lock-free protocol between processes.
 *
 * Layout of the mapping (no pointers, only offsets from its start):
 *
 *   struct mm_cache    read-only after create, plus the generation and the
 *                      counters (atomics, on their own cache lines)
 *   hands[nbuckets]    one CLOCK hand per bucket (uint8)
 *   slots[nslots]      nbuckets * MM_CACHE_WAYS slots of slot_bytes each:
 *                        slot_t header       (one cache line)
 *                        key  [256 bytes]    the full key
 *                        data [max_dim]      the vector, padded to 8 bytes
 *
 * Protocol. Each slot is a seqlock whose 64-bit lock word holds a sequence
 * number (low 32 bits; odd while a writer owns the slot) and the owner's
 * thread id (high 32 bits), so claiming a slot and naming its owner are one
 * atomic step and no crash can leave an odd slot with a stale owner.
 *
 *  - A writer claims a slot with a CAS from the even value it saw to
 *    seq+1 | tid, issues a release fence, writes every field with relaxed
 *    atomic stores and publishes with a release store of seq+2.
 *  - A reader loads the lock with acquire, skips it if odd, reads the
 *    fields with relaxed atomic loads (copying the vector into the caller's
 *    buffer as it goes), issues an acquire fence and reloads the lock: if
 *    the word changed, a writer got in and what was read is discarded.
 *    Fence-to-fence synchronisation (C11 7.17.4) makes this sound: if any
 *    load saw a store from a writer that came after the reader's first lock
 *    load, the writer's release fence synchronises with the reader's acquire
 *    fence, so the writer's CAS happens before the reload, which then sees
 *    the new word. Using atomics (not memcpy) for the racy copies keeps the
 *    program free of data races in the C11 sense; on x86-64 they compile to
 *    plain moves, but not vector ones: a 512-d hit costs ~170 ns instead of
 *    ~65 ns with memcpy (Xeon, measured), which a forward pass dwarfs.
 *  - A writer SIGKILLed between claim and publish leaves the slot odd:
 *    readers skip it for ever, and writers skip it while its owner lives.
 *    When a writer needs room and finds an odd slot, it asks the kernel
 *    whether the owner thread still exists (kill(tid, 0) == ESRCH, which
 *    works for thread ids on Linux); if not, it takes the slot over with a
 *    CAS from the odd value to seq+2 | its own tid and rewrites it from
 *    scratch. Only a thread that provably no longer exists loses its slot,
 *    so two writers never write one slot at once; taking over a slot of a
 *    live but slow writer after a timeout would let its late stores land in
 *    a published entry, which no reader could detect. An odd slot owned by
 *    the caller's own tid is also reclaimable: the caller is not writing it,
 *    so it was left by an earlier thread with the same id. Costs: a dead
 *    owner whose id was reused (or a zombie not yet reaped) keeps its slot
 *    until that id goes away, i.e. one slot per crash at worst.
 *  - Eviction is CLOCK per bucket: a hit sets the slot's reference bit, the
 *    hand clears set bits as it passes and evicts the first clear one. New
 *    entries start clear (as in SIEVE), so one-off keys go before keys that
 *    were read. The bit and the hand are hints outside the protocol: any
 *    interleaving of them only changes which entry is evicted.
 *  - The sequence wraps after 2^31 writes of one slot; a reader would have
 *    to stall across exactly that many to be fooled.
 *
 * Generations: the header's generation starts at 1 and mm_cache_clear bumps
 * it; a slot is valid only if written in the current one (0 = never
 * written), and slots of older generations are the first reused. */
#include "mmembed/cache.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#define CACHE_MAGIC 0x3165686361636d6dULL /* "mmcache1" */
#define SECRET_BYTES 192                   /* XXH3 secret, >= XXH3_SECRET_SIZE_MIN */
#define SLOT_HDR 64
#define W MM_CACHE_WAYS
#define ROUND(x, a) (((x) + (a) - 1) / (a) * (a))

/* Relaxed atomics: the racy accesses inside the seqlock window. */
#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p) __atomic_fetch_add((p), 1, __ATOMIC_RELAXED)

#ifdef MM_TEST_HOOKS
volatile int mm_cache_test_put_pause_us;
volatile int mm_cache_test_weak_hash;
#endif

typedef struct {
    uint64_t lock;  /* seq (low 32, odd = owned by a writer) | owner tid (high 32) */
    uint64_t h0;    /* index hash of the full key */
    uint64_t h1;
    uint32_t gen;   /* generation written in; 0 = never written */
    uint32_t klen;  /* full key bytes */
    uint32_t dim;   /* floats in data */
    uint8_t ref;    /* CLOCK reference bit, outside the protocol */
} slot_t;

struct mm_cache {
    uint64_t magic;
    uint64_t map_bytes;        /* length of the mapping */
    uint64_t hands_off;        /* offset of hands[nbuckets] */
    uint64_t slots_off;        /* offset of slot 0 (64-aligned) */
    uint32_t nbuckets;
    uint32_t nslots;           /* nbuckets * W */
    uint32_t slot_bytes;       /* 64-multiple */
    uint32_t max_dim;
    uint64_t seed64;           /* XXH64 seed for inputs */
    uint8_t secret[SECRET_BYTES]; /* XXH3 secret for inputs and the index hash */
    _Alignas(64) uint32_t gen; /* current generation, >= 1 */
    _Alignas(64) uint64_t hits;
    uint64_t misses;
    _Alignas(64) uint64_t inserts;
    uint64_t evictions;
    uint64_t reclaims;
};

_Static_assert(sizeof(slot_t) <= SLOT_HDR, "slot header must fit one cache line");
_Static_assert(MM_CACHE_KEY_MAX % 8 == 0, "key area is copied in 8-byte words");

/* ------------------------------------------------------------------ */
/* Slot access                                                         */
/* ------------------------------------------------------------------ */

static inline slot_t *slot_at(const mm_cache_t *c, uint32_t i)
{
    return (slot_t *)((char *)c + c->slots_off + (size_t)i * c->slot_bytes);
}

static inline uint64_t *slot_key(slot_t *s)
{
    return (uint64_t *)((char *)s + SLOT_HDR);
}

static inline uint64_t *slot_data(slot_t *s)
{
    return (uint64_t *)((char *)s + SLOT_HDR + MM_CACHE_KEY_MAX);
}

static inline uint64_t make_lock(uint32_t tid, uint32_t seq)
{
    return (uint64_t)tid << 32 | seq;
}

static void key_hash(const mm_cache_t *c, const mm_cache_key_t *k, uint64_t h[2])
{
    XXH128_hash_t x = XXH3_128bits_withSecret(k->bytes, k->len, c->secret, SECRET_BYTES);
    h[0] = x.low64;
    h[1] = x.high64;
#ifdef MM_TEST_HOOKS
    if (mm_cache_test_weak_hash) {
        h[0] = (h[0] & 1) ? UINT64_MAX : 0; /* first or last bucket */
        h[1] = 0;
    }
#endif
}

/* First slot index of the bucket for h0 (multiply-shift: any bucket count). */
static inline uint32_t bucket_first(const mm_cache_t *c, uint64_t h0)
{
    return (uint32_t)(((unsigned __int128)h0 * c->nbuckets) >> 64) * W;
}

/* Does slot s hold key k of generation gen? Racy: the caller validates. */
static int slot_matches(slot_t *s, const mm_cache_key_t *k, const uint64_t h[2], uint32_t gen)
{
    if (LD(&s->h0) != h[0] || LD(&s->h1) != h[1] || LD(&s->gen) != gen || LD(&s->klen) != k->len)
        return 0;
    const uint64_t *w = slot_key(s);
    for (uint32_t i = 0; i < (k->len + 7) / 8; i++) {
        uint64_t x;
        memcpy(&x, k->bytes + 8 * i, 8); /* bytes past len are zero, as stored */
        if (LD(&w[i]) != x)
            return 0;
    }
    return 1;
}

static void copy_out(slot_t *s, float *out, int dim)
{
    const uint64_t *w = slot_data(s);
    size_t n = (size_t)dim * sizeof(float), i;
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t x = LD(&w[i / 8]);
        memcpy((char *)out + i, &x, 8);
    }
    if (i < n) {
        uint64_t x = LD(&w[i / 8]);
        memcpy((char *)out + i, &x, 4);
    }
}

static void copy_in(slot_t *s, const mm_cache_key_t *k, const float *v, int dim)
{
    uint64_t *w = slot_key(s);
    for (uint32_t i = 0; i < (k->len + 7) / 8; i++) {
        uint64_t x;
        memcpy(&x, k->bytes + 8 * i, 8);
        ST(&w[i], x);
    }
    w = slot_data(s);
    size_t n = (size_t)dim * sizeof(float), i;
    for (i = 0; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, (const char *)v + i, 8);
        ST(&w[i / 8], x);
    }
    if (i < n) {
        uint64_t x = 0;
        memcpy(&x, (const char *)v + i, 4);
        ST(&w[i / 8], x);
    }
}

/* ------------------------------------------------------------------ */
/* Owner identity                                                      */
/* ------------------------------------------------------------------ */

/* gettid() is a system call; cache it per thread. fork() copies the
 * parent's thread-local value into the child, so an atfork handler
 * (registered once, by create, before the master forks) forgets it. */
static _Thread_local uint32_t my_tid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void forget_tid(void)
{
    my_tid = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, forget_tid);
}

static uint32_t self_tid(void)
{
    if (!my_tid)
        my_tid = (uint32_t)gettid();
    return my_tid;
}

/* May the writer `tid` of an odd slot be replaced? Only if it can never
 * store again: the thread no longer exists, or it is the caller itself
 * (which is not writing that slot, so the id was reused). EPERM and every
 * other answer count as alive. */
static int owner_gone(uint32_t tid, uint32_t me)
{
    if (tid == me)
        return 1;
    if (tid == 0 || tid > INT32_MAX)
        return 0;
    int saved = errno;
    int gone = kill((pid_t)tid, 0) < 0 && errno == ESRCH;
    errno = saved;
    return gone;
}

/* ------------------------------------------------------------------ */
/* Create / destroy                                                    */
/* ------------------------------------------------------------------ */

static int fill_random(void *p, size_t n)
{
    char *b = p;
    while (n) {
        ssize_t r = getrandom(b, n, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

int mm_cache_create(mm_cache_t **out, size_t bytes, int max_dim, char *err, size_t errlen)
{
    *out = NULL;
    if (bytes == 0)
        return MM_OK;
    if (max_dim < 1 || max_dim > MM_CACHE_MAX_DIM)
        return mm_errf(err, errlen, MM_E_INVALID, "cache max_dim %d is outside 1..%d", max_dim,
                       MM_CACHE_MAX_DIM);

    size_t slot_bytes = ROUND(SLOT_HDR + MM_CACHE_KEY_MAX + ROUND((size_t)max_dim * 4, 8), 64);
    size_t hdr = ROUND(sizeof(mm_cache_t), 64);
    size_t nb = 0;
    if (bytes > hdr)
        nb = (bytes - hdr) / (W * slot_bytes + 1);
    while (nb && hdr + ROUND(nb, 64) + nb * W * slot_bytes > bytes)
        nb--;
    if (nb > UINT32_MAX / W)
        nb = UINT32_MAX / W;
    if (nb == 0)
        return mm_errf(err, errlen, MM_E_INVALID,
                       "cache of %zu bytes cannot hold one bucket of %d slots of %zu bytes (max_dim %d)",
                       bytes, W, slot_bytes, max_dim);

    size_t total = hdr + ROUND(nb, 64) + nb * W * slot_bytes;
    void *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return mm_errf(err, errlen, MM_E_NOMEM, "cache: mmap of %zu bytes: %s", total, strerror(errno));

    mm_cache_t *c = p; /* the mapping is zeroed: every slot is free, generation 0 */
    c->magic = CACHE_MAGIC;
    c->map_bytes = total;
    c->hands_off = hdr;
    c->slots_off = hdr + ROUND(nb, 64);
    c->nbuckets = (uint32_t)nb;
    c->nslots = (uint32_t)(nb * W);
    c->slot_bytes = (uint32_t)slot_bytes;
    c->max_dim = (uint32_t)max_dim;
    if (fill_random(c->secret, sizeof(c->secret)) < 0 || fill_random(&c->seed64, sizeof(c->seed64)) < 0) {
        int e = errno;
        munmap(p, total);
        return mm_errf(err, errlen, MM_ERR, "cache: getrandom: %s", strerror(e));
    }
    __atomic_store_n(&c->gen, 1, __ATOMIC_RELEASE);
    pthread_once(&atfork_once, register_atfork);
    *out = c;
    return MM_OK;
}

void mm_cache_destroy(mm_cache_t *c)
{
    if (c)
        munmap(c, c->map_bytes);
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */
/* ------------------------------------------------------------------ */

void mm_cache_key_init(mm_cache_key_t *k, const mm_cache_t *c)
{
    k->len = 0;
    k->overflow = 0;
    k->cache = c;
    k->gen = 0;
    if (!c)
        return; /* disabled: skip the work */
    memset(k->bytes, 0, sizeof(k->bytes));
    k->gen = __atomic_load_n(&c->gen, __ATOMIC_ACQUIRE);
}

/* Append tag, then hn header bytes, then n payload bytes; all or nothing. */
static int key_append(mm_cache_key_t *k, uint8_t tag, const uint8_t *hd, size_t hn, const void *p,
                      size_t n)
{
    if (!k->cache)
        return MM_OK;
    if (k->overflow || n > MM_CACHE_KEY_MAX || 1 + hn + n > MM_CACHE_KEY_MAX - k->len) {
        k->overflow = 1;
        return MM_E_TOOBIG;
    }
    uint8_t *d = k->bytes + k->len;
    *d++ = tag;
    if (hn)
        memcpy(d, hd, hn);
    if (n)
        memcpy(d + hn, p, n);
    k->len += (uint32_t)(1 + hn + n);
    return MM_OK;
}

static void put_le(uint8_t *d, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        d[i] = (uint8_t)(v >> (8 * i));
}

int mm_cache_key_add(mm_cache_key_t *k, const void *p, size_t n)
{
    uint8_t hd[4];
    put_le(hd, n, 4);
    return key_append(k, 'B', hd, 4, p, n);
}

int mm_cache_key_add_str(mm_cache_key_t *k, const char *s)
{
    size_t n = strlen(s);
    uint8_t hd[4];
    put_le(hd, n, 4);
    return key_append(k, 'S', hd, 4, s, n);
}

int mm_cache_key_add_int(mm_cache_key_t *k, int64_t v)
{
    uint8_t b[8];
    put_le(b, (uint64_t)v, 8);
    return key_append(k, 'I', NULL, 0, b, 8);
}

int mm_cache_key_add_input(mm_cache_key_t *k, const void *p, size_t n)
{
    if (!k->cache)
        return MM_OK;
    if (n <= MM_CACHE_INLINE_INPUT) {
        uint8_t hd[1] = {(uint8_t)n};
        return key_append(k, 'R', hd, 1, p, n);
    }
    const mm_cache_t *c = k->cache;
    XXH128_hash_t a = XXH3_128bits_withSecret(p, n, c->secret, SECRET_BYTES);
    uint64_t b = XXH64(p, n, c->seed64);
    uint8_t hd[8], h[24];
    put_le(hd, n, 8);
    put_le(h, a.low64, 8);
    put_le(h + 8, a.high64, 8);
    put_le(h + 16, b, 8);
    return key_append(k, 'H', hd, 8, h, sizeof(h));
}

/* ------------------------------------------------------------------ */
/* Get / put                                                           */
/* ------------------------------------------------------------------ */

int mm_cache_get(mm_cache_t *c, const mm_cache_key_t *k, float *out, int dim)
{
    if (dim < 1)
        return MM_E_INVALID;
    if (!c)
        return 0;
    if (k->cache != c)
        return MM_E_INVALID;
    if (k->overflow || (uint32_t)dim > c->max_dim) {
        ADD(&c->misses);
        return 0;
    }
    uint64_t h[2];
    key_hash(c, k, h);
    uint32_t first = bucket_first(c, h[0]);
    uint32_t gen = __atomic_load_n(&c->gen, __ATOMIC_ACQUIRE);

    /* A slot rewritten while we copied it is retried a few times; it is
     * usually being replaced by another key, so give up quickly. */
    for (int tries = 0; tries < 3; tries++) {
        int torn = 0;
        for (uint32_t way = 0; way < W; way++) {
            slot_t *s = slot_at(c, first + way);
            uint64_t w1 = __atomic_load_n(&s->lock, __ATOMIC_ACQUIRE);
            if (w1 & 1)
                continue;
            if (!slot_matches(s, k, h, gen) || LD(&s->dim) != (uint32_t)dim)
                continue;
            copy_out(s, out, dim);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (LD(&s->lock) != w1) {
                torn = 1;
                continue;
            }
            if (!LD(&s->ref))
                ST(&s->ref, 1);
            ADD(&c->hits);
            return 1;
        }
        if (!torn)
            break;
    }
    ADD(&c->misses);
    return 0;
}

/* Pick a slot of the bucket for key k: the key's own slot if it holds
 * another dim; else a slot of an older generation; else one whose writer
 * died; else the CLOCK victim. Returns the way, or -1 if the key is already
 * present (*present = 1) or every slot is being written. *seen is the lock
 * word the claim must CAS from. */
static int pick_victim(mm_cache_t *c, uint32_t first, const mm_cache_key_t *k, const uint64_t h[2],
                       uint32_t gen, int dim, uint32_t me, uint64_t *seen, int *present)
{
    int free_way = -1, odd_ways[W], n_odd = 0;
    uint64_t free_w = 0, odd_w[W];

    for (int way = 0; way < W; way++) {
        slot_t *s = slot_at(c, first + (uint32_t)way);
        uint64_t w = __atomic_load_n(&s->lock, __ATOMIC_ACQUIRE);
        if (w & 1) {
            odd_ways[n_odd] = way;
            odd_w[n_odd++] = w;
            continue;
        }
        if (slot_matches(s, k, h, gen)) {
            if (LD(&s->dim) != (uint32_t)dim) {
                *seen = w;
                return way;
            }
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (LD(&s->lock) == w) {
                if (!LD(&s->ref))
                    ST(&s->ref, 1);
                *present = 1;
                return -1;
            }
            continue; /* rewritten under us: not a reliable answer */
        }
        if (free_way < 0 && LD(&s->gen) != gen) {
            free_way = way;
            free_w = w;
        }
    }
    if (free_way >= 0) {
        *seen = free_w;
        return free_way;
    }
    for (int i = 0; i < n_odd; i++) {
        if (owner_gone((uint32_t)(odd_w[i] >> 32), me)) {
            *seen = odd_w[i];
            return odd_ways[i];
        }
    }
    /* CLOCK: skip referenced entries, clearing their bit; two turns always
     * find one unless every slot is being written. */
    uint8_t *hand = (uint8_t *)c + c->hands_off + first / W;
    uint32_t start = LD(hand) % W;
    for (uint32_t i = 0; i < 2 * W; i++) {
        int way = (int)((start + i) % W);
        slot_t *s = slot_at(c, first + (uint32_t)way);
        uint64_t w = __atomic_load_n(&s->lock, __ATOMIC_ACQUIRE);
        if (w & 1)
            continue;
        if (LD(&s->ref)) {
            ST(&s->ref, 0);
            continue;
        }
        ST(hand, (uint8_t)((way + 1) % W));
        *seen = w;
        return way;
    }
    return -1;
}

int mm_cache_put(mm_cache_t *c, const mm_cache_key_t *k, const float *v, int dim)
{
    if (dim < 1)
        return MM_E_INVALID;
    if (!c)
        return MM_OK;
    if (k->cache != c || k->overflow)
        return MM_E_INVALID;
    if ((uint32_t)dim > c->max_dim)
        return MM_E_TOOBIG;
    uint32_t gen = k->gen;
    if (gen != __atomic_load_n(&c->gen, __ATOMIC_ACQUIRE))
        return MM_OK; /* computed before a clear: would be stale */

    uint64_t h[2];
    key_hash(c, k, h);
    uint32_t first = bucket_first(c, h[0]);
    uint32_t me = self_tid();

    /* A failed claim means another writer took that slot first: look again. */
    for (int attempt = 0; attempt < 4; attempt++) {
        uint64_t seen = 0;
        int present = 0;
        int way = pick_victim(c, first, k, h, gen, dim, me, &seen, &present);
        if (way < 0)
            return MM_OK;
        slot_t *s = slot_at(c, first + (uint32_t)way);
        uint32_t seq = (uint32_t)seen + ((seen & 1) ? 2 : 1); /* odd either way */
        uint64_t mine = make_lock(me, seq);
        uint64_t expect = seen;
        if (!__atomic_compare_exchange_n(&s->lock, &expect, mine, 0, __ATOMIC_ACQUIRE,
                                         __ATOMIC_RELAXED))
            continue;
        /* Ours now. Every store below must be ordered after the odd lock
         * word for readers that see any of them (see the top comment). */
        __atomic_thread_fence(__ATOMIC_RELEASE);
        if (seen & 1)
            ADD(&c->reclaims);
        else if (LD(&s->gen) == gen && !slot_matches(s, k, h, gen))
            ADD(&c->evictions);

        ST(&s->gen, gen);
        ST(&s->h0, h[0]);
        ST(&s->h1, h[1]);
        ST(&s->klen, k->len);
        ST(&s->dim, (uint32_t)dim);
        copy_in(s, k, v, dim);
        /* Unreferenced until its first hit, as in SIEVE: with the bit set on
         * insert, a stream of one-off keys would look as used as a hot key
         * and every full turn of the hand would evict blindly. */
        ST(&s->ref, (uint8_t)0);
#ifdef MM_TEST_HOOKS
        int pause_us = mm_cache_test_put_pause_us;
        if (pause_us < 0)
            raise(SIGKILL);
        if (pause_us > 0) {
            struct timespec ts = {pause_us / 1000000, (long)(pause_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
#endif
        __atomic_store_n(&s->lock, make_lock(me, seq + 1), __ATOMIC_RELEASE);
        ADD(&c->inserts);
        return MM_OK;
    }
    return MM_OK;
}

/* ------------------------------------------------------------------ */
/* Clear / stats                                                       */
/* ------------------------------------------------------------------ */

void mm_cache_clear(mm_cache_t *c)
{
    if (!c)
        return;
    /* 0 means "never written": skip it when the counter wraps. */
    if (__atomic_add_fetch(&c->gen, 1, __ATOMIC_ACQ_REL) == 0)
        __atomic_add_fetch(&c->gen, 1, __ATOMIC_ACQ_REL);
}

void mm_cache_stats(const mm_cache_t *c, mm_cache_stats_t *s)
{
    memset(s, 0, sizeof(*s));
    if (!c)
        return;
    s->hits = LD(&c->hits);
    s->misses = LD(&c->misses);
    s->inserts = LD(&c->inserts);
    s->evictions = LD(&c->evictions);
    s->reclaims = LD(&c->reclaims);
    s->slots = c->nslots;
    s->slot_bytes = c->slot_bytes;
    s->bytes = c->map_bytes;
    s->max_dim = (int)c->max_dim;
    s->generation = __atomic_load_n(&c->gen, __ATOMIC_ACQUIRE);
    for (uint32_t i = 0; i < c->nslots; i++) {
        slot_t *sl = slot_at(c, i);
        if (!(LD(&sl->lock) & 1) && LD(&sl->gen) == s->generation)
            s->used++;
    }
}
