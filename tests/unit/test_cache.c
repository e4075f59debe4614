/* Unit tests for cache.c: exact hits, distinct keys, eviction, clear,
 * disabled cache, writers killed mid-write, and a multi-process stress test
 * that SIGKILLs workers while they hammer shared keys.
 *
 * Built with -DMM_TEST_HOOKS (make test-build / asan-build) it also forces
 * index-hash collisions and parks writers between writing and publishing so
 * kills land mid-write; without the hooks those parts are skipped.
 *
 *   test_cache           the tests (about 4 s)
 *   test_cache bench     latency and two-process throughput */
#include "mmembed/cache.h"
#include "mmembed/common.h"
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The vector of key `id`: arbitrary 32-bit patterns (NaNs, -0, denormals
 * included), so only a bit-exact copy compares equal. */
static void vec_for(int id, int dim, float *v)
{
    uint64_t s = (uint64_t)id * 1000003u + (uint64_t)dim;
    for (int i = 0; i < dim; i++) {
        uint32_t x = (uint32_t)splitmix(&s);
        memcpy(&v[i], &x, 4);
    }
}

/* Dimension of key `id` in the stress and eviction tests: 1..512, odd ones included. */
static int dim_for(int id)
{
    return 1 + (id * 37) % 512;
}

/* A request-like key: model, modality, options, then the input, long
 * (hashed) for even ids and short (inline) for odd ones. */
static void key_for(mm_cache_key_t *k, mm_cache_t *c, int id, int dim)
{
    char input[300];
    int n = snprintf(input, sizeof(input), "input %d", id);
    if (id % 2 == 0) {
        memset(input + n, 'x', sizeof(input) - (size_t)n);
        n = (int)sizeof(input);
    }
    mm_cache_key_init(k, c);
    mm_cache_key_add_str(k, "clip-vit-base-patch32");
    mm_cache_key_add_str(k, "text");
    mm_cache_key_add_int(k, dim);
    mm_cache_key_add_int(k, 1); /* normalize */
    mm_cache_key_add_input(k, input, (size_t)n);
}

static mm_cache_t *make(size_t bytes, int max_dim)
{
    mm_cache_t *c = NULL;
    char err[MM_ERRLEN] = "";
    int rc = mm_cache_create(&c, bytes, max_dim, err, sizeof(err));
    CHECK(rc == MM_OK && c, "create(%zu, %d) = %d: %s", bytes, max_dim, rc, err);
    return c;
}

/* Smallest cache with exactly one bucket of MM_CACHE_WAYS slots. */
static mm_cache_t *make_one_bucket(int max_dim)
{
    for (size_t bytes = 4096; bytes < (1 << 20); bytes += 256) {
        mm_cache_t *c = NULL;
        if (mm_cache_create(&c, bytes, max_dim, NULL, 0) == MM_OK) {
            mm_cache_stats_t st;
            mm_cache_stats(c, &st);
            CHECK(st.slots == MM_CACHE_WAYS, "one bucket has %llu slots", (unsigned long long)st.slots);
            return c;
        }
    }
    CHECK(0, "no size gives one bucket");
    exit(1);
}

/* get k and compare with the vector of id: 1 hit and equal, 0 miss, -1 wrong. */
static int get_check(mm_cache_t *c, const mm_cache_key_t *k, int id, int dim)
{
    float got[512], want[512];
    int r = mm_cache_get(c, k, got, dim);
    if (r != 1)
        return r;
    vec_for(id, dim, want);
    return memcmp(got, want, (size_t)dim * 4) == 0 ? 1 : -1;
}

static void put_id(mm_cache_t *c, const mm_cache_key_t *k, int id, int dim)
{
    float v[512];
    vec_for(id, dim, v);
    int rc = mm_cache_put(c, k, v, dim);
    CHECK(rc == MM_OK, "put id %d: %d", id, rc);
}

/* ------------------------------------------------------------------ */
/* Single-process tests                                                */
/* ------------------------------------------------------------------ */

static void test_basic(void)
{
    mm_cache_t *c = make(1 << 20, 512);
    mm_cache_key_t k;
    int dims[] = {512, 511, 1, 3};
    for (size_t i = 0; i < MM_ARRAY_LEN(dims); i++) {
        key_for(&k, c, (int)i, dims[i]);
        CHECK(get_check(c, &k, (int)i, dims[i]) == 0, "empty cache hit, dim %d", dims[i]);
        put_id(c, &k, (int)i, dims[i]);
        CHECK(get_check(c, &k, (int)i, dims[i]) == 1, "no bit-identical hit, dim %d", dims[i]);
    }
    /* asking with another dim is a miss, and so is an out-of-range one */
    float buf[600];
    key_for(&k, c, 0, 512);
    CHECK(mm_cache_get(c, &k, buf, 256) == 0, "hit with another dim");
    CHECK(mm_cache_get(c, &k, buf, 600) == 0, "hit past max_dim");
    CHECK(mm_cache_get(c, &k, buf, 0) == MM_E_INVALID, "dim 0 accepted");
    CHECK(mm_cache_put(c, &k, buf, 513) == MM_E_TOOBIG, "put past max_dim accepted");
    /* same key again, other dim: replaces the entry instead of adding one */
    put_id(c, &k, 0, 256);
    CHECK(get_check(c, &k, 0, 256) == 1, "rewrite with dim 256 lost");
    CHECK(get_check(c, &k, 0, 512) == 0, "old dim still served");
    /* putting a present key stores nothing new */
    mm_cache_stats_t st;
    mm_cache_stats(c, &st);
    uint64_t ins = st.inserts;
    put_id(c, &k, 0, 256);
    mm_cache_stats(c, &st);
    CHECK(st.inserts == ins, "duplicate put inserted");
    CHECK(st.used == 4, "used %llu, want 4", (unsigned long long)st.used);
    CHECK(st.hits == 5 && st.misses == 7, "hits %llu misses %llu", (unsigned long long)st.hits,
          (unsigned long long)st.misses);
    /* a key built for another cache is refused */
    mm_cache_t *other = make(1 << 20, 512);
    CHECK(mm_cache_get(other, &k, buf, 256) == MM_E_INVALID, "foreign key accepted");
    mm_cache_destroy(other);
    mm_cache_destroy(c);
}

/* Keys that differ in one option byte, one input byte, the input length or
 * only in where fields split never share an entry. */
static void test_distinct_keys(void)
{
    mm_cache_t *c = make(4 << 20, 64);
    enum { NK = 12 };
    mm_cache_key_t k[NK];
    uint8_t img[5000];
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof(img); i++)
        img[i] = (uint8_t)splitmix(&s);

    for (int i = 0; i < NK; i++) {
        mm_cache_key_init(&k[i], c);
        mm_cache_key_add_str(&k[i], "clip");
    }
    mm_cache_key_add_str(&k[0], "image");
    mm_cache_key_add_input(&k[0], img, sizeof(img));
    mm_cache_key_add_str(&k[1], "imagf"); /* one option byte */
    mm_cache_key_add_input(&k[1], img, sizeof(img));
    mm_cache_key_add_str(&k[2], "image");
    img[4999] ^= 1; /* one input bit, last byte */
    mm_cache_key_add_input(&k[2], img, sizeof(img));
    img[4999] ^= 1;
    mm_cache_key_add_str(&k[3], "image");
    img[0] ^= 0x80; /* first byte */
    mm_cache_key_add_input(&k[3], img, sizeof(img));
    img[0] ^= 0x80;
    mm_cache_key_add_str(&k[4], "image");
    mm_cache_key_add_input(&k[4], img, sizeof(img) - 1); /* one byte shorter */
    mm_cache_key_add(&k[5], "ab", 2); /* field boundaries */
    mm_cache_key_add(&k[5], "c", 1);
    mm_cache_key_add(&k[6], "a", 1);
    mm_cache_key_add(&k[6], "bc", 2);
    mm_cache_key_add_input(&k[7], "hello world", 11); /* short, inline */
    mm_cache_key_add_input(&k[8], "hello worle", 11);
    mm_cache_key_add_int(&k[9], 512); /* option value */
    mm_cache_key_add_int(&k[10], 513);
    mm_cache_key_add_str(&k[11], "image"); /* same as 0 except the input goes through add() */
    mm_cache_key_add(&k[11], img, 200);

    for (int i = 0; i < NK; i++) {
        CHECK(!k[i].overflow, "key %d overflowed", i);
        for (int j = 0; j < i; j++)
            CHECK(k[i].len != k[j].len || memcmp(k[i].bytes, k[j].bytes, k[i].len) != 0,
                  "keys %d and %d have the same bytes", i, j);
        put_id(c, &k[i], 100 + i, 64);
    }
    for (int i = 0; i < NK; i++)
        CHECK(get_check(c, &k[i], 100 + i, 64) == 1, "key %d does not get its own vector", i);

    /* the same input builds the same key */
    mm_cache_key_t again;
    mm_cache_key_init(&again, c);
    mm_cache_key_add_str(&again, "clip");
    mm_cache_key_add_str(&again, "image");
    mm_cache_key_add_input(&again, img, sizeof(img));
    CHECK(get_check(c, &again, 100, 64) == 1, "rebuilt key misses");

    /* overflow: sticky, get misses, put refuses */
    mm_cache_key_t big;
    mm_cache_key_init(&big, c);
    CHECK(mm_cache_key_add(&big, img, 200) == MM_OK, "200 bytes refused");
    CHECK(mm_cache_key_add(&big, img, 100) == MM_E_TOOBIG, "overflow not reported");
    CHECK(mm_cache_key_add_int(&big, 1) == MM_E_TOOBIG, "overflow not sticky");
    float v[64] = {0};
    CHECK(mm_cache_get(c, &big, v, 64) == 0, "overflowed key hit");
    CHECK(mm_cache_put(c, &big, v, 64) == MM_E_INVALID, "overflowed key stored");
    mm_cache_destroy(c);
}

#ifdef MM_TEST_HOOKS
/* Every key lands in one of two buckets with the same stored hash: only
 * the full-key comparison keeps their vectors apart. */
static void test_hash_collisions(void)
{
    mm_cache_t *c = make(1 << 20, 512);
    mm_cache_test_weak_hash = 1;
    mm_cache_key_t k;
    int wrong = 0, hits = 0;
    for (int round = 0; round < 3; round++) {
        for (int id = 0; id < 200; id++) {
            key_for(&k, c, id, 64);
            put_id(c, &k, id, 64);
            wrong += get_check(c, &k, id, 64) < 0;
        }
        for (int id = 0; id < 200; id++) {
            key_for(&k, c, id, 64);
            int r = get_check(c, &k, id, 64);
            wrong += r < 0;
            hits += r == 1;
        }
    }
    mm_cache_test_weak_hash = 0;
    CHECK(wrong == 0, "%d wrong vectors under forced hash collisions", wrong);
    CHECK(hits > 0 && hits <= 3 * 2 * MM_CACHE_WAYS, "hits %d (2 buckets)", hits);
    mm_cache_destroy(c);
}
#endif

static void test_eviction(void)
{
    /* a small cache under many keys: evicts, never serves a wrong vector */
    mm_cache_t *c = make(64 << 10, 512);
    mm_cache_key_t k;
    mm_cache_stats_t st;
    mm_cache_stats(c, &st);
    int wrong = 0, hits = 0, n = 1000;
    for (int id = 0; id < n; id++) {
        key_for(&k, c, id, dim_for(id));
        put_id(c, &k, id, dim_for(id));
        CHECK(get_check(c, &k, id, dim_for(id)) == 1, "key %d gone right after its put", id);
    }
    for (int id = 0; id < n; id++) {
        key_for(&k, c, id, dim_for(id));
        int r = get_check(c, &k, id, dim_for(id));
        wrong += r < 0;
        hits += r == 1;
    }
    mm_cache_stats(c, &st);
    CHECK(wrong == 0, "%d wrong vectors", wrong);
    CHECK(st.inserts == (uint64_t)n, "inserts %llu", (unsigned long long)st.inserts);
    CHECK(st.evictions == (uint64_t)n - st.slots, "evictions %llu, slots %llu",
          (unsigned long long)st.evictions, (unsigned long long)st.slots);
    CHECK(st.used == st.slots && (uint64_t)hits == st.slots, "used %llu hits %d slots %llu",
          (unsigned long long)st.used, hits, (unsigned long long)st.slots);
    mm_cache_destroy(c);

    /* CLOCK in one bucket: a key read between insertions survives them */
    c = make_one_bucket(64);
    for (int id = 0; id < 8; id++) {
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
    }
    int lost = 0;
    for (int id = 8; id < 60; id++) {
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
        lost += get_check(c, &k, id, 64) != 1;
        key_for(&k, c, 1, 64);
        lost += get_check(c, &k, 1, 64) != 1;
    }
    mm_cache_stats(c, &st);
    CHECK(lost == 0, "%d lookups of hot or new keys missed", lost);
    CHECK(st.evictions == 52 && st.used == 8, "evictions %llu used %llu",
          (unsigned long long)st.evictions, (unsigned long long)st.used);
    mm_cache_destroy(c);

    /* scan resistance: 50 keys read between inserts survive 5000 one-off
     * keys streaming through ~900 slots (a bucket would need 8 of the 50) */
    c = make(512 << 10, 64);
    for (int id = 0; id < 50; id++) {
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
    }
    lost = 0;
    for (int id = 1000; id < 6000; id++) {
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
        for (int hot = 0; hot < 50; hot++) {
            key_for(&k, c, hot, 64);
            lost += get_check(c, &k, hot, 64) != 1;
        }
    }
    mm_cache_stats(c, &st);
    CHECK(lost == 0 && st.evictions + st.slots == 5050, "%d hot-key misses, %llu evictions", lost,
          (unsigned long long)st.evictions);
    mm_cache_destroy(c);
}

static void test_clear(void)
{
    mm_cache_t *c = make(1 << 20, 512);
    mm_cache_key_t k, before;
    mm_cache_stats_t st;
    for (int id = 0; id < 50; id++) {
        key_for(&k, c, id, 128);
        put_id(c, &k, id, 128);
    }
    key_for(&before, c, 1000, 128); /* built before the clear */
    mm_cache_clear(c);
    int hits = 0;
    for (int id = 0; id < 50; id++) {
        key_for(&k, c, id, 128);
        hits += get_check(c, &k, id, 128) != 0;
    }
    mm_cache_stats(c, &st);
    CHECK(hits == 0, "%d hits after clear", hits);
    CHECK(st.used == 0 && st.generation == 2, "used %llu gen %u", (unsigned long long)st.used,
          st.generation);
    put_id(c, &before, 1000, 128); /* computed before the clear: dropped */
    key_for(&k, c, 1000, 128);
    CHECK(get_check(c, &k, 1000, 128) == 0, "stale put stored after clear");
    put_id(c, &k, 1000, 128);
    CHECK(get_check(c, &k, 1000, 128) == 1, "put after clear lost");
    mm_cache_stats(c, &st);
    CHECK(st.used == 1 && st.evictions == 0, "used %llu evictions %llu", (unsigned long long)st.used,
          (unsigned long long)st.evictions);
    mm_cache_destroy(c);
}

static void test_disabled(void)
{
    mm_cache_t *c = (mm_cache_t *)1;
    CHECK(mm_cache_create(&c, 0, 512, NULL, 0) == MM_OK && c == NULL, "bytes 0 not disabled");
    mm_cache_key_t k;
    key_for(&k, c, 1, 16);
    float v[16] = {1};
    CHECK(mm_cache_put(c, &k, v, 16) == MM_OK, "put on disabled cache failed");
    CHECK(mm_cache_get(c, &k, v, 16) == 0, "disabled cache hit");
    mm_cache_clear(c);
    mm_cache_stats_t st;
    memset(&st, 0xff, sizeof(st));
    mm_cache_stats(c, &st);
    CHECK(st.hits == 0 && st.misses == 0 && st.slots == 0, "disabled stats not zero");
    mm_cache_destroy(c);

    char err[MM_ERRLEN] = "";
    CHECK(mm_cache_create(&c, 1 << 20, 0, err, sizeof(err)) == MM_E_INVALID, "max_dim 0 accepted");
    CHECK(mm_cache_create(&c, 8000, 4096, err, sizeof(err)) == MM_E_INVALID && c == NULL,
          "too small accepted");
    CHECK(strstr(err, "cannot hold") != NULL, "err: %s", err);
}

#ifdef MM_TEST_HOOKS
/* A writer killed between writing and publishing: its slot is never read,
 * and comes back once the owner is gone. A live slow writer keeps its slot. */
static void test_dead_writer(void)
{
    mm_cache_t *c = make_one_bucket(64);
    mm_cache_key_t k;
    mm_cache_stats_t st;

    pid_t pid = fork();
    if (pid == 0) {
        mm_cache_test_put_pause_us = -1; /* SIGKILL mid-put */
        key_for(&k, c, 999, 64);
        put_id(c, &k, 999, 64);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child did not die mid-put");
    key_for(&k, c, 999, 64);
    CHECK(get_check(c, &k, 999, 64) == 0, "half-written entry served");
    mm_cache_stats(c, &st);
    CHECK(st.used == 0, "used %llu", (unsigned long long)st.used);
    for (int id = 0; id < 8; id++) {
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
    }
    int hits = 0;
    for (int id = 0; id < 8; id++) {
        key_for(&k, c, id, 64);
        hits += get_check(c, &k, id, 64) == 1;
    }
    mm_cache_stats(c, &st);
    CHECK(hits == 8 && st.reclaims == 1 && st.evictions == 0, "hits %d reclaims %llu evictions %llu",
          hits, (unsigned long long)st.reclaims, (unsigned long long)st.evictions);

    /* A live writer parked inside put. No sleep guessing when it got there:
     * poll the shared state until its slot is claimed (one of the 8 valid
     * entries became an odd-locked slot: used 8 -> 7, nothing published),
     * then SIGSTOP it so the checks below run while it is certainly parked
     * however slow the machine, and SIGCONT it afterwards. */
    int fd[2];
    CHECK(pipe(fd) == 0, "pipe");
    mm_cache_stats(c, &st);
    const uint64_t inserts0 = st.inserts;
    pid = fork();
    if (pid == 0) {
        mm_cache_test_put_pause_us = 2000000;
        key_for(&k, c, 777, 64);
        if (write(fd[1], "x", 1) != 1)
            _exit(1);
        put_id(c, &k, 777, 64);
        _exit(0);
    }
    char b;
    CHECK(read(fd[0], &b, 1) == 1, "sync");
    for (double end = now_s() + 30; now_s() < end;) {
        mm_cache_stats(c, &st);
        if (st.used == 7)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGSTOP);
    mm_cache_stats(c, &st);
    CHECK(st.used == 7 && st.inserts == inserts0, "writer not parked in put: used %llu, inserts %llu -> %llu",
          (unsigned long long)st.used, (unsigned long long)inserts0, (unsigned long long)st.inserts);
    key_for(&k, c, 777, 64);
    CHECK(get_check(c, &k, 777, 64) == 0, "entry served while its writer is parked");
    for (int id = 100; id < 140; id++) { /* churn the bucket: must leave the parked slot alone */
        key_for(&k, c, id, 64);
        put_id(c, &k, id, 64);
    }
    mm_cache_stats(c, &st);
    CHECK(st.reclaims == 1 && st.used == 7, "live writer's slot taken: reclaims %llu used %llu",
          (unsigned long long)st.reclaims, (unsigned long long)st.used);
    kill(pid, SIGCONT);
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "parked child failed");
    key_for(&k, c, 777, 64);
    CHECK(get_check(c, &k, 777, 64) == 1, "parked writer's entry lost");
    close(fd[0]);
    close(fd[1]);
    mm_cache_destroy(c);
}
#endif

/* ------------------------------------------------------------------ */
/* Multi-process stress                                                */
/* ------------------------------------------------------------------ */

enum { N_CHILD = 4, N_KEYS = 300 };

typedef struct {
    uint64_t gets, hits, puts, wrong;
    volatile int in_put[N_CHILD]; /* child is inside mm_cache_put */
} stress_t;

static void stress_child(mm_cache_t *c, stress_t *sh, int idx, uint64_t seed)
{
#ifdef MM_TEST_HOOKS
    /* half the children dawdle inside every put so kills land mid-write */
    mm_cache_test_put_pause_us = (idx % 2) ? 300 : 0;
#endif
    mm_cache_key_t k;
    float v[512], want[512];
    uint64_t gets = 0, hits = 0, puts = 0;
    for (uint64_t it = 1;; it++) {
        int id = (int)(splitmix(&seed) % N_KEYS), dim = dim_for(id);
        key_for(&k, c, id, dim);
        if (splitmix(&seed) % 3 == 0) {
            vec_for(id, dim, v);
            sh->in_put[idx] = 1;
            mm_cache_put(c, &k, v, dim);
            sh->in_put[idx] = 0;
            puts++;
        } else {
            gets++;
            if (mm_cache_get(c, &k, v, dim) == 1) {
                hits++;
                vec_for(id, dim, want);
                if (memcmp(v, want, (size_t)dim * 4) != 0)
                    __atomic_fetch_add(&sh->wrong, 1, __ATOMIC_RELAXED);
            }
        }
        if (it % 512 == 0) {
            __atomic_fetch_add(&sh->gets, gets, __ATOMIC_RELAXED);
            __atomic_fetch_add(&sh->hits, hits, __ATOMIC_RELAXED);
            __atomic_fetch_add(&sh->puts, puts, __ATOMIC_RELAXED);
            gets = hits = puts = 0;
        }
    }
}

static pid_t spawn(mm_cache_t *c, stress_t *sh, int idx, uint64_t seed)
{
    pid_t pid = fork();
    if (pid == 0) {
        stress_child(c, sh, idx, seed);
        _exit(0);
    }
    return pid;
}

static void test_stress(void)
{
    /* ~100 slots for 300 keys of up to 512 floats: constant eviction */
    mm_cache_t *c = make(256 << 10, 512);
    stress_t *sh = mmap(NULL, sizeof(stress_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED, "mmap");
    if (sh == MAP_FAILED)
        return;
    memset(sh, 0, sizeof(*sh));
    uint64_t seed = 12345;
    pid_t kids[N_CHILD];
    for (int i = 0; i < N_CHILD; i++)
        kids[i] = spawn(c, sh, i, splitmix(&seed));

    /* Rounds end on observed progress, not on the clock: each kill comes
     * after the children made another 500 gets (so a loaded or sanitized
     * run does the same work, only slower); at least 30 kills, and with the
     * hooks until one landed inside a put (half the children dawdle there). */
    int kills = 0, mid_put = 0;
    const double deadline = now_s() + 120;
    for (;;) {
#ifdef MM_TEST_HOOKS
        const int enough = kills >= 30 && mid_put > 0;
#else
        const int enough = kills >= 30;
#endif
        if (enough || kills >= 1000 || now_s() > deadline)
            break;
        const uint64_t g0 = __atomic_load_n(&sh->gets, __ATOMIC_RELAXED);
        while (__atomic_load_n(&sh->gets, __ATOMIC_RELAXED) < g0 + 500 && now_s() < deadline) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        int i = (int)(splitmix(&seed) % N_CHILD);
        mid_put += sh->in_put[i];
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
        sh->in_put[i] = 0;
        kills++;
        kids[i] = spawn(c, sh, i, splitmix(&seed));
    }
    for (int i = 0; i < N_CHILD; i++) {
        kill(kids[i], SIGKILL);
        waitpid(kids[i], NULL, 0);
    }

    /* after the storm: whatever is cached is still exact, and every slot
     * left odd by a dead writer can be taken back */
    mm_cache_key_t k;
    int wrong_after = 0;
    for (int round = 0; round < 4; round++)
        for (int id = 0; id < N_KEYS; id++) {
            key_for(&k, c, id, dim_for(id));
            if (round % 2)
                put_id(c, &k, id, dim_for(id));
            else
                wrong_after += get_check(c, &k, id, dim_for(id)) < 0;
        }
    mm_cache_stats_t st;
    mm_cache_stats(c, &st);
    printf("stress: %d processes, %llu gets, %llu hits, %llu puts, %d kills (%d inside put), "
           "%llu inserts, %llu evictions, %llu reclaimed slots, used %llu/%llu, wrong/torn %llu\n",
           N_CHILD, (unsigned long long)sh->gets, (unsigned long long)sh->hits,
           (unsigned long long)sh->puts, kills, mid_put, (unsigned long long)st.inserts,
           (unsigned long long)st.evictions, (unsigned long long)st.reclaims,
           (unsigned long long)st.used, (unsigned long long)st.slots, (unsigned long long)sh->wrong);
    CHECK(sh->wrong == 0 && wrong_after == 0, "%llu wrong vectors during, %d after",
          (unsigned long long)sh->wrong, wrong_after);
    CHECK(sh->hits > 0 && kills >= 30, "hits %llu kills %d (no progress within 120 s?)", (unsigned long long)sh->hits,
          kills);
    CHECK(st.used == st.slots, "after refilling, used %llu of %llu slots (stuck slots?)",
          (unsigned long long)st.used, (unsigned long long)st.slots);
#ifdef MM_TEST_HOOKS
    CHECK(mid_put > 0 && st.reclaims > 0, "no mid-write kill reclaimed (mid_put %d)", mid_put);
#endif
    munmap(sh, sizeof(*sh));
    mm_cache_destroy(c);
}

/* ------------------------------------------------------------------ */
/* Benchmarks                                                          */
/* ------------------------------------------------------------------ */

/* ns per call of mm_cache_get over the first nk keys, all present. */
static double bench_get(mm_cache_t *c, mm_cache_key_t *keys, int nk, int dim, long iters)
{
    float out[4096];
    long hits = 0;
    double t0 = now_s();
    for (long i = 0; i < iters; i++)
        hits += mm_cache_get(c, &keys[i % nk], out, dim);
    double ns = (now_s() - t0) * 1e9 / (double)iters;
    CHECK(hits == iters, "bench: %ld of %ld hits", hits, iters);
    return ns;
}

static void bench(void)
{
    enum { DIM = 512, NK = 4096 };
    static mm_cache_key_t keys[NK];
    static float v[4096];
    vec_for(1, 4096, v);
    mm_cache_t *c = make(64 << 20, DIM);
    mm_cache_stats_t st;
    mm_cache_stats(c, &st);
    printf("bench: 64 MB cache, max_dim %d: %llu slots of %llu bytes\n", DIM,
           (unsigned long long)st.slots, (unsigned long long)st.slot_bytes);

    double t0 = now_s();
    for (int i = 0; i < NK; i++)
        key_for(&keys[i], c, i, DIM);
    printf("bench: key build (model, modality, 2 options, input of 8-300 bytes): %.0f ns\n",
           (now_s() - t0) * 1e9 / NK);
    uint8_t *img = calloc(1, 200 << 10);
    mm_cache_key_t ik;
    t0 = now_s();
    for (int i = 0; i < 200; i++) {
        mm_cache_key_init(&ik, c);
        mm_cache_key_add_str(&ik, "clip");
        mm_cache_key_add_input(&ik, img, 200 << 10);
    }
    printf("bench: key for a 200 KB image: %.1f us\n", (now_s() - t0) * 1e6 / 200);
    free(img);

    t0 = now_s();
    for (int i = 0; i < NK; i++)
        mm_cache_put(c, &keys[i], v, DIM);
    printf("bench: put 512-d into untouched memory (page faults included): %.0f ns\n",
           (now_s() - t0) * 1e9 / NK);
    mm_cache_clear(c);
    for (int i = 0; i < NK; i++)
        key_for(&keys[i], c, i, DIM);
    t0 = now_s();
    for (int i = 0; i < NK; i++)
        mm_cache_put(c, &keys[i], v, DIM);
    printf("bench: put 512-d into a free slot (memory touched before): %.0f ns\n",
           (now_s() - t0) * 1e9 / NK);
    printf("bench: get 512-d hit, 16 hot keys: %.0f ns\n", bench_get(c, keys, 16, DIM, 4000000));
    printf("bench: get 512-d hit, %d keys (10 MB, past L2): %.0f ns\n", NK,
           bench_get(c, keys, NK, DIM, 4000000));
    mm_cache_key_t miss;
    key_for(&miss, c, NK + 1, DIM);
    float out[DIM];
    t0 = now_s();
    for (long i = 0; i < 4000000; i++)
        mm_cache_get(c, &miss, out, DIM);
    printf("bench: get miss: %.0f ns\n", (now_s() - t0) * 1e9 / 4000000);
    t0 = now_s();
    for (long i = 0; i < 4000000; i++)
        mm_cache_put(c, &keys[i % 16], v, DIM);
    printf("bench: put of a present key (no-op): %.0f ns\n", (now_s() - t0) * 1e9 / 4000000);
    mm_cache_destroy(c);

    /* steady state: 4096 keys cycling through ~440 slots, every put evicts */
    c = make(1 << 20, DIM);
    for (int i = 0; i < NK; i++)
        key_for(&keys[i], c, i, DIM);
    long n = 1000000;
    t0 = now_s();
    for (long i = 0; i < n; i++)
        mm_cache_put(c, &keys[i % NK], v, DIM);
    printf("bench: put 512-d evicting (CLOCK): %.0f ns\n", (now_s() - t0) * 1e9 / (double)n);
    mm_cache_destroy(c);

    /* max_dim 4096 slots (16.7 KB), vectors of 4096 */
    c = make(64 << 20, 4096);
    for (int i = 0; i < 16; i++) {
        key_for(&keys[i], c, i, 4096);
        mm_cache_put(c, &keys[i], v, 4096);
    }
    printf("bench: get 4096-d hit, 16 hot keys: %.0f ns\n", bench_get(c, keys, 16, 4096, 1000000));
    mm_cache_destroy(c);

    /* two processes on one cache, keys pre-built, all present */
    c = make(64 << 20, DIM);
    for (int i = 0; i < NK; i++) {
        key_for(&keys[i], c, i, DIM);
        mm_cache_put(c, &keys[i], v, DIM);
    }
    for (int mode = 0; mode < 2; mode++) {
        uint64_t *ops = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        memset(ops, 0, 4096);
        double dur = 2.0;
        pid_t kids[2];
        for (int p = 0; p < 2; p++) {
            kids[p] = fork();
            if (kids[p] == 0) {
                uint64_t s = (uint64_t)p + 1, cnt = 0, hits = 0, fresh = 0;
                float o[DIM];
                double end = now_s() + dur;
                while (now_s() < end) {
                    for (int j = 0; j < 1000; j++) {
                        int i = (int)(splitmix(&s) % NK);
                        if (mode == 1 && i % 10 == 0) {
                            /* 10%: a new key (built, missed, put), like a request that computes */
                            mm_cache_key_t nk;
                            key_for(&nk, c, 1000000 * (p + 1) + (int)fresh++, DIM);
                            mm_cache_get(c, &nk, o, DIM);
                            mm_cache_put(c, &nk, v, DIM);
                        } else {
                            hits += mm_cache_get(c, &keys[i], o, DIM);
                        }
                    }
                    cnt += 1000;
                }
                ops[2 * p] = cnt;
                ops[2 * p + 1] = hits;
                _exit(0);
            }
        }
        for (int p = 0; p < 2; p++)
            waitpid(kids[p], NULL, 0);
        printf("bench: 2 processes, %s: %.2f M requests/s total (%.2f + %.2f), %.0f%% hits\n",
               mode ? "90% get hits / 10% new key (get miss + put)" : "get hits of 4096 keys",
               (double)(ops[0] + ops[2]) / dur / 1e6, (double)ops[0] / dur / 1e6,
               (double)ops[2] / dur / 1e6, 100.0 * (double)(ops[1] + ops[3]) / (double)(ops[0] + ops[2]));
        munmap(ops, 4096);
    }
    mm_cache_stats(c, &st);
    t0 = now_s();
    for (int i = 0; i < 100; i++)
        mm_cache_stats(c, &st);
    printf("bench: stats (scan of %llu slots): %.1f us\n", (unsigned long long)st.slots,
           (now_s() - t0) * 1e6 / 100);
    mm_cache_destroy(c);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return failures ? 1 : 0;
    }
    test_basic();
    test_distinct_keys();
#ifdef MM_TEST_HOOKS
    test_hash_collisions();
#else
    SKIP("forced hash collisions and mid-write kills (build without MM_TEST_HOOKS; build/test and build/asan run them)");
#endif
    test_eviction();
    test_clear();
    test_disabled();
#ifdef MM_TEST_HOOKS
    test_dead_writer();
#endif
    test_stress();
    return check_summary("test_cache");
}
