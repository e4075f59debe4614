/* Embedding routes. The model engine arrives with the engine issue; until
 * then the registry is empty and embedding routes answer 404 JSON. */
#include "mmembed/embed.h"

#include <stdlib.h>

#include "mmembed/conf.h"
#include "mmembed/http.h"

struct mm_embed {
    const mm_conf_t *conf;
};

int mm_embed_load(const void *conf, mm_embed_t **out, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    mm_embed_t *e = calloc(1, sizeof *e);
    if (!e) return MM_E_NOMEM;
    e->conf = conf;
    *out = e;
    return MM_OK;
}

void mm_embed_free(mm_embed_t *e)
{
    free(e);
}

int mm_embed_init_child(mm_embed_t *e, int threads, char *err, size_t errlen)
{
    (void)e, (void)threads, (void)err, (void)errlen;
    return MM_OK;
}

void mm_embed_handle(mm_embed_t *e, mm_http_req_t *r)
{
    (void)e;
    mm_http_error(r, 404, "model_not_found", "no embedding model is loaded on this server");
}

void mm_embed_models_json(const mm_embed_t *e, mm_buf_t *b)
{
    (void)e;
    mm_buf_puts(b, "[]");
}

size_t mm_embed_weight_bytes(const mm_embed_t *e)
{
    (void)e;
    return 0;
}
