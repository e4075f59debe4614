/* mkqwen2vl — writes a Qwen2-VL-2B-shaped model folder (the Ops-MM-
 * embedding-v1-2B / GME-2B shape) with SYNTHETIC weights (deterministic
 * PRNG), for tools/bench/qwen2vl_bench.c. No Python or torch needed.
 *
 *   usage: mkqwen2vl OUT_DIR TOKENIZER_JSON[.gz] [--layers N] [--vis-layers M]
 *                    [--header-only]
 *   e.g.   build/mkqwen2vl build/qwen2vl-2b-synth tests/fixtures/qwen3/tokenizer.json.gz
 *
 * Build: `make build/mkqwen2vl` (standalone: cc -O2 -o build/mkqwen2vl tools/mkqwen2vl.c -lm).
 *
 * Shape (Qwen/Qwen2-VL-2B-Instruct's config.json): decoder 28 layers, hidden
 * 1536, 12 heads / 2 KV heads, FFN 8960, vocab 151936, tied embeddings,
 * M-RoPE mrope_section [16, 24, 24]; ViT 32 blocks, 1280 wide, 16 heads,
 * mlp_ratio 4, patch 14, spatial merge 2, temporal patch 2. The full folder
 * is ~4.4 GB (model.safetensors in BF16, the names the Hub checkpoint has).
 *
 * --layers N          decoder layers AND vision blocks = N (default 28 / 32):
 *                     a cut-down folder to time a few layers and extrapolate
 *                     (qwen2vl_bench --model2); --vis-layers M sets the
 *                     vision blocks apart. config.json keeps the counts it has
 *                     and records the full ones under "_full_layers".
 * --header-only       model.safetensors gets the full header but its data is
 *                     a hole (sparse file, no disk used): enough for
 *                     mm_encoder_pack_bytes (pack size per dtype), not loadable.
 *
 * Writes OUT_DIR/config.json (with a "_note" saying the weights are
 * synthetic), model.safetensors, preprocessor_config.json
 * (Qwen2VLImageProcessor), tokenizer.json (TOKENIZER_JSON, gunzipped when
 * it ends in .gz) and tokenizer_config.json when one lies beside it.
 *
 * Weights: every tensor gets its own PRNG stream seeded from its name.
 * Matrices uniform with std 0.02, biases std 0.01, norm weights 1 +- 0.02,
 * norm biases +- 0.02. The embeddings mean nothing; only shapes and speed
 * are real. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum {
    L_FULL = 28, HID = 1536, HEADS = 12, KV = 2, HD = HID / HEADS, FFN = 8960, VOCAB = 151936,
    V_FULL = 32, V_DIM = 1280, V_HEADS = 16, V_MLP = 4 * V_DIM, PATCH = 14, MERGE = 2, TPATCH = 2,
};

typedef enum { K_WEIGHT, K_BIAS, K_LN_W, K_LN_B } kind_t;

typedef struct {
    char name[96];
    int ndim;
    int64_t shape[5];
    kind_t kind;
    size_t numel;
} tensor_t;

static tensor_t tensors[1024];
static int ntensors;

static void __attribute__((format(printf, 4, 5))) add(kind_t kind, int ndim, const int64_t *d, const char *fmt, ...)
{
    tensor_t *t = &tensors[ntensors++];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->ndim = ndim;
    t->kind = kind;
    t->numel = 1;
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = d[i];
        t->numel *= (size_t)d[i];
    }
}

#define D1(a) ((const int64_t[]){a})
#define D2(a, b) ((const int64_t[]){a, b})

static void build_list(int layers, int vis)
{
    add(K_WEIGHT, 2, D2(VOCAB, HID), "model.embed_tokens.weight");
    for (int l = 0; l < layers; l++) {
        add(K_LN_W, 1, D1(HID), "model.layers.%d.input_layernorm.weight", l);
        add(K_WEIGHT, 2, D2(HID, FFN), "model.layers.%d.mlp.down_proj.weight", l);
        add(K_WEIGHT, 2, D2(FFN, HID), "model.layers.%d.mlp.gate_proj.weight", l);
        add(K_WEIGHT, 2, D2(FFN, HID), "model.layers.%d.mlp.up_proj.weight", l);
        add(K_LN_W, 1, D1(HID), "model.layers.%d.post_attention_layernorm.weight", l);
        add(K_BIAS, 1, D1(KV * HD), "model.layers.%d.self_attn.k_proj.bias", l);
        add(K_WEIGHT, 2, D2(KV * HD, HID), "model.layers.%d.self_attn.k_proj.weight", l);
        add(K_WEIGHT, 2, D2(HID, HID), "model.layers.%d.self_attn.o_proj.weight", l);
        add(K_BIAS, 1, D1(HID), "model.layers.%d.self_attn.q_proj.bias", l);
        add(K_WEIGHT, 2, D2(HID, HID), "model.layers.%d.self_attn.q_proj.weight", l);
        add(K_BIAS, 1, D1(KV * HD), "model.layers.%d.self_attn.v_proj.bias", l);
        add(K_WEIGHT, 2, D2(KV * HD, HID), "model.layers.%d.self_attn.v_proj.weight", l);
    }
    add(K_LN_W, 1, D1(HID), "model.norm.weight");
    for (int l = 0; l < vis; l++) {
        add(K_BIAS, 1, D1(V_DIM), "visual.blocks.%d.attn.proj.bias", l);
        add(K_WEIGHT, 2, D2(V_DIM, V_DIM), "visual.blocks.%d.attn.proj.weight", l);
        add(K_BIAS, 1, D1(3 * V_DIM), "visual.blocks.%d.attn.qkv.bias", l);
        add(K_WEIGHT, 2, D2(3 * V_DIM, V_DIM), "visual.blocks.%d.attn.qkv.weight", l);
        add(K_BIAS, 1, D1(V_MLP), "visual.blocks.%d.mlp.fc1.bias", l);
        add(K_WEIGHT, 2, D2(V_MLP, V_DIM), "visual.blocks.%d.mlp.fc1.weight", l);
        add(K_BIAS, 1, D1(V_DIM), "visual.blocks.%d.mlp.fc2.bias", l);
        add(K_WEIGHT, 2, D2(V_DIM, V_MLP), "visual.blocks.%d.mlp.fc2.weight", l);
        add(K_LN_B, 1, D1(V_DIM), "visual.blocks.%d.norm1.bias", l);
        add(K_LN_W, 1, D1(V_DIM), "visual.blocks.%d.norm1.weight", l);
        add(K_LN_B, 1, D1(V_DIM), "visual.blocks.%d.norm2.bias", l);
        add(K_LN_W, 1, D1(V_DIM), "visual.blocks.%d.norm2.weight", l);
    }
    const int M4 = V_DIM * MERGE * MERGE;
    add(K_LN_B, 1, D1(V_DIM), "visual.merger.ln_q.bias");
    add(K_LN_W, 1, D1(V_DIM), "visual.merger.ln_q.weight");
    add(K_BIAS, 1, D1(M4), "visual.merger.mlp.0.bias");
    add(K_WEIGHT, 2, D2(M4, M4), "visual.merger.mlp.0.weight");
    add(K_BIAS, 1, D1(HID), "visual.merger.mlp.2.bias");
    add(K_WEIGHT, 2, D2(HID, M4), "visual.merger.mlp.2.weight");
    add(K_WEIGHT, 5, ((const int64_t[]){V_DIM, 3, TPATCH, PATCH, PATCH}), "visual.patch_embed.proj.weight");
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

/* f32 -> bf16, round to nearest even (values here are small and finite) */
static uint16_t to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static float value(kind_t k, uint64_t *s)
{
    /* uniform on [-1, 1) scaled by sqrt(3) has unit std */
    float u = (float)((double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0) * 2.0 - 1.0) * 1.7320508f;
    switch (k) {
    case K_WEIGHT: return 0.02f * u;
    case K_BIAS: return 0.01f * u;
    case K_LN_W: return 1.0f + 0.02f * u;
    default: return 0.02f * u;
    }
}

/* ------------------------------------------------------------ files */

/* copies from -> to; a name ending in .gz is read through gzip -dc */
static int copy_file(const char *from, const char *to)
{
    size_t fl = strlen(from);
    int gz = fl > 3 && !strcmp(from + fl - 3, ".gz");
    FILE *in;
    if (gz) {
        char cmd[2200];
        snprintf(cmd, sizeof cmd, "gzip -dc '%s'", from);
        in = popen(cmd, "r");
    } else {
        in = fopen(from, "rb");
    }
    FILE *out = in ? fopen(to, "wb") : NULL;
    if (!in || !out) {
        fprintf(stderr, "mkqwen2vl: %s: %s\n", in ? to : from, strerror(errno));
        if (in)
            gz ? pclose(in) : fclose(in);
        return -1;
    }
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    int rin = gz ? pclose(in) : fclose(in);
    if (fclose(out) != 0 || rin != 0) {
        fprintf(stderr, "mkqwen2vl: copying %s to %s failed\n", from, to);
        return -1;
    }
    return 0;
}

static int write_text(const char *dir, const char *name, const char *text)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
        fprintf(stderr, "mkqwen2vl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Qwen/Qwen2-VL-2B-Instruct's config.json, layer counts as written */
static const char *config_fmt =
    "{\n"
    "  \"_note\": \"SYNTHETIC WEIGHTS: deterministic pseudo-random values written by mmembed tools/mkqwen2vl.c "
    "with the shapes of Qwen2-VL-2B (Ops-MM-embedding-v1-2B). For benchmarks only; the embeddings are "
    "meaningless.\",\n"
    "  \"_full_layers\": {\"text\": %d, \"vision\": %d},\n"
    "  \"architectures\": [\"Qwen2VLForConditionalGeneration\"],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"bos_token_id\": 151643,\n"
    "  \"eos_token_id\": 151645,\n"
    "  \"vision_start_token_id\": 151652,\n"
    "  \"vision_end_token_id\": 151653,\n"
    "  \"vision_token_id\": 151654,\n"
    "  \"image_token_id\": 151655,\n"
    "  \"video_token_id\": 151656,\n"
    "  \"hidden_act\": \"silu\",\n"
    "  \"hidden_size\": %d,\n"
    "  \"initializer_range\": 0.02,\n"
    "  \"intermediate_size\": %d,\n"
    "  \"max_position_embeddings\": 32768,\n"
    "  \"max_window_layers\": %d,\n"
    "  \"model_type\": \"qwen2_vl\",\n"
    "  \"num_attention_heads\": %d,\n"
    "  \"num_hidden_layers\": %d,\n"
    "  \"num_key_value_heads\": %d,\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_theta\": 1000000.0,\n"
    "  \"sliding_window\": 32768,\n"
    "  \"tie_word_embeddings\": true,\n"
    "  \"torch_dtype\": \"bfloat16\",\n"
    "  \"transformers_version\": \"4.45.0.dev0\",\n"
    "  \"use_cache\": true,\n"
    "  \"use_sliding_window\": false,\n"
    "  \"vision_config\": {\n"
    "    \"depth\": %d,\n"
    "    \"embed_dim\": %d,\n"
    "    \"mlp_ratio\": 4,\n"
    "    \"num_heads\": %d,\n"
    "    \"in_chans\": 3,\n"
    "    \"hidden_size\": %d,\n"
    "    \"patch_size\": %d,\n"
    "    \"spatial_merge_size\": %d,\n"
    "    \"spatial_patch_size\": %d,\n"
    "    \"temporal_patch_size\": %d\n"
    "  },\n"
    "  \"rope_scaling\": {\n"
    "    \"type\": \"mrope\",\n"
    "    \"mrope_section\": [16, 24, 24]\n"
    "  },\n"
    "  \"vocab_size\": %d\n"
    "}\n";

static const char *preprocessor_json =
    "{\n"
    "  \"do_convert_rgb\": true,\n"
    "  \"do_normalize\": true,\n"
    "  \"do_rescale\": true,\n"
    "  \"do_resize\": true,\n"
    "  \"image_mean\": [0.48145466, 0.4578275, 0.40821073],\n"
    "  \"image_processor_type\": \"Qwen2VLImageProcessor\",\n"
    "  \"image_std\": [0.26862954, 0.26130258, 0.27577711],\n"
    "  \"max_pixels\": 12845056,\n"
    "  \"merge_size\": 2,\n"
    "  \"min_pixels\": 3136,\n"
    "  \"patch_size\": 14,\n"
    "  \"resample\": 3,\n"
    "  \"rescale_factor\": 0.00392156862745098,\n"
    "  \"temporal_patch_size\": 2\n"
    "}\n";

static int write_safetensors(const char *dir, int header_only)
{
    size_t cap = 1 << 20, len = 0, off = 0;
    char *h = malloc(cap);
    if (!h)
        return -1;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < ntensors; i++) {
        tensor_t *t = &tensors[i];
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"BF16\",\"shape\":[", t->name);
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
        fprintf(stderr, "mkqwen2vl: %s: %s\n", path, strerror(errno));
        free(h);
        return -1;
    }
    unsigned char n8[8];
    for (int i = 0; i < 8; i++)
        n8[i] = (unsigned char)((uint64_t)len >> (8 * i));
    fwrite(n8, 1, 8, f);
    fwrite(h, 1, len, f);
    free(h);

    if (header_only) {
        if (fflush(f) != 0 || ftruncate(fileno(f), (off_t)(8 + len + off)) != 0) {
            fprintf(stderr, "mkqwen2vl: %s: %s\n", path, strerror(errno));
            fclose(f);
            return -1;
        }
    } else {
        static uint16_t buf[1 << 16];
        for (int i = 0; i < ntensors; i++) {
            tensor_t *t = &tensors[i];
            uint64_t s = hash_name(t->name);
            for (size_t done = 0; done < t->numel;) {
                size_t n = t->numel - done < (sizeof buf / 2) ? t->numel - done : (sizeof buf / 2);
                for (size_t j = 0; j < n; j++)
                    buf[j] = to_bf16(value(t->kind, &s));
                if (fwrite(buf, 2, n, f) != n) {
                    fprintf(stderr, "mkqwen2vl: %s: %s\n", path, strerror(errno));
                    fclose(f);
                    return -1;
                }
                done += n;
            }
        }
    }
    if (fclose(f) != 0) {
        fprintf(stderr, "mkqwen2vl: %s: %s\n", path, strerror(errno));
        return -1;
    }
    printf("mkqwen2vl: %s: %d tensors, %zu parameters, %.1f MB%s\n", path, ntensors, off / 2,
           (double)(off + len + 8) / 1e6, header_only ? " (header only: sparse)" : "");
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL, *tok = NULL;
    int layers = L_FULL, vis = V_FULL, header_only = 0, vis_set = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--layers") && i + 1 < argc) {
            layers = atoi(argv[++i]);
            if (!vis_set)
                vis = layers;
        } else if (!strcmp(argv[i], "--vis-layers") && i + 1 < argc) {
            vis = atoi(argv[++i]);
            vis_set = 1;
        } else if (!strcmp(argv[i], "--header-only")) {
            header_only = 1;
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else if (argv[i][0] != '-' && !tok) {
            tok = argv[i];
        } else {
            dir = NULL;
            break;
        }
    }
    if (!dir || !tok || layers < 1 || layers > L_FULL || vis < 1 || vis > V_FULL) {
        fprintf(stderr, "usage: mkqwen2vl OUT_DIR TOKENIZER_JSON[.gz] [--layers N (1..28)] [--vis-layers M (1..32)] "
                        "[--header-only]\n");
        return 2;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "mkqwen2vl: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    char to[1024], from[1024];
    snprintf(to, sizeof to, "%s/tokenizer.json", dir);
    if (copy_file(tok, to))
        return 1;
    /* tokenizer_config.json beside the tokenizer, if any */
    snprintf(from, sizeof from, "%s", tok);
    char *slash = strrchr(from, '/');
    snprintf(slash ? slash + 1 : from, sizeof from - (size_t)(slash ? slash + 1 - from : 0), "tokenizer_config.json");
    if (access(from, R_OK) == 0) {
        snprintf(to, sizeof to, "%s/tokenizer_config.json", dir);
        if (copy_file(from, to))
            return 1;
    }
    char cfg[4096];
    snprintf(cfg, sizeof cfg, config_fmt, L_FULL, V_FULL, HID, FFN, layers, HEADS, layers, KV, vis, V_DIM, V_HEADS,
             HID, PATCH, MERGE, PATCH, TPATCH, VOCAB);
    if (write_text(dir, "config.json", cfg) || write_text(dir, "preprocessor_config.json", preprocessor_json))
        return 1;
    build_list(layers, vis);
    return write_safetensors(dir, header_only) ? 1 : 0;
}
