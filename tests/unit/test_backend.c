/* Unit tests for the backend seam (mmembed/backend.h): the CLIP forward
 * queued on the CPU backend gives the CPU forward's bits, in every dense
 * dtype this CPU runs, whatever the batch split; device names resolve.
 * The CUDA backend's numbers are checked on a GPU by tools/bench/gpu_clip.c.
 * Run from the repository root. */
#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/model.h"
#include "mmembed/nn.h"
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TINY "tests/fixtures/clip/clip-tiny"

static uint64_t rng = 0x2545f4914f6cdd1dull;

static uint32_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

static void test_open(void)
{
    char err[MM_ERRLEN];
    mm_backend_t *be;
    int rc = mm_backend_open("tpu", 1, NULL, &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && !be && strstr(err, "expected cpu"), "unknown device: %d %s", rc, err);
    rc = mm_backend_open("cuda:x", 1, NULL, &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "cuda:N"), "bad cuda index: %d %s", rc, err);
#ifndef MM_WITH_CUDA
    rc = mm_backend_open("cuda:0", 1, "f16", &be, err, sizeof err);
    CHECK(rc == MM_E_UNSUPPORTED && strstr(err, "GPU=1"), "cuda without the backend built: %d %s", rc, err);
#endif
    rc = mm_backend_open("cpu", 3, NULL, &be, err, sizeof err);
    CHECK(rc == MM_OK && be && !strcmp(be->ops->name, "cpu"), "cpu: %d %s", rc, err);
    mm_backend_close(be);
}

/* The tiny fixture model in dtype dt: CPU runner vs the backend forward on
 * the CPU backend, bit for bit (batch splits differ on purpose: results do
 * not depend on the batch). */
static void test_bitexact(mm_dtype_t dt)
{
    char err[MM_ERRLEN];
    mm_model_t *m;
    int rc = mm_model_load_as(TINY, dt, &m, err, sizeof err);
    CHECK(rc == MM_OK, "load %s: %s", mm_dtype_name(dt), err);
    if (rc)
        return;
    const mm_model_info_t *mi = mm_model_info(m);
    mm_backend_t *be;
    mm_model_dev_t *d = NULL;
    rc = mm_backend_open("cpu", 2, NULL, &be, err, sizeof err);
    if (rc == MM_OK)
        rc = mm_model_dev_new(m, be, &d, err, sizeof err);
    CHECK(rc == MM_OK, "dev model: %s", err);
    mm_runner_t *r = mm_runner_new(m, 8, 3, 2), *g = d ? mm_runner_new_dev(d, 3, 2) : NULL;
    CHECK(r && g, "runners");
    if (!r || !g)
        goto out;

    enum { NT = 11, NI = 5 };
    int32_t *ids[NT];
    int lens[NT];
    for (int i = 0; i < NT; i++) {
        lens[i] = i == NT - 1 ? mi->max_tokens : 2 + (int)(next() % 30);
        ids[i] = malloc(sizeof(int32_t) * (size_t)lens[i]);
        ids[i][0] = 49406;
        for (int j = 1; j < lens[i] - 1; j++)
            ids[i][j] = 256 + (int32_t)(next() % 40000);
        ids[i][lens[i] - 1] = 49407;
        if (i == 3 && lens[i] > 4)
            ids[i][lens[i] - 3] = 49407; /* pooled before the end: what the last block's causal keys see */
    }
    const size_t per = (size_t)mi->channels * mi->image_size * mi->image_size;
    float *pix = malloc(per * NI * sizeof(float));
    for (size_t i = 0; i < per * NI; i++)
        pix[i] = (float)((int)(next() % 4001) - 2000) / 1000.0f;
    const int D = mi->dim;
    float *a = calloc((size_t)(NT + NI) * D, sizeof(float)), *b = calloc((size_t)(NT + NI) * D, sizeof(float));

    rc = mm_model_encode_text(r, (const int32_t *const *)ids, lens, NT, a);
    rc |= mm_model_encode_text(g, (const int32_t *const *)ids, lens, NT, b);
    rc |= mm_model_encode_image(r, pix, NI, a + (size_t)NT * D);
    rc |= mm_model_encode_image(g, pix, NI, b + (size_t)NT * D);
    CHECK(rc == MM_OK, "encode %s: %d", mm_dtype_name(dt), rc);
    int text_same = !memcmp(a, b, (size_t)NT * D * sizeof(float));
    int image_same = !memcmp(a + (size_t)NT * D, b + (size_t)NT * D, (size_t)NI * D * sizeof(float));
    /* tolerance: none; the CPU backend runs the CPU path's kernels in its order */
    CHECK(text_same, "%s texts: the backend forward differs from the CPU forward", mm_dtype_name(dt));
    CHECK(image_same, "%s images: the backend forward differs from the CPU forward", mm_dtype_name(dt));
    printf("backend cpu, %s: texts %s, images %s\n", mm_dtype_name(dt), text_same ? "bit-exact" : "DIFFER",
           image_same ? "bit-exact" : "DIFFER");
    /* the vision tower's contracts hold on a dev runner too */
    CHECK(mm_model_encode_image(g, pix, -1, b) == MM_E_INVALID, "n < 0");
    int32_t bad = mi->vocab_size;
    int one = 1;
    const int32_t *bp = &bad;
    CHECK(mm_model_encode_text(g, &bp, &one, 1, b) == MM_E_INVALID, "id out of range");

    for (int i = 0; i < NT; i++)
        free(ids[i]);
    free(pix);
    free(a);
    free(b);
out:
    mm_runner_free(g);
    mm_runner_free(r);
    mm_model_dev_free(d);
    mm_backend_close(be);
    mm_model_free(m);
}

int main(void)
{
    test_open();
    for (int dt = 0; dt < MM_DT_COUNT; dt++) {
        if (!mm_nn_lin_supported((mm_dtype_t)dt)) {
            SKIP("%s: not supported on this CPU", mm_dtype_name((mm_dtype_t)dt));
            continue;
        }
        test_bitexact((mm_dtype_t)dt);
    }
    return check_summary("test_backend");
}
