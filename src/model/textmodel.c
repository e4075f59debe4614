/* The text encoders' public face (include/mmembed/textmodel.h): load by
 * architecture, runners, encode from token ids, and the encoder ops that
 * bert.c and qwen3.c share. The architectures themselves are bert.c and
 * qwen3.c; what they share is textcommon.c. */
#include "mmembed/textmodel.h"
#include "textcommon.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/hfconfig.h"
#include "mmembed/textops.h"

/* ================================================================ load */

/* The architectures this API loads: the encoder ops whose models are
 * mm_tm_t (those that share textcommon's free). */
static int is_text_ops(const mm_encoder_ops_t *ops)
{
    return ops && ops->free == mm_tc_enc_free && ops->info == mm_tc_enc_info;
}

int mm_tm_is_supported(const char *dir)
{
    mm_cfg_file_t *f;
    const mm_encoder_ops_t *ops;
    if (mm_encoder_probe(dir, &f, &ops, NULL, 0))
        return 0;
    mm_cfg_close(f);
    return is_text_ops(ops);
}

int mm_tm_load(const char *dir, mm_tm_t **out, char *err, size_t errlen)
{
    return mm_tm_load_as(dir, MM_DT_F32, out, err, errlen);
}

int mm_tm_load_as(const char *dir, mm_dtype_t dtype, mm_tm_t **out, char *err, size_t errlen)
{
    *out = NULL;
    if (!mm_nn_lin_supported(dtype))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: dtype %s is not supported on this CPU", dir,
                       mm_dtype_name(dtype));
    mm_cfg_file_t *f;
    const mm_encoder_ops_t *ops;
    int rc = mm_encoder_probe(dir, &f, &ops, err, errlen);
    if (rc)
        return rc;
    const mm_cfg_t cfg = mm_cfg_root(f);
    void *m = NULL;
    if (!is_text_ops(ops)) {
        const char *mt = mm_cfg_str(&cfg, "model_type");
        rc = mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: not a BertModel or Qwen3Model (model_type \"%s\")",
                     mm_cfg_path(f), mt ? mt : "?");
    } else {
        rc = ops->load(dir, &cfg, dtype, &m, err, errlen);
    }
    mm_cfg_close(f);
    if (rc)
        return rc;
    *out = m;
    return MM_OK;
}

void mm_tm_free(mm_tm_t *m)
{
    if (!m)
        return;
    if (m->base)
        munmap(m->base, m->bytes);
    if (m->arch)
        m->arch->free(m);
    free(m);   /* the architecture's struct, which starts with m */
}

const mm_tm_info_t *mm_tm_info(const mm_tm_t *m)
{
    return &m->info;
}

size_t mm_tm_weight_bytes(const mm_tm_t *m)
{
    return m->bytes;
}

int mm_tm_set_pooling(mm_tm_t *m, int pooling)
{
    if (pooling != MM_TM_POOL_MEAN && pooling != MM_TM_POOL_CLS && pooling != MM_TM_POOL_LAST)
        return MM_E_INVALID;
    m->info.pooling = pooling;
    return MM_OK;
}

/* ================================================================ runners */

mm_tm_runner_t *mm_tm_runner_new(const mm_tm_t *m, int max_batch, int threads)
{
    mm_tm_runner_t *r = mm_tc_runner_new(m, NULL, 0, max_batch, threads);
    if (!r)
        return NULL;
    /* attention's OpenBLAS products run one per pool part (sequence x head),
     * so OpenBLAS itself stays single-threaded */
    openblas_set_num_threads(1);
    if (threads >= 1)
        mm_nn_set_threads(threads);
    return r;
}

mm_tm_runner_t *mm_tm_runner_new_on(const mm_tm_t *m, mm_backend_t *be, int max_batch)
{
    mm_tm_runner_t *r = mm_tc_runner_new(m, be, 1, max_batch, 1);
    if (r)
        openblas_set_num_threads(1);
    return r;
}

int mm_tm_encode(mm_tm_runner_t *r, const int32_t *const *ids, const int *lens, int n, float *out)
{
    const mm_tm_t *m = r->m;
    int rc = mm_tc_check_lens(m, lens, n);
    if (rc)
        return rc;
    for (int s = 0; s < n; s++)
        for (int p = 0; p < lens[s]; p++)
            if (ids[s][p] < 0 || ids[s][p] >= m->vocab)
                return MM_E_INVALID;
    const mm_tc_src_t src = {.ids = ids};
    return mm_tc_run(r, &src, lens, n, out);
}

/* ================================================================ encoder ops */

void mm_tc_enc_free(void *model)
{
    mm_tm_free(model);
}

void mm_tc_enc_info(const void *model, mm_enc_info_t *o)
{
    const mm_tm_info_t *ti = mm_tm_info(model);
    *o = (mm_enc_info_t){.arch = ti->arch, .dim = ti->dim, .max_tokens = ti->max_tokens,
                         .vocab_size = ti->vocab_size, .has_text = 1, .takes_ids = 1,
                         .append_eos_id = ti->append_eos_id, .dtype = ti->dtype, .compute = ti->compute,
                         .pack_cache = ti->pack_cache, .weight_bytes = mm_tm_weight_bytes(model)};
}

void *mm_tc_enc_runner_new(const void *model, int max_batch, int max_images, int threads)
{
    (void)max_images;
    return mm_tm_runner_new(model, max_batch, threads);
}

void *mm_tc_enc_runner_new_on(const void *model, mm_backend_t *be, int max_batch, int max_images)
{
    (void)max_images;
    return mm_tm_runner_new_on(model, be, max_batch);
}

void mm_tc_enc_runner_free(void *r)
{
    mm_tm_runner_free(r);
}

int mm_tc_enc_encode(const void *model, void *runner, const mm_input_t *in, int n, float *out)
{
    const int32_t *ids[64];
    int lens[64];
    const int d = mm_tm_info(model)->dim;
    for (int base = 0; base < n; base += 64) {
        const int k = MM_MIN(64, n - base);
        for (int i = 0; i < k; i++) {
            const mm_input_t *x = &in[base + i];
            if (x->n_seg != 1 || x->seg->kind != MM_SEG_TEXT) return MM_E_UNSUPPORTED;   /* text only */
            ids[i] = x->seg->ids;
            lens[i] = x->seg->n_ids;
        }
        int rc = mm_tm_encode(runner, ids, lens, k, out + (size_t)base * d);
        if (rc) return rc;
    }
    return MM_OK;
}
