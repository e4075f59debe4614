/* What the text encoders share (see textcommon.h): the config sizes, the
 * sentence-transformers files, the weight walk and the shared pack, and the
 * architecture-free pieces of a forward pass: the pass loop, pooling and
 * the runner on its backend (mmembed/backend.h).
 *
 * Weights: every tensor the forward pass multiplies is converted to f32 and
 * stored, fused where one GEMM can do the work (q|k|v, gate|up), in one
 * sealed memfd mapped PROT_READ | MAP_SHARED before workers fork (the block
 * every pack is built in: mm_pack_block_*, weights.c); the token
 * embedding table keeps its checkpoint dtype (only the looked-up rows are
 * converted), which halves the largest tensor of a bf16 Qwen3. The pack is
 * laid out by walking the tensors twice with the same code: once to check
 * names and shapes and add up the size, once to convert into the memfd.
 *
 * Packing: the sequences of one pass are laid back to back with no
 * padding, so every dense layer is one GEMM over all tokens and attention
 * runs per sequence. That is what HF computes for each sequence alone, and
 * it makes a vector independent of its batch (to BLAS rounding).
 *
 * Sections: config, sentence-transformers, weight walk, pack, load,
 * forward pieces (the pass, the pass loop), runners. */
#include "textcommon.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mmembed/backend.h"
#include "mmembed/common.h"
#include "mmembed/hfconfig.h"
#include "mmembed/packcache.h"
#include "mmembed/textops.h"

/* ============================================================ config */

int mm_tc_cfg_sizes(const mm_cfg_t *o, int *vocab, int *hidden, int *layers, int *heads, int *inter, char *err,
                    size_t errlen)
{
    int rc;
    if ((rc = mm_cfg_size(o, "vocab_size", vocab, err, errlen)) ||
        (rc = mm_cfg_size(o, "hidden_size", hidden, err, errlen)) ||
        (rc = mm_cfg_size(o, "num_hidden_layers", layers, err, errlen)) ||
        (rc = mm_cfg_size(o, "num_attention_heads", heads, err, errlen)) ||
        (rc = mm_cfg_size(o, "intermediate_size", inter, err, errlen)))
        return rc;
    return MM_OK;
}

/* ================================================ sentence-transformers */

/* modules.json lists the modules in order; its Pooling entry names the
 * folder whose config.json says which pooling; a module that would change
 * the vector and that we do not run (Dense, ...) is an error rather than a
 * silently different embedding. Normalize is the caller's job. */
int mm_tc_st_files(const char *dir, int *pooling, int *max_seq, char *err, size_t errlen)
{
    char path[1280];
    int rc;
    mm_cfg_file_t *f;
    *max_seq = 0;

    snprintf(path, sizeof path, "%s/sentence_bert_config.json", dir);
    if (access(path, F_OK) == 0) {
        if ((rc = mm_cfg_open(path, &f, err, errlen)))
            return rc;
        const mm_cfg_t o = mm_cfg_root(f);
        int v;
        if (mm_cfg_pos(&o, "max_seq_length", 0, &v, NULL, 0) == MM_OK)
            *max_seq = v;
        mm_cfg_close(f);
    }

    snprintf(path, sizeof path, "%s/modules.json", dir);
    if (access(path, F_OK) != 0)
        return MM_OK;
    if ((rc = mm_cfg_open_array(path, &f, err, errlen)))
        return rc;
    const mm_cfg_t root = mm_cfg_root(f);
    json_object *mods = mm_cfg_json(&root);
    char pool_dir[512] = "";
    for (size_t i = 0; i < json_object_array_length(mods) && rc == MM_OK; i++) {
        char where[32];
        snprintf(where, sizeof where, "[%zu]", i);
        const mm_cfg_t e = mm_cfg_view(&root, json_object_array_get_idx(mods, i), where);
        const char *type = mm_cfg_str(&e, "type"), *p = mm_cfg_str(&e, "path");
        const char *cls = type ? strrchr(type, '.') : NULL;
        cls = cls ? cls + 1 : type ? type : "";
        if (!strcmp(cls, "Pooling"))
            snprintf(pool_dir, sizeof pool_dir, "%s", p ? p : "");
        else if (strcmp(cls, "Transformer") && strcmp(cls, "Normalize"))
            rc = mm_cfg_errf(&e, "type", err, errlen, MM_E_UNSUPPORTED, "module %s not supported", type ? type : "?");
    }
    mm_cfg_close(f);
    if (rc || !pool_dir[0])
        return rc;

    snprintf(path, sizeof path, "%s/%s/config.json", dir, pool_dir);
    if ((rc = mm_cfg_open(path, &f, err, errlen)))
        return rc;
    const mm_cfg_t o = mm_cfg_root(f);
    int cls = mm_cfg_bool(&o, "pooling_mode_cls_token"), mean = mm_cfg_bool(&o, "pooling_mode_mean_tokens");
    int last = mm_cfg_bool(&o, "pooling_mode_lasttoken");
    int other = mm_cfg_bool(&o, "pooling_mode_max_tokens") || mm_cfg_bool(&o, "pooling_mode_mean_sqrt_len_tokens") ||
                mm_cfg_bool(&o, "pooling_mode_weightedmean_tokens");
    if (other || cls + mean + last != 1)
        rc = mm_cfg_errf(&o, NULL, err, errlen, MM_E_UNSUPPORTED,
                         "pooling must be exactly one of cls_token, mean_tokens, lasttoken");
    mm_cfg_close(f);
    if (rc)
        return rc;
    *pooling = cls ? MM_TM_POOL_CLS : mean ? MM_TM_POOL_MEAN : MM_TM_POOL_LAST;
    return MM_OK;
}

/* ========================================================= weight walk */

const float *mm_tc_walk_begin(mm_tc_walk_t *w)
{
    w->off = (w->off + 63) & ~(size_t)63;
    w->last = w->off;
    return w->ro ? (const float *)(w->ro + w->off) : NULL;
}

static int walk_get(mm_tc_walk_t *w, int ndim, int64_t d0, int64_t d1, const mm_st_tensor_t **t,
                    const char *fmt, va_list ap)
{
    char rel[256], name[300];
    vsnprintf(rel, sizeof rel, fmt, ap);
    snprintf(name, sizeof name, "%s%s", w->prefix, rel);
    int64_t shape[2] = {d0, d1};
    int rc = mm_st_get(w->st, name, ndim, shape, t, w->err, w->errlen);
    if (rc == MM_OK)
        w->dtypes |= 1u << (*t)->dtype;
    return rc;
}

/* A tensor as f32 at the walk's offset (sizing pass: only the offset moves). */
static void put_dense(mm_tc_walk_t *w, const mm_st_tensor_t *t)
{
    if (w->base)
        mm_st_convert(t->dtype, t->data, (float *)(w->base + w->off), t->numel);
    w->off += t->numel * sizeof(float);
}

/* A part where the walk is: inside lin_begin/lin_end appended to the f32
 * rows lin_end packs, else placed dense. */
static int walk_put(mm_tc_walk_t *w, const mm_st_tensor_t *t)
{
    if (!w->lin) {
        put_dense(w, t);
        return MM_OK;
    }
    if (w->base) {
        if (w->tmp_n + t->numel > w->tmp_cap) {
            size_t cap = (w->tmp_n + t->numel) * 2;
            float *p = realloc(w->tmp, cap * sizeof(float));
            if (!p)
                return mm_errf(w->err, w->errlen, MM_E_NOMEM, "out of memory");
            w->tmp = p;
            w->tmp_cap = cap;
        }
        mm_st_convert(t->dtype, t->data, w->tmp + w->tmp_n, t->numel);
    }
    w->tmp_n += t->numel;
    return MM_OK;
}

int mm_tc_walk_part(mm_tc_walk_t *w, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
    const mm_st_tensor_t *t;
    va_list ap;
    va_start(ap, fmt);
    int rc = walk_get(w, ndim, d0, d1, &t, fmt, ap);
    va_end(ap);
    return rc ? rc : walk_put(w, t);
}

/* A dense layer's parts (W's rows) are gathered in f32 and lin_end packs
 * them into an mm_nn_linear blob in the model's compute dtype, which is
 * all the region holds. */
const float *mm_tc_walk_lin_begin(mm_tc_walk_t *w)
{
    const float *p = mm_tc_walk_begin(w);
    w->lin = 1;
    w->tmp_n = 0;
    return p;
}

int mm_tc_walk_lin_end(mm_tc_walk_t *w, int64_t N, int64_t K)
{
    w->lin = 0;
    if (w->tmp_n != (size_t)N * (size_t)K)
        return mm_errf(w->err, w->errlen, MM_E_INVALID, "dense layer of %zu weights, expected %lld x %lld",
                       w->tmp_n, (long long)N, (long long)K);
    if (w->base)
        mm_nn_lin_pack(w->base + w->last, w->tmp, (int)N, (int)K, w->dt);
    w->off = w->last + mm_nn_lin_bytes((int)N, (int)K, w->dt);
    return MM_OK;
}

int mm_tc_walk_part_shape(mm_tc_walk_t *w, int ndim, const int64_t *shape, const char *name)
{
    const mm_st_tensor_t *t;
    char full[300];
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    int rc = mm_st_get(w->st, full, ndim, shape, &t, w->err, w->errlen);
    if (rc)
        return rc;
    w->dtypes |= 1u << t->dtype;
    return walk_put(w, t);
}

int mm_tc_walk_one(mm_tc_walk_t *w, const float **dst, int ndim, int64_t d0, int64_t d1, const char *fmt, ...)
{
    const mm_st_tensor_t *t;
    *dst = mm_tc_walk_begin(w);
    va_list ap;
    va_start(ap, fmt);
    int rc = walk_get(w, ndim, d0, d1, &t, fmt, ap);
    va_end(ap);
    if (rc)
        return rc;
    put_dense(w, t);
    return MM_OK;
}

int mm_tc_walk_table(mm_tc_walk_t *w, mm_tm_t *m, int64_t d0, int64_t d1, const char *name)
{
    const mm_st_tensor_t *t;
    m->tok_emb = mm_tc_walk_begin(w);
    int rc;
    char full[300];
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    int64_t shape[2] = {d0, d1};
    if ((rc = mm_st_get(w->st, full, 2, shape, &t, w->err, w->errlen)))
        return rc;
    w->dtypes |= 1u << t->dtype;
    m->tok_dtype = t->dtype;
    m->tok_scale = NULL;
    if (w->dt != MM_DT_Q4) { /* the checkpoint's bytes, rows converted when looked up */
        if (w->base)
            memcpy(w->base + w->off, t->data, t->nbytes);
        w->off += t->nbytes;
        return MM_OK;
    }
    /* q4 packs (issue 20: "embedding tables may stay 8-bit"): int8 rows,
     * then their scales (mm_tops_i8_quantize) */
    const size_t rows = (size_t)d0, cols = (size_t)d1;
    const size_t esize = t->nbytes / (rows * cols);
    signed char *q = w->base ? (signed char *)(w->base + w->off) : NULL;
    w->off += rows * cols;
    m->tok_scale = mm_tc_walk_begin(w);
    float *scale = w->base ? (float *)(w->base + w->off) : NULL;
    w->off += rows * sizeof(float);
    if (w->base) {
        float *row = malloc(cols * sizeof(float));
        if (!row)
            return mm_errf(w->err, w->errlen, MM_E_NOMEM, "out of memory");
        for (size_t i = 0; i < rows; i++) {
            mm_st_convert(t->dtype, (const unsigned char *)t->data + i * cols * esize, row, cols);
            scale[i] = mm_tops_i8_quantize(q + i * cols, row, cols);
        }
        free(row);
    }
    return MM_OK;
}

int mm_tc_walk_row0(mm_tc_walk_t *w, const float **dst, int64_t d0, int64_t d1, const char *name)
{
    const mm_st_tensor_t *t;
    char full[300];
    snprintf(full, sizeof full, "%s%s", w->prefix, name);
    int64_t shape[2] = {d0, d1};
    int rc;
    if ((rc = mm_st_get(w->st, full, 2, shape, &t, w->err, w->errlen)))
        return rc;
    *dst = mm_tc_walk_begin(w);
    if (w->base)
        mm_st_convert(t->dtype, t->data, (float *)(w->base + w->off), (size_t)d1);
    w->off += (size_t)d1 * sizeof(float);
    return MM_OK;
}

/* ================================================================ pack */

/* The checkpoint's prefix: bare (BertModel / Qwen3Model saves), that of
 * the *For* wrappers, or transformers 5's internal name of a
 * vision-language model's decoder. */
static const char *find_prefix(const mm_st_t *st, const char *probe)
{
    static const char *prefixes[] = {"", "bert.", "model.", "model.language_model."};
    char name[256];
    for (size_t i = 0; i < MM_ARRAY_LEN(prefixes); i++) {
        snprintf(name, sizeof name, "%s%s", prefixes[i], probe);
        if (mm_st_find(st, name))
            return prefixes[i];
    }
    return "";
}

/* Sizes, fills and maps the shared weight block (see the file comment). */
static int build_pack(mm_tm_t *m, const char *dir, const mm_st_t *st, const char *probe, mm_tc_walk_fn walk,
                      char *err, size_t errlen)
{
    mm_tc_walk_t w = {.st = st, .err = err, .errlen = errlen, .dt = m->compute};
    w.prefix = find_prefix(st, probe);
    int rc = walk(&w, m);
    if (rc)
        return rc;
    size_t size = (w.off + 4095) & ~(size_t)4095;

    /* a pack cache file of this size: the walk only sets the pointers */
    char cache[MM_PACK_PATH_MAX] = "";
    if (mm_pack_cache_path(dir, m->arch->name, m->compute, cache, sizeof cache) == 0) {
        char *p = mm_pack_cache_map(cache, size);
        if (p) {
            w.ro = p;
            w.off = 0;
            if ((rc = walk(&w, m))) {
                munmap(p, size);
                return rc;
            }
            m->base = p;
            m->bytes = size;
            m->info.pack_cache = 1;
            goto dtype;
        }
    }

    /* the block weights.c builds every pack in (the same memfd, seals and
     * read-only mapping); the walk converts through its writable view */
    char label[96];
    snprintf(label, sizeof label, "mmembed-weights:%s", m->arch->name);
    mm_pack_block_t b;
    if ((rc = mm_pack_block_open(&b, label, size, err, errlen)))
        return rc;
    w.base = (char *)b.rw;
    w.ro = (char *)b.rw;
    w.off = 0;
    rc = walk(&w, m);
    free(w.tmp);
    w.tmp = NULL;
    if (rc) {
        mm_pack_block_abort(&b);
        return rc;
    }
    void *rov;
    if ((rc = mm_pack_block_seal(&b, &rov, err, errlen)))
        return rc;
    char *ro = rov;
    /* the pointers again, into the mapping that stays (a walk without a
     * base only sets them, as for a pack cache file) */
    w.base = NULL;
    w.ro = ro;
    w.off = 0;
    if ((rc = walk(&w, m))) {
        munmap(ro, size);
        return rc;
    }
    m->base = ro;
    m->bytes = size;
    if (cache[0])
        m->info.pack_cache = mm_pack_cache_store(cache, ro, size) == 0 ? 2 : -1;

dtype:;
    unsigned d = w.dtypes & ~(1u << MM_ST_OTHER);
    const char *ds = d == (1u << MM_ST_F32) ? "f32" : d == (1u << MM_ST_F16) ? "f16"
                   : d == (1u << MM_ST_BF16) ? "bf16" : "mixed";
    snprintf(m->dtype, sizeof m->dtype, "%s", ds);
    return MM_OK;
}

int mm_tc_pack(mm_tm_t *m, const char *dir, const char *probe, mm_tc_walk_fn walk, char *err, size_t errlen)
{
    mm_st_t *st = NULL;
    int rc = mm_st_open(dir, &st, err, errlen);
    if (rc == MM_OK)
        rc = build_pack(m, dir, st, probe, walk, err, errlen);
    mm_st_close(st);
    return rc;
}

/* ================================================================ load */

int mm_tc_init(mm_tm_t *m, const mm_tc_arch_t *arch, const char *dir, mm_dtype_t dtype, char *err,
               size_t errlen)
{
    m->arch = arch;
    m->compute = dtype;
    int nl;
    const char *nm = mm_path_last(dir, &nl);
    snprintf(m->name, sizeof m->name, "%.*s", nl, nm);
    if (!mm_nn_lin_supported(dtype))
        return mm_errf(err, errlen, MM_E_UNSUPPORTED, "%s: dtype %s is not supported on this CPU", dir,
                       mm_dtype_name(dtype));
    return MM_OK;
}

void mm_tc_finish(mm_tm_t *m, int max_pos, int max_seq, int layers, int heads, int append_eos_id)
{
    mm_tm_info_t *in = &m->info;
    in->name = m->name;
    in->arch = m->arch->name;
    in->dim = m->hidden;
    in->max_tokens = MM_MIN(max_pos, MM_TM_MAX_TOKENS);
    if (max_seq > 0)
        in->max_tokens = MM_MIN(in->max_tokens, max_seq);
    in->vocab_size = m->vocab;
    in->append_eos_id = append_eos_id;
    in->layers = layers;
    in->heads = heads;
    in->dtype = m->dtype;
    in->compute = mm_dtype_name(m->compute);
}

/* ======================================================= forward pieces */

void mm_tc_embed(const mm_tm_t *m, const int32_t *const *ids, const int *lens, int n, float *x)
{
    size_t H = (size_t)m->hidden;
    if (m->tok_scale) { /* q4 packs: int8 rows times their scale */
        const signed char *tab = m->tok_emb;
        for (int s = 0; s < n; s++)
            for (int p = 0; p < lens[s]; p++, x += H)
                mm_tops_i8_row(x, tab + (size_t)ids[s][p] * H, m->tok_scale[ids[s][p]], H);
        return;
    }
    size_t esize = m->tok_dtype == MM_ST_F32 ? 4 : 2;
    const unsigned char *tab = m->tok_emb;
    for (int s = 0; s < n; s++)
        for (int p = 0; p < lens[s]; p++, x += H)
            mm_st_convert(m->tok_dtype, tab + (size_t)ids[s][p] * H * esize, x, H);
}

int mm_tc_pass(mm_tm_runner_t *r, const int *lens, int n, float *out)
{
    const mm_tm_t *m = r->m;
    mm_backend_t *be = r->be;
    const int H = m->hidden, T = r->start[n], mb = r->max_batch, axes = MM_MAX(1, m->pos_axes);
    int *qoff = r->hints, *qlen = qoff + mb, *prow = qlen + mb, max_len = 1;
    for (int s = 0; s < n; s++) {
        qoff[s] = r->start[s];
        qlen[s] = lens[s];
        prow[s] = r->start[s] + (m->info.pooling == MM_TM_POOL_LAST ? lens[s] - 1 : 0);
        max_len = MM_MAX(max_len, lens[s]);
    }
    /* positions close up behind the sequence arrays: (axes, T) */
    be->ops->upload(be, r->ints, r->hints, (3 * (size_t)mb + (size_t)axes * T) * sizeof(int));
    r->seqs = (mm_seqs_t){.qoff = r->ints, .qlen = r->ints + mb, .koff = r->ints, .klen = r->ints + mb, .n = n,
                          .max_q = max_len, .max_k = max_len};
    m->arch->forward(r, lens, n);
    if (m->info.pooling == MM_TM_POOL_MEAN)
        be->ops->mean_rows(be, r->out, H, r->x, H, &r->seqs, H);
    else   /* CLS or the last token: one row of each sequence */
        be->ops->gather_add(be, r->out, H, r->x, H, r->ints + 2 * mb, NULL, 0, NULL, n, H);
    return be->ops->download(be, out, r->out, (size_t)n * H * sizeof(float));
}

int mm_tc_check_lens(const mm_tm_t *m, const int *lens, int n)
{
    if (n < 0)
        return MM_E_INVALID;
    for (int s = 0; s < n; s++) {
        if (lens[s] < 1)
            return MM_E_INVALID;
        if (lens[s] > m->info.max_tokens)
            return MM_E_TOOBIG;
    }
    return MM_OK;
}

int mm_tc_run(mm_tm_runner_t *r, const mm_tc_src_t *src, const int *lens, int n, float *out)
{
    const mm_tm_t *m = r->m;
    mm_backend_t *be = r->be;
    const size_t H = (size_t)m->hidden;
    size_t tok0 = 0, total = 0;   /* first token of the pass among all n sequences; all of them */
    for (int s = 0; s < n; s++)
        total += (size_t)lens[s];
    for (int s0 = 0; s0 < n;) {
        int k = 0, t = 0, rc;
        r->start[0] = 0;
        while (s0 + k < n && k < r->max_batch && t + lens[s0 + k] <= r->cap) {
            t += lens[s0 + k];
            r->start[++k] = t;
        }
        const int axes = m->pos_axes > 1 ? m->pos_axes : 1;
        if (src->ids) {   /* text: the same position on every axis */
            mm_tc_embed(m, src->ids + s0, lens + s0, k, r->hx);
            for (int a = 0; a < axes; a++)
                for (int s = 0; s < k; s++)
                    for (int p = 0; p < lens[s0 + s]; p++)
                        r->pos[(size_t)a * t + r->start[s] + p] = p;
        } else {
            memcpy(r->hx, src->x + tok0 * H, (size_t)t * H * sizeof(float));
            for (int a = 0; a < axes; a++)
                memcpy(r->pos + (size_t)a * t, src->pos + (size_t)a * total + tok0, (size_t)t * sizeof(int32_t));
        }
        be->ops->upload(be, r->x, r->hx, (size_t)t * H * sizeof(float));
        if ((rc = mm_tc_pass(r, lens + s0, k, out + (size_t)s0 * H)))
            return rc;
        s0 += k;
        tok0 += (size_t)t;
    }
    return MM_OK;
}

/* ================================================================ runners */

int mm_tc_dev_const(mm_backend_t *be, const float **dst, const float *src, size_t n)
{
    *dst = src ? be->ops->constant(be, src, n) : NULL;
    return src && !*dst;
}

int mm_tc_dev_dense(mm_backend_t *be, const float **dst, const float *src)
{
    *dst = src ? be->ops->dense(be, src) : NULL;
    return src && !*dst;
}

void mm_tc_dev_release(mm_backend_t *be, const float *p)
{
    if (p)
        be->ops->release(be, p);
}

void mm_tc_dev_dense_free(mm_backend_t *be, const float *p)
{
    if (p)
        be->ops->dense_free(be, p);
}

/* Frees what runner_new allocated on r->be (NULL is fine). */
static void dev_bufs_free(mm_tm_runner_t *r)
{
    mm_backend_t *be = r->be;
    const int host = be->host_memory;
    float **bufs[] = {&r->x, &r->y, &r->qkv, &r->att, &r->ff, &r->ff2, &r->rope_cos, &r->rope_sin, &r->out};
    for (size_t i = 0; i < MM_ARRAY_LEN(bufs); i++)
        be->ops->free(be, *bufs[i]);
    be->ops->free(be, r->ints);
    if (!host) {
        be->ops->host_free(be, r->hx);
        be->ops->host_free(be, r->hcos);
        be->ops->host_free(be, r->hsin);
        be->ops->host_free(be, r->hints);
    }
}

void mm_tm_runner_free(mm_tm_runner_t *r)
{
    if (!r)
        return;
    if (r->be) {
        dev_bufs_free(r);
        if (r->wdev)
            r->m->arch->dev_free(r->wdev, r->be);
        if (r->own_be)
            mm_backend_close(r->be);
    }
    free(r->start);
    free(r);
}

mm_tm_runner_t *mm_tc_runner_new(const mm_tm_t *m, mm_backend_t *be, int copy, int max_batch, int threads)
{
    if (max_batch < 1)
        return NULL;
    mm_tm_runner_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    char err[MM_ERRLEN];
    if (!be) {
        if (mm_backend_open("cpu", threads, NULL, &r->be, err, sizeof err)) {
            free(r);
            return NULL;
        }
        r->own_be = 1;
    } else {
        r->be = be;
    }
    be = r->be;
    int mt = m->info.max_tokens;
    r->m = r->w = m;
    r->max_batch = max_batch;
    long cap = (long)max_batch * mt;
    r->cap = (int)MM_MAX((long)mt, MM_MIN(cap, (long)MM_TC_PASS_TOKENS));
    const size_t T = (size_t)r->cap, H = (size_t)m->hidden, F = MM_TC_FF_BLOCK, axes = (size_t)MM_MAX(1, m->pos_axes);
    const size_t nints = 3 * (size_t)max_batch + axes * T;
    const int host = be->host_memory;
#define A(f, n) (!(r->f = be->ops->alloc(be, (size_t)(n) * sizeof(float))))
    int bad = A(x, T * H) || A(y, T * H) || A(qkv, T * m->ld_qkv) || A(att, T * m->att_width) ||
              A(ff, F * m->ff_width) || (m->ff2_width && A(ff2, F * m->ff2_width)) ||
              (m->rope_half && (A(rope_cos, T * m->rope_half) || A(rope_sin, T * m->rope_half))) ||
              A(out, (size_t)max_batch * H) || !(r->ints = be->ops->alloc(be, nints * sizeof(int)));
#undef A
    if (!bad && host) {   /* the host fills backend memory in place: uploads are free */
        r->hx = r->x;
        r->hcos = r->rope_cos;
        r->hsin = r->rope_sin;
        r->hints = r->ints;
    } else if (!bad) {
        bad = !(r->hx = be->ops->host_alloc(be, T * H * sizeof(float))) ||
              !(r->hints = be->ops->host_alloc(be, nints * sizeof(int))) ||
              (m->rope_half && (!(r->hcos = be->ops->host_alloc(be, T * m->rope_half * sizeof(float))) ||
                                !(r->hsin = be->ops->host_alloc(be, T * m->rope_half * sizeof(float)))));
    }
    r->start = malloc(((size_t)max_batch + 1) * sizeof(int));
    if (bad || !r->start || (copy && m->arch->dev_new(m, be, &r->wdev))) {
        mm_tm_runner_free(r);
        return NULL;
    }
    if (r->wdev)
        r->w = r->wdev;
    r->pos = (int32_t *)(r->hints + 3 * (size_t)max_batch);
    r->dpos = r->ints + 3 * (size_t)max_batch;
    return r;
}
