/* use_bench — the mmembed side of tools/bench/bench_use.sh: times
 * mm_use_embed (include/mmembed/use.h) on fixed English sentences, text in
 * -> 512-d unit vectors out. TOKENIZATION IS INCLUDED in our time (the API
 * takes texts); ORT gets the very ids mm_use_tokenize gives for the same
 * sentences, so its time has no tokenizer in it.
 *
 *   usage: use_bench MODEL_DIR WORK_DIR --serve
 *
 * Threads: mm_use_embed runs single-threaded (its matmuls are
 * single-threaded oneDNN calls; concurrent calls on one model are safe).
 * "threads N" here means the batch is split into N contiguous shards, each
 * embedded by its own persistent thread (the calling thread is one of them)
 * with mm_use_embed; batch 1 with N > 1 therefore runs on one thread.
 *
 * Writes into WORK_DIR (little-endian, raw):
 *   lens.i32       NSENT token counts
 *   ids.i32        the NSENT sentences' ids, packed back to back
 *   check_out.f32  our vectors for all NSENT sentences (one mm_use_embed call)
 *   meta.txt       "dim 512", "nsent 32"
 * Then prints "READY WORK_DIR tokens MIN..MAX mean M" and answers
 * "run CASE THREADS K" (CASE b1 = sentence 0, b32 = all 32) with
 * "TIMES CASE THREADS w1/c1 .. wK/cK" (wall ms / process CPU ms per batch);
 * "quit" or EOF stops it. */
#include "mmembed/use.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_NAME "use_bench"
#include "bench_util.h"

enum { NSENT = 32, MAX_THREADS = 16, MAX_TOK = 128 };

static const char *const sentences[NSENT] = {
    "The quick brown fox jumps over the lazy dog near the old river bank today.",
    "Scientists have discovered a new species of frog in the rainforests of Peru.",
    "Please remember to bring your umbrella because it might rain this afternoon.",
    "The stock market closed higher on Friday after a week of strong earnings.",
    "My grandmother bakes the most delicious apple pie every Sunday for the family.",
    "Learning a new language takes patience, practice and a lot of curiosity.",
    "The city council voted to build a new public library downtown next year.",
    "He forgot his keys at the office and had to wait outside for an hour.",
    "Electric cars are becoming more affordable as battery prices keep falling.",
    "The museum will host a special exhibition of modern art this coming spring.",
    "She runs five kilometers every morning before going to work at the hospital.",
    "Our flight was delayed by three hours because of a heavy snow storm.",
    "The teacher asked the students to write a short essay about their summer.",
    "A good night of sleep is important for both your memory and your mood.",
    "The restaurant on the corner serves excellent pasta and fresh seafood dishes.",
    "Researchers are training robots to help farmers harvest fruit more efficiently.",
    "The concert was cancelled at the last minute due to technical problems.",
    "They spent the weekend hiking in the mountains and camping under the stars.",
    "Drinking enough water during the day helps you stay focused and healthy.",
    "The new smartphone has a larger screen and a much longer battery life.",
    "Our team finally finished the project two days before the official deadline.",
    "The children built a large sandcastle on the beach during their vacation.",
    "Many people prefer working from home because it saves time on commuting.",
    "The bakery down the street opens at six in the morning every single day.",
    "Heavy traffic on the highway made everyone late for the morning meeting.",
    "The library offers free classes on computer skills for adults and seniors.",
    "A small earthquake shook the coastal town early on Tuesday morning.",
    "He plays the guitar in a local band that performs at weekend festivals.",
    "Fresh vegetables from the farmers market taste much better than frozen ones.",
    "The government announced new measures to reduce air pollution in large cities.",
    "Watching the sunset over the ocean is one of my favorite ways to relax.",
    "The software update fixed several bugs and improved the overall performance.",
};

typedef struct {
    const char *name;
    int n;
} bench_case_t;
static const bench_case_t cases[] = {{"b1", 1}, {"b32", 32}};
#define NCASES (sizeof cases / sizeof cases[0])

static const mm_use_t *model;
static size_t slens[NSENT];
static float *out;
static int dim;

/* embed sentences [lo, hi) into out */
static int embed_range(int lo, int hi)
{
    char err[256] = "";
    if (hi <= lo)
        return 0;
    int rc = mm_use_embed(model, sentences + lo, slens + lo, hi - lo, out + (size_t)lo * dim, err, sizeof err);
    if (rc)
        fprintf(stderr, "use_bench: mm_use_embed: %d %s\n", rc, err);
    return rc;
}

/* ---- persistent helper threads: helper i embeds shard i+1 of the batch ---- */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv_go = PTHREAD_COND_INITIALIZER, cv_done = PTHREAD_COND_INITIALIZER;
static unsigned long gen;
static int job_n, job_shards, pending, failed, n_helpers;

static void shard(int s, int shards, int n, int *lo, int *hi)
{
    *lo = (int)((long)n * s / shards);
    *hi = (int)((long)n * (s + 1) / shards);
}

static void *helper(void *arg)
{
    int idx = (int)(intptr_t)arg; /* shard idx (>= 1) */
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (gen == seen)
            pthread_cond_wait(&cv_go, &mu);
        seen = gen;
        int n = job_n, shards = job_shards;
        pthread_mutex_unlock(&mu);
        int rc = 0;
        if (idx < shards) {
            int lo, hi;
            shard(idx, shards, n, &lo, &hi);
            rc = embed_range(lo, hi);
        }
        pthread_mutex_lock(&mu);
        if (rc)
            failed = 1;
        if (--pending == 0)
            pthread_cond_signal(&cv_done);
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static int ensure_helpers(int k)
{
    while (n_helpers < k) {
        pthread_t t;
        if (pthread_create(&t, NULL, helper, (void *)(intptr_t)(n_helpers + 1)))
            return -1;
        pthread_detach(t);
        n_helpers++;
    }
    return 0;
}

static int embed_batch(int n, int threads)
{
    int shards = threads < n ? threads : n;
    if (shards <= 1)
        return embed_range(0, n);
    pthread_mutex_lock(&mu);
    job_n = n;
    job_shards = shards;
    pending = n_helpers;
    failed = 0;
    gen++;
    pthread_cond_broadcast(&cv_go);
    pthread_mutex_unlock(&mu);
    int lo, hi;
    shard(0, shards, n, &lo, &hi);
    int rc = embed_range(lo, hi);
    pthread_mutex_lock(&mu);
    while (pending)
        pthread_cond_wait(&cv_done, &mu);
    rc = rc || failed;
    pthread_mutex_unlock(&mu);
    return rc;
}

static double last_cpu_ms;

static double run_case(const bench_case_t *bc, int threads)
{
    double ca = clk(CLOCK_PROCESS_CPUTIME_ID), a = clk(CLOCK_MONOTONIC);
    int rc = embed_batch(bc->n, threads);
    double b = clk(CLOCK_MONOTONIC);
    last_cpu_ms = (clk(CLOCK_PROCESS_CPUTIME_ID) - ca) * 1e3;
    return rc ? -1 : (b - a) * 1e3;
}

static int serve_loop(void)
{
    char line[256], name[64];
    int warmed[NCASES][MAX_THREADS + 1];
    memset(warmed, 0, sizeof warmed);
    while (fgets(line, sizeof line, stdin)) {
        int th, k;
        if (!strncmp(line, "quit", 4))
            break;
        if (sscanf(line, "run %63s %d %d", name, &th, &k) != 3 || th < 1 || th > MAX_THREADS || k < 1) {
            printf("ERROR bad request\n");
            fflush(stdout);
            continue;
        }
        size_t c = 0;
        while (c < NCASES && strcmp(cases[c].name, name))
            c++;
        if (c == NCASES) {
            printf("ERROR unknown case %s\n", name);
            fflush(stdout);
            continue;
        }
        /* helpers persist, so their per-thread scratch stays warm */
        if (ensure_helpers(th - 1)) {
            fprintf(stderr, "use_bench: pthread_create failed\n");
            return -1;
        }
        if (!warmed[c][th]) {
            if (run_case(&cases[c], th) < 0)
                return -1;
            warmed[c][th] = 1;
        }
        printf("TIMES %s %d", name, th);
        for (int i = 0; i < k; i++) {
            double ms = run_case(&cases[c], th);
            if (ms < 0)
                return -1;
            printf(" %.3f/%.3f", ms, last_cpu_ms);
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[3], "--serve")) {
        fprintf(stderr, "usage: use_bench MODEL_DIR WORK_DIR --serve\n");
        return 2;
    }
    const char *dir = argv[1], *work = argv[2];
    char err[512] = "";
    mm_use_t *m = NULL;
    int rc = mm_use_load(dir, &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "use_bench: load %s: %d %s\n", dir, rc, err);
        return 1;
    }
    model = m;
    dim = mm_use_dim(m);
    out = malloc(sizeof(float) * (size_t)NSENT * dim);
    int32_t *ids = malloc(sizeof(int32_t) * NSENT * MAX_TOK), lens[NSENT];
    if (!out || !ids)
        return 1;
    int total = 0, mn = 1 << 30, mx = 0;
    for (int i = 0; i < NSENT; i++) {
        int n = 0;
        slens[i] = strlen(sentences[i]);
        if ((rc = mm_use_tokenize(m, sentences[i], slens[i], ids + total, MAX_TOK, &n, err, sizeof err))) {
            fprintf(stderr, "use_bench: tokenize: %d %s\n", rc, err);
            return 1;
        }
        lens[i] = n;
        total += n;
        mn = n < mn ? n : mn;
        mx = n > mx ? n : mx;
    }
    if (embed_range(0, NSENT))
        return 1;
    char meta[64];
    int ml = snprintf(meta, sizeof meta, "dim %d\nnsent %d\n", dim, NSENT);
    if (write_file(work, "lens.i32", lens, sizeof lens) || write_file(work, "ids.i32", ids, sizeof(int32_t) * total) ||
        write_file(work, "check_out.f32", out, sizeof(float) * (size_t)NSENT * dim) ||
        write_file(work, "meta.txt", meta, (size_t)ml))
        return 1;
    printf("READY %s tokens %d..%d mean %.2f (b1 sentence: %d tokens)\n", work, mn, mx, (double)total / NSENT,
           lens[0]);
    fflush(stdout);
    rc = serve_loop();
    free(ids);
    free(out);
    mm_use_free(m);
    return rc ? 1 : 0;
}
