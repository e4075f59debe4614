#include "mmembed/scoreboard.h"

#include <string.h>
#include <sys/mman.h>
#include <time.h>

static const int statuses[] = MM_SB_STATUSES;
static const double buckets[] = MM_SB_BUCKETS;
static const int batch_buckets[] = MM_SB_BATCH_BUCKETS;

_Static_assert(MM_ARRAY_LEN(statuses) + 1 == MM_SB_N_STATUS, "status list");
_Static_assert(MM_ARRAY_LEN(buckets) + 1 == MM_SB_N_BUCKETS, "bucket list");
_Static_assert(MM_ARRAY_LEN(batch_buckets) + 1 == MM_SB_N_BATCH_BUCKETS, "batch bucket list");

mm_scoreboard_t *mm_sb_create(void)
{
    void *p = mmap(NULL, sizeof(mm_scoreboard_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    memset(p, 0, sizeof(mm_scoreboard_t));
    return p;
}

int mm_sb_status_index(int status)
{
    for (int i = 0; i < (int)MM_ARRAY_LEN(statuses); i++)
        if (statuses[i] == status) return i;
    return MM_SB_N_STATUS - 1;
}

int mm_sb_bucket(double s)
{
    for (int i = 0; i < (int)MM_ARRAY_LEN(buckets); i++)
        if (s <= buckets[i]) return i;
    return MM_SB_N_BUCKETS - 1;
}

void mm_sb_record(mm_sb_slot_t *slot, int route, int status, double seconds)
{
    if (route < 0 || route >= MM_ROUTE_COUNT) route = MM_ROUTE_OTHER;
    __atomic_add_fetch(&slot->by_route_status[route][mm_sb_status_index(status)], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&slot->hist[mm_sb_bucket(seconds)], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&slot->requests, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&slot->duration_us_sum, (uint64_t)(seconds * 1e6), __ATOMIC_RELAXED);
    slot->last_status = status;
    slot->last_duration_us = (int64_t)(seconds * 1e6);
}

void mm_sb_record_batch(mm_sb_slot_t *slot, int n, const double *waits_s)
{
    int b = 0;
    while (b < (int)MM_ARRAY_LEN(batch_buckets) && n > batch_buckets[b]) b++;
    __atomic_add_fetch(&slot->batch_hist[b], 1, __ATOMIC_RELAXED);
    for (int i = 0; i < n; i++) {
        __atomic_add_fetch(&slot->qwait_hist[mm_sb_bucket(waits_s[i])], 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&slot->qwait_us_sum, (uint64_t)(waits_s[i] * 1e6), __ATOMIC_RELAXED);
    }
    slot->last_batch = n;
}

void mm_sb_retire(mm_scoreboard_t *sb, mm_sb_slot_t *s)
{
    sb->gone_requests += s->requests;
    sb->gone_rejected += s->rejected_busy;
    for (int r = 0; r < MM_ROUTE_COUNT; r++)
        for (int i = 0; i < MM_SB_N_STATUS; i++) sb->gone_by_route_status[r][i] += s->by_route_status[r][i];
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) sb->gone_hist[i] += s->hist[i];
    sb->gone_duration_us_sum += s->duration_us_sum;
    for (int i = 0; i < MM_SB_N_BATCH_BUCKETS; i++) sb->gone_batch_hist[i] += s->batch_hist[i];
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) sb->gone_qwait_hist[i] += s->qwait_hist[i];
    sb->gone_qwait_us_sum += s->qwait_us_sum;
    /* readers skip FREE slots; clear the rest after publishing FREE */
    __atomic_store_n(&s->state, MM_SLOT_FREE, __ATOMIC_RELEASE);
    s->pid = 0;
    memset((char *)s + offsetof(mm_sb_slot_t, heartbeat_us), 0, sizeof *s - offsetof(mm_sb_slot_t, heartbeat_us));
}

static int fp_equal(const char *a, const char *b)
{
    for (int i = 0; i < MM_SB_FP; i++) {
        if (a[i] != b[i]) return 0;
        if (!a[i]) return 1;
    }
    return 1;
}

int mm_sb_poison_find(const mm_scoreboard_t *sb, const char *fp)
{
    if (!fp || !fp[0]) return -1;
    int found = -1;
    for (int i = 0; i < MM_SB_POISON; i++) {
        const mm_sb_poison_t *p = &sb->poison[i];
        if (__atomic_load_n(&p->seq, __ATOMIC_ACQUIRE) == 0) continue;
        if (!fp_equal(p->fp, fp)) continue;
        if (!(p->cause & MM_POISON_SUSPECT)) return p->cause;
        found = p->cause;
    }
    return found;
}

int mm_sb_poison_mark(mm_scoreboard_t *sb, const char *fp, int cause)
{
    if (!fp || !fp[0]) return 0;
    int had = mm_sb_poison_find(sb, fp);
    /* a suspect may become real (it killed a worker alone); nothing else is marked twice */
    if (had >= 0 && ((cause & MM_POISON_SUSPECT) || !(had & MM_POISON_SUSPECT))) return 0;
    /* each mark number owns one ring entry: one writer per entry */
    uint32_t n = __atomic_fetch_add(&sb->poison_next, 1, __ATOMIC_RELAXED);
    mm_sb_poison_t *p = &sb->poison[n % MM_SB_POISON];
    __atomic_store_n(&p->seq, 0, __ATOMIC_RELEASE);
    int i = 0;
    for (; i < MM_SB_FP - 1 && fp[i]; i++) p->fp[i] = fp[i];   /* no libc: signal context */
    p->fp[i] = '\0';
    p->cause = cause;
    __atomic_store_n(&p->seq, n + 1 ? n + 1 : 1, __ATOMIC_RELEASE);
    if (!(cause & MM_POISON_SUSPECT)) __atomic_add_fetch(&sb->poison_marked, 1, __ATOMIC_RELAXED);
    return 1;
}

int mm_sb_poison_mark_running(mm_scoreboard_t *sb, const mm_sb_slot_t *s, int cause)
{
    int n = s->batch_n;
    if (n <= 1) return mm_sb_poison_mark(sb, s->req_fp, cause);
    if (n > MM_SB_BATCH) n = MM_SB_BATCH;
    int added = 0;
    for (int i = 0; i < n; i++) added += mm_sb_poison_mark(sb, s->batch_fp[i], cause | MM_POISON_SUSPECT);
    return added;
}

