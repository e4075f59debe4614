/* The text encoders' public face (include/mmembed/textmodel.h): load by
 * architecture, runners, encode from token ids, and the encoder ops that
 * bert.c and qwen3.c share. The architectures themselves are bert.c and
 * qwen3.c; what they share is textcommon.c. */
#include "mmembed/textmodel.h"
#include "textcommon.h"

#include <cblas.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mmembed/common.h"
#include "mmembed/textops.h"

/* ================================================================ load */

/* Which architecture a config describes: model_type when present (so that
 * e.g. "xlm-roberta" with a Bert-like architectures list is not taken for
 * BERT), else the first architectures entry. NULL when neither matches. */
static const mm_encoder_ops_t *detect_arch(json_object *root)
{
    const char *mt = mm_tc_jstr(root, "model_type");
    if (mt)
        return !strcmp(mt, "bert") ? &mm_enc_bert : !strcmp(mt, "qwen3") ? &mm_enc_qwen3 : NULL;
    json_object *a;
    if (!json_object_object_get_ex(root, "architectures", &a) ||
        !json_object_is_type(a, json_type_array) || json_object_array_length(a) < 1)
        return NULL;
    const char *s = json_object_get_string(json_object_array_get_idx(a, 0));
    static const char *bert[] = {"BertModel", "BertForMaskedLM", "BertForPreTraining"};
    static const char *qwen[] = {"Qwen3Model", "Qwen3ForCausalLM"};
    for (size_t i = 0; s && i < MM_ARRAY_LEN(bert); i++)
        if (!strcmp(s, bert[i]))
            return &mm_enc_bert;
    for (size_t i = 0; s && i < MM_ARRAY_LEN(qwen); i++)
        if (!strcmp(s, qwen[i]))
            return &mm_enc_qwen3;
    return NULL;
}

int mm_tm_is_supported(const char *dir)
{
    int rc;
    json_object *root = mm_tc_config_read(dir, &rc, NULL, 0);
    if (!root)
        return 0;
    const mm_encoder_ops_t *ops = detect_arch(root);
    json_object_put(root);
    return ops != NULL;
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
    int rc;
    json_object *root = mm_tc_config_read(dir, &rc, err, errlen);
    if (!root)
        return rc;
    const mm_encoder_ops_t *ops = detect_arch(root);
    if (!ops)
        rc = mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s/config.json: not a BertModel or Qwen3Model (model_type \"%s\")",
                     dir, mm_tc_jstr(root, "model_type") ? mm_tc_jstr(root, "model_type") : "?");
    json_object_put(root);
    if (!ops)
        return rc;
    void *m;
    if ((rc = ops->load(dir, dtype, &m, err, errlen)))
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
    if (max_batch < 1)
        return NULL;
    mm_tm_runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    int mt = m->info.max_tokens;
    r->m = m;
    r->max_batch = max_batch;
    long cap = (long)max_batch * mt;
    r->cap = (int)MM_MAX((long)mt, MM_MIN(cap, (long)MM_TC_PASS_TOKENS));
    size_t T = (size_t)r->cap, H = (size_t)m->hidden;
    r->x = malloc(T * H * sizeof(float));
    r->y = malloc(T * H * sizeof(float));
    r->qkv = malloc(T * m->ld_qkv * sizeof(float));
    r->att = malloc(T * m->att_width * sizeof(float));
    r->ff = malloc(MM_TC_FF_BLOCK * (size_t)m->ff_width * sizeof(float));
    r->ff2 = m->ff2_width ? malloc(MM_TC_FF_BLOCK * (size_t)m->ff2_width * sizeof(float)) : NULL;
    r->rope_cos = m->rope_half ? malloc(T * m->rope_half * sizeof(float)) : NULL;
    r->rope_sin = m->rope_half ? malloc(T * m->rope_half * sizeof(float)) : NULL;
    r->pos = malloc(T * (size_t)MM_MAX(1, m->pos_axes) * sizeof(int32_t));
    r->threads = threads < 1 ? 1 : threads;
    r->scores = malloc((size_t)r->threads * MM_TOPS_QBLOCK * mt * sizeof(float));
    r->start = malloc(((size_t)max_batch + 1) * sizeof(int));
    if (!r->x || !r->y || !r->qkv || !r->att || !r->ff || (m->ff2_width && !r->ff2) ||
        (m->rope_half && (!r->rope_cos || !r->rope_sin)) || !r->pos || !r->scores || !r->start) {
        mm_tm_runner_free(r);
        return NULL;
    }
    /* attention's OpenBLAS products run one per pool part (sequence x head),
     * so OpenBLAS itself stays single-threaded */
    openblas_set_num_threads(1);
    if (threads >= 1)
        mm_nn_set_threads(threads);
    return r;
}

void mm_tm_runner_free(mm_tm_runner_t *r)
{
    if (!r)
        return;
    free(r->x);
    free(r->y);
    free(r->qkv);
    free(r->att);
    free(r->ff);
    free(r->ff2);
    free(r->rope_cos);
    free(r->rope_sin);
    free(r->pos);
    free(r->scores);
    free(r->start);
    free(r);
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
    mm_tc_run(r, &src, lens, n, out);
    return MM_OK;
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
