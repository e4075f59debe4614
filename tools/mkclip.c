/* mkclip — writes a CLIP ViT-B/32-shaped model folder with SYNTHETIC
 * weights (deterministic PRNG), for benchmarks and end-to-end tests that
 * need real model sizes without downloading a checkpoint.
 *
 *   usage: mkclip OUT_DIR TOKENIZER_JSON
 *   e.g.   build/mkclip /tmp/clip-b32-synth tests/fixtures/clip/tokenizer/tokenizer.json
 *
 * Build (standalone, from the repository root):
 *   cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o build/mkclip tools/mkclip.c -lm
 *
 * Writes OUT_DIR/config.json (openai/clip-vit-base-patch32's, with a "_note"
 * saying the weights are synthetic), model.safetensors (F16, ~300 MB, the
 * tensor names and shapes transformers' CLIPModel saves),
 * preprocessor_config.json (standard CLIPImageProcessor), and copies of
 * TOKENIZER_JSON and, when present beside it, tokenizer_config.json.
 *
 * Weights: every tensor gets its own PRNG stream seeded from its name, so
 * values do not depend on write order. Linear/embedding weights are uniform
 * with std 0.02, biases std 0.01, layer norms weight 1 +- 0.02 / bias
 * +- 0.02. The embeddings mean nothing; only shapes and speed are real. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ViT-B/32 */
enum {
    T_DIM = 512, T_HID = 2048, T_LAYERS = 12, T_HEADS = 8, T_VOCAB = 49408, T_POS = 77,
    V_DIM = 768, V_HID = 3072, V_LAYERS = 12, V_HEADS = 12, V_IMG = 224, V_PATCH = 32,
    V_SEQ = (V_IMG / V_PATCH) * (V_IMG / V_PATCH) + 1, PROJ = 512,
};

typedef enum { K_WEIGHT, K_BIAS, K_LN_W, K_LN_B, K_CONST } kind_t;

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[4];
    kind_t kind;
    size_t numel;
} tensor_t;

static tensor_t tensors[512];
static int ntensors;

static void __attribute__((format(printf, 7, 8)))
add(kind_t kind, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
{
    tensor_t *t = &tensors[ntensors++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    int64_t d[4] = {d0, d1, d2, d3};
    t->ndim = ndim;
    t->kind = kind;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->numel *= (size_t)d[i];
    }
}

static void add_layers(const char *tower, int layers, int dim, int hid)
{
    for (int l = 0; l < layers; l++) {
        const char *p = tower;
        add(K_LN_B, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm1.bias", p, l);
        add(K_LN_W, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm1.weight", p, l);
        add(K_LN_B, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm2.bias", p, l);
        add(K_LN_W, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm2.weight", p, l);
        add(K_BIAS, 1, hid, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc1.bias", p, l);
        add(K_WEIGHT, 2, hid, dim, 0, 0, "%s.encoder.layers.%d.mlp.fc1.weight", p, l);
        add(K_BIAS, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc2.bias", p, l);
        add(K_WEIGHT, 2, dim, hid, 0, 0, "%s.encoder.layers.%d.mlp.fc2.weight", p, l);
        static const char *proj[] = {"k_proj", "out_proj", "q_proj", "v_proj"};
        for (int i = 0; i < 4; i++) {
            add(K_BIAS, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.self_attn.%s.bias", p, l, proj[i]);
            add(K_WEIGHT, 2, dim, dim, 0, 0, "%s.encoder.layers.%d.self_attn.%s.weight", p, l, proj[i]);
        }
    }
}

static void build_list(void)
{
    add(K_CONST, 0, 0, 0, 0, 0, "logit_scale");
    add(K_WEIGHT, 2, T_POS, T_DIM, 0, 0, "text_model.embeddings.position_embedding.weight");
    add(K_WEIGHT, 2, T_VOCAB, T_DIM, 0, 0, "text_model.embeddings.token_embedding.weight");
    add_layers("text_model", T_LAYERS, T_DIM, T_HID);
    add(K_LN_B, 1, T_DIM, 0, 0, 0, "text_model.final_layer_norm.bias");
    add(K_LN_W, 1, T_DIM, 0, 0, 0, "text_model.final_layer_norm.weight");
    add(K_WEIGHT, 2, PROJ, T_DIM, 0, 0, "text_projection.weight");
    add(K_WEIGHT, 1, V_DIM, 0, 0, 0, "vision_model.embeddings.class_embedding");
    add(K_WEIGHT, 4, V_DIM, 3, V_PATCH, V_PATCH, "vision_model.embeddings.patch_embedding.weight");
    add(K_WEIGHT, 2, V_SEQ, V_DIM, 0, 0, "vision_model.embeddings.position_embedding.weight");
    add_layers("vision_model", V_LAYERS, V_DIM, V_HID);
    add(K_LN_B, 1, V_DIM, 0, 0, 0, "vision_model.post_layernorm.bias");
    add(K_LN_W, 1, V_DIM, 0, 0, 0, "vision_model.post_layernorm.weight");
    add(K_LN_B, 1, V_DIM, 0, 0, 0, "vision_model.pre_layrnorm.bias");
    add(K_LN_W, 1, V_DIM, 0, 0, 0, "vision_model.pre_layrnorm.weight");
    add(K_WEIGHT, 2, PROJ, V_DIM, 0, 0, "visual_projection.weight");
}

/* ------------------------------------------------------------ numbers */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* f32 -> f16, round to nearest even (values here are small and finite) */
static uint16_t to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    int32_t e = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t m = x & 0x7fffff;
    if (e >= 31)
        return sign | 0x7c00;
    if (e <= 0) { /* subnormal or zero */
        if (e < -10)
            return sign;
        m |= 0x800000;
        int shift = 14 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return sign | (uint16_t)h;
    }
    uint32_t h = ((uint32_t)e << 10) | (m >> 13), rem = m & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent: still correct */
    return sign | (uint16_t)h;
}

static float value(kind_t k, uint64_t *s)
{
    /* uniform on [-1, 1) scaled by sqrt(3) has unit std */
    float u = (float)((double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * 1.7320508f;
    switch (k) {
    case K_WEIGHT: return 0.02f * u;
    case K_BIAS: return 0.01f * u;
    case K_LN_W: return 1.0f + 0.02f * u;
    case K_LN_B: return 0.02f * u;
    default: return 2.6592f; /* logit_scale, as CLIPConfig initialises it */
    }
}

/* ------------------------------------------------------------ files */

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    if (!in || !out) {
        fprintf(stderr, "mkclip: %s: %s\n", in ? to : from, strerror(errno));
        if (in)
            fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    return fclose(out) == 0 ? 0 : -1;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "mkclip: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static const char *config_json =
    "{\n"
    "  \"_note\": \"SYNTHETIC WEIGHTS: deterministic pseudo-random values written by mmembed tools/mkclip.c "
    "with the shapes of openai/clip-vit-base-patch32. For benchmarks and tests only; the embeddings are "
    "meaningless.\",\n"
    "  \"_name_or_path\": \"openai/clip-vit-base-patch32\",\n"
    "  \"architectures\": [\"CLIPModel\"],\n"
    "  \"initializer_factor\": 1.0,\n"
    "  \"logit_scale_init_value\": 2.6592,\n"
    "  \"model_type\": \"clip\",\n"
    "  \"projection_dim\": 512,\n"
    "  \"text_config\": {\n"
    "    \"attention_dropout\": 0.0,\n"
    "    \"bos_token_id\": 0,\n"
    "    \"dropout\": 0.0,\n"
    "    \"eos_token_id\": 2,\n"
    "    \"hidden_act\": \"quick_gelu\",\n"
    "    \"hidden_size\": 512,\n"
    "    \"initializer_factor\": 1.0,\n"
    "    \"initializer_range\": 0.02,\n"
    "    \"intermediate_size\": 2048,\n"
    "    \"layer_norm_eps\": 1e-05,\n"
    "    \"max_position_embeddings\": 77,\n"
    "    \"model_type\": \"clip_text_model\",\n"
    "    \"num_attention_heads\": 8,\n"
    "    \"num_hidden_layers\": 12,\n"
    "    \"pad_token_id\": 1,\n"
    "    \"projection_dim\": 512,\n"
    "    \"vocab_size\": 49408\n"
    "  },\n"
    "  \"torch_dtype\": \"float16\",\n"
    "  \"transformers_version\": \"4.21.0.dev0\",\n"
    "  \"vision_config\": {\n"
    "    \"attention_dropout\": 0.0,\n"
    "    \"dropout\": 0.0,\n"
    "    \"hidden_act\": \"quick_gelu\",\n"
    "    \"hidden_size\": 768,\n"
    "    \"image_size\": 224,\n"
    "    \"initializer_factor\": 1.0,\n"
    "    \"initializer_range\": 0.02,\n"
    "    \"intermediate_size\": 3072,\n"
    "    \"layer_norm_eps\": 1e-05,\n"
    "    \"model_type\": \"clip_vision_model\",\n"
    "    \"num_attention_heads\": 12,\n"
    "    \"num_channels\": 3,\n"
    "    \"num_hidden_layers\": 12,\n"
    "    \"patch_size\": 32,\n"
    "    \"projection_dim\": 512\n"
    "  }\n"
    "}\n";

static const char *preprocessor_json =
    "{\n"
    "  \"crop_size\": {\n    \"height\": 224,\n    \"width\": 224\n  },\n"
    "  \"do_center_crop\": true,\n"
    "  \"do_convert_rgb\": true,\n"
    "  \"do_normalize\": true,\n"
    "  \"do_rescale\": true,\n"
    "  \"do_resize\": true,\n"
    "  \"image_mean\": [\n    0.48145466,\n    0.4578275,\n    0.40821073\n  ],\n"
    "  \"image_processor_type\": \"CLIPImageProcessor\",\n"
    "  \"image_std\": [\n    0.26862954,\n    0.26130258,\n    0.27577711\n  ],\n"
    "  \"resample\": 3,\n"
    "  \"rescale_factor\": 0.00392156862745098,\n"
    "  \"size\": {\n    \"shortest_edge\": 224\n  }\n"
    "}\n";

static int write_safetensors(const char *dir)
{
    /* header */
    size_t cap = 1 << 20, len = 0, off = 0;
    char *h = malloc(cap);
    if (!h)
        return -1;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < ntensors; i++) {
        tensor_t *t = &tensors[i];
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"F16\",\"shape\":[", t->name);
        for (int d = 0; d < t->ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + 2 * t->numel);
        off += 2 * t->numel;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) /* keep the data block 8-byte aligned, as safetensors does */
        h[len++] = ' ';

    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "mkclip: %s: %s\n", path, strerror(errno));
        free(h);
        return -1;
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    fwrite(n8, 1, 8, f);
    fwrite(h, 1, len, f);
    free(h);

    static uint16_t buf[1 << 16];
    for (int i = 0; i < ntensors; i++) {
        tensor_t *t = &tensors[i];
        uint64_t s = hash_name(t->name);
        for (size_t done = 0; done < t->numel;) {
            size_t n = t->numel - done < (sizeof buf / 2) ? t->numel - done : (sizeof buf / 2);
            for (size_t j = 0; j < n; j++)
                buf[j] = to_f16(value(t->kind, &s));
            fwrite(buf, 2, n, f);
            done += n;
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "mkclip: %s: %s\n", path, strerror(errno));
        return -1;
    }
    printf("mkclip: %s: %d tensors, %zu parameters, %.1f MB\n", path, ntensors, off / 2,
           (double)(off + len + 8) / 1e6);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: mkclip OUT_DIR TOKENIZER_JSON\n");
        return 2;
    }
    const char *dir = argv[1], *tok = argv[2];
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "mkclip: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char to[1024], from[1024];
    snprintf(to, sizeof to, "%s/tokenizer.json", dir);
    if (copy_file(tok, to))
        return 1;
    /* tokenizer_config.json beside tokenizer.json, if any */
    snprintf(from, sizeof from, "%s", tok);
    char *slash = strrchr(from, '/');
    snprintf(slash ? slash + 1 : from, sizeof from - (size_t)(slash ? slash + 1 - from : 0), "tokenizer_config.json");
    FILE *probe = fopen(from, "rb");
    if (probe) {
        fclose(probe);
        snprintf(to, sizeof to, "%s/tokenizer_config.json", dir);
        if (copy_file(from, to))
            return 1;
    }
    if (write_text(dir, "config.json", config_json) ||
        write_text(dir, "preprocessor_config.json", preprocessor_json))
        return 1;
    build_list();
    return write_safetensors(dir) ? 1 : 0;
}
