/* Scoreboard: poison marks for one request vs a batch (issue 17), and the
 * batch / queue-wait counters. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "mmembed/scoreboard.h"

static void set_batch(mm_sb_slot_t *s, const char *const *fps, int n)
{
    s->batch_n = n;
    snprintf(s->req_fp, sizeof s->req_fp, "%s", fps[0]);
    for (int i = 0; i < n; i++) snprintf(s->batch_fp[i], sizeof s->batch_fp[i], "%s", fps[i]);
}

int main(void)
{
    mm_scoreboard_t *sb = mm_sb_create();
    CHECK(sb != NULL, "mm_sb_create");
    if (!sb) return check_summary("test_scoreboard");
    mm_sb_slot_t *s = &sb->slots[0];

    /* one request: a real mark, refused on retry */
    const char *one[] = {"rid-one"};
    set_batch(s, one, 1);
    CHECK(mm_sb_poison_mark_running(sb, s, SIGSEGV) == 1, "one request marked");
    CHECK(mm_sb_poison_find(sb, "rid-one") == SIGSEGV, "real mark: %d", mm_sb_poison_find(sb, "rid-one"));
    CHECK(sb->poison_marked == 1, "counted");

    /* a batch: every member a suspect, none counted as poison */
    const char *three[] = {"rid-a", "rid-b", "rid-c"};
    set_batch(s, three, 3);
    CHECK(mm_sb_poison_mark_running(sb, s, MM_POISON_TIMEOUT) == 3, "three suspects");
    for (int i = 0; i < 3; i++)
        CHECK(mm_sb_poison_find(sb, three[i]) == (MM_POISON_TIMEOUT | MM_POISON_SUSPECT), "%s suspect: %d", three[i],
              mm_sb_poison_find(sb, three[i]));
    CHECK(sb->poison_marked == 1, "suspects are not poison: %llu", (unsigned long long)sb->poison_marked);
    /* marked again as a suspect: nothing added */
    CHECK(mm_sb_poison_mark_running(sb, s, SIGABRT) == 0, "no second suspect mark");

    /* rid-b retried alone and died alone: its mark becomes real and wins */
    const char *b[] = {"rid-b"};
    set_batch(s, b, 1);
    CHECK(mm_sb_poison_mark_running(sb, s, MM_POISON_TIMEOUT) == 1, "suspect upgraded");
    CHECK(mm_sb_poison_find(sb, "rid-b") == MM_POISON_TIMEOUT, "real wins: %d", mm_sb_poison_find(sb, "rid-b"));
    CHECK(mm_sb_poison_find(sb, "rid-a") == (MM_POISON_TIMEOUT | MM_POISON_SUSPECT), "others stay suspects");
    CHECK(mm_sb_poison_mark(sb, "rid-b", SIGSEGV) == 0, "a real mark is not marked twice");
    CHECK(mm_sb_poison_find(sb, "rid-none") == -1 && mm_sb_poison_find(sb, "") == -1, "unmarked");

    /* batch sizes and queue waits */
    double waits[5] = {0.0001, 0.002, 0.002, 0.3, 0.3};
    mm_sb_record_batch(s, 1, waits);
    mm_sb_record_batch(s, 5, waits);
    CHECK(s->batch_hist[0] == 1, "a pass of 1 in le=1");
    CHECK(s->batch_hist[3] == 1, "a pass of 5 in le=8");
    CHECK(s->last_batch == 5, "last batch");
    uint64_t nw = 0;
    for (int i = 0; i < MM_SB_N_BUCKETS; i++) nw += s->qwait_hist[i];
    CHECK(nw == 6, "six waits: %llu", (unsigned long long)nw);
    mm_sb_retire(sb, s);
    CHECK(sb->gone_batch_hist[3] == 1 && sb->gone_qwait_us_sum > 600000, "kept after retire");
    return check_summary("test_scoreboard");
}
