/* bench_model — times CLIP forward passes and checks that forked workers
 * share the weight pack.
 *
 *   usage: bench_model MODEL_DIR [SECONDS_PER_CASE]
 *   e.g.   build/mkclip /tmp/clip-b32 tests/fixtures/clip/tokenizer/tokenizer.json
 *          build/bench_model /tmp/clip-b32
 *
 * Build (standalone, from the repository root; needs only the CLIP engine's
 * sources, or link build/libmmembed.a and the Makefile's LDLIBS instead):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -march=x86-64-v3 -Iinclude \
 *      $(pkg-config --cflags json-c) -o build/bench_model tools/bench_model.c src/common.c \
 *      src/nn/act.c src/nn/attention.c src/nn/matmul.c src/nn/norm.c src/nn/pool.c \
 *      src/model/clip.c src/model/safetensors.c src/model/weights.c \
 *      $(pkg-config --libs json-c) -lm -lpthread
 *
 * Prints load time, pack size, then ms per image (batch 1 and 8) and per
 * text (16 and 77 tokens, batch 1 and 32) for 1 and 2 threads, then
 * the Pss of the pack in two forked workers. */
#include "mmembed/common.h"
#include "mmembed/model.h"
#include "mmembed/nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct {
    mm_runner_t *r;
    int n, len;        /* text: n sequences of len ids; image: n images */
    int32_t **ids;
    int *lens;
    const float *pixels;
    float *out;
} job_t;

static int run_job(job_t *j)
{
    if (j->ids)
        return mm_model_encode_text(j->r, (const int32_t *const *)j->ids, j->lens, j->n, j->out);
    return mm_model_encode_image(j->r, j->pixels, j->n, j->out);
}

/* ms per item: warm up once, then repeat for at least `secs` (>= 3 runs) */
static double time_job(job_t *j, double secs)
{
    if (run_job(j))
        return -1;
    int runs = 0;
    double t0 = now(), t;
    do {
        run_job(j);
        runs++;
        t = now() - t0;
    } while (t < secs || runs < 3);
    return t * 1e3 / runs / j->n;
}

/* Pss_Shmem of this process in kB (the pack is the only big shmem here) */
static long pss_shmem_kb(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss_Shmem: %ld kB", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_model MODEL_DIR [SECONDS_PER_CASE]\n");
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 2.0;
    char err[MM_ERRLEN];
    mm_model_t *m;
    double t0 = now();
    int rc = mm_model_load(argv[1], &m, err, sizeof err);
    if (rc) {
        fprintf(stderr, "bench_model: %s\n", err);
        return 1;
    }
    const mm_model_info_t *info = mm_model_info(m);
    printf("model %s: load %.0f ms, pack %.1f MB (source %s), dim %d, GEMM oneDNN\n", info->name,
           (now() - t0) * 1e3, mm_model_weight_bytes(m) / 1e6, info->dtype, info->dim);

    const int S = info->image_size, C = info->channels, D = info->dim;
    const size_t per = (size_t)C * S * S;
    float *pixels = malloc(per * 8 * sizeof(float)), *out = malloc(sizeof(float) * D * 32);
    srand(1);
    for (size_t i = 0; i < per * 8; i++)
        pixels[i] = (float)rand() / RAND_MAX * 4.0f - 2.0f;
    int32_t *ids[32];
    int lens16[32], lens77[32];
    for (int s = 0; s < 32; s++) {
        ids[s] = malloc(sizeof(int32_t) * 77);
        ids[s][0] = 49406; /* <|startoftext|> */
        for (int i = 1; i < 77; i++)
            ids[s][i] = rand() % 49406;
        lens16[s] = 16;
        lens77[s] = 77;
    }
    /* <|endoftext|> at the end of each length used */
    int32_t *ids16[32];
    for (int s = 0; s < 32; s++) {
        ids16[s] = malloc(sizeof(int32_t) * 16);
        memcpy(ids16[s], ids[s], sizeof(int32_t) * 15);
        ids16[s][15] = 49407;
        ids[s][76] = 49407;
    }

    printf("%-26s %10s %10s\n", "ms per item", "1 thread", "2 threads");
    struct {
        const char *label;
        int n, len;
    } cases[] = {
        {"image, batch 1", 1, 0}, {"image, batch 8", 8, 0},
        {"text 16 tok, batch 1", 1, 16}, {"text 16 tok, batch 32", 32, 16},
        {"text 77 tok, batch 1", 1, 77}, {"text 77 tok, batch 32", 32, 77},
    };
    double res[6][2];
    for (int th = 1; th <= 2; th++) {
        mm_runner_t *r = mm_runner_new(m, 32, 8, th);
        if (!r) {
            fprintf(stderr, "bench_model: runner: out of memory\n");
            return 1;
        }
        for (size_t c = 0; c < 6; c++) {
            job_t j = {.r = r, .n = cases[c].n, .len = cases[c].len, .pixels = pixels, .out = out};
            if (cases[c].len) {
                j.ids = cases[c].len == 16 ? ids16 : ids;
                j.lens = cases[c].len == 16 ? lens16 : lens77;
            }
            res[c][th - 1] = time_job(&j, secs);
        }
        mm_runner_free(r);
    }
    for (size_t c = 0; c < 6; c++)
        printf("%-26s %10.2f %10.2f\n", cases[c].label, res[c][0], res[c][1]);

    /* two forked workers, each runs one image and one text: the pack's Pss
     * splits between the processes that touched a page */
    long parent_before = pss_shmem_kb();
    int gate[2]; /* children block on it until the master has measured */
    pid_t pids[2];
    if (pipe(gate) < 0)
        return 1;
    for (int w = 0; w < 2; w++) {
        fflush(NULL);
        pids[w] = fork();
        if (pids[w] == 0) {
            close(gate[1]);
            mm_runner_t *r = mm_runner_new(m, 1, 1, 1);
            mm_model_encode_image(r, pixels, 1, out);
            mm_model_encode_text(r, (const int32_t *const *)ids, lens77, 1, out);
            printf("worker %d: Pss_Shmem %ld kB (pack %zu kB)\n", w, pss_shmem_kb(),
                   mm_model_weight_bytes(m) / 1024);
            fflush(stdout);
            char c;
            if (read(gate[0], &c, 1) < 0)
                _exit(1);
            _exit(0);
        }
    }
    sleep(2);
    printf("master: Pss_Shmem %ld kB before fork, %ld kB with 2 workers\n", parent_before, pss_shmem_kb());
    fflush(stdout);
    close(gate[1]);
    for (int w = 0; w < 2; w++)
        waitpid(pids[w], NULL, 0);
    for (int s = 0; s < 32; s++) {
        free(ids[s]);
        free(ids16[s]);
    }
    free(pixels);
    free(out);
    mm_model_free(m);
    return 0;
}
