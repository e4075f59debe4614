/* mkqwen2vl — writes a Qwen2-VL-2B-shaped model folder (the Ops-MM-
 * embedding-v1-2B / GME-2B shape) with SYNTHETIC weights (deterministic
 * PRNG), for tools/bench/qwen2vl_bench.c. No Python or torch needed.
 *
 *   usage: mkqwen2vl OUT_DIR TOKENIZER_JSON[.gz] [--layers N] [--vis-layers M]
 *                    [--header-only] [--7b]
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
 * --7b                the Qwen2-VL-7B shape (Ops-MM-embedding-v1-7B): the
 *                     language model 3584 wide, FFN 18944, 28 heads / 4 KV
 *                     heads, untied lm_head; the same ViT (~16.6 GB in full:
 *                     use it with --header-only for the pack sizes).
 *
 * Writes OUT_DIR/config.json (with a "_note" saying the weights are
 * synthetic), model.safetensors, preprocessor_config.json
 * (Qwen2VLImageProcessor), tokenizer.json (TOKENIZER_JSON, gunzipped when
 * it ends in .gz) and tokenizer_config.json when one lies beside it.
 *
 * Weights: see tools/synth.h (deterministic per tensor name). The
 * embeddings mean nothing; only shapes and speed are real. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "synth.h"

enum { L_FULL = 28, V_FULL = 32, V_DIM = 1280, V_HEADS = 16, V_MLP = 4 * V_DIM, PATCH = 14, MERGE = 2, TPATCH = 2 };

/* the language model: 2B's, or 7B's with --7b (Qwen/Qwen2-VL-7B-Instruct:
 * hidden 3584, 28 heads / 4 KV heads, FFN 18944, vocab 152064, an untied
 * lm_head; the same ViT, its merger projecting to 3584) */
static int HID = 1536, HEADS = 12, KV = 2, HD = 128, FFN = 8960, VOCAB = 151936, TIED = 1;

#define add syn_add
#define D1(a) ((const int64_t[]){a})
#define D2(a, b) ((const int64_t[]){a, b})

static void build_list(int layers, int vis)
{
    add(SYN_WEIGHT, 2, D2(VOCAB, HID), "model.embed_tokens.weight");
    for (int l = 0; l < layers; l++) {
        add(SYN_LN_W, 1, D1(HID), "model.layers.%d.input_layernorm.weight", l);
        add(SYN_WEIGHT, 2, D2(HID, FFN), "model.layers.%d.mlp.down_proj.weight", l);
        add(SYN_WEIGHT, 2, D2(FFN, HID), "model.layers.%d.mlp.gate_proj.weight", l);
        add(SYN_WEIGHT, 2, D2(FFN, HID), "model.layers.%d.mlp.up_proj.weight", l);
        add(SYN_LN_W, 1, D1(HID), "model.layers.%d.post_attention_layernorm.weight", l);
        add(SYN_BIAS, 1, D1(KV * HD), "model.layers.%d.self_attn.k_proj.bias", l);
        add(SYN_WEIGHT, 2, D2(KV * HD, HID), "model.layers.%d.self_attn.k_proj.weight", l);
        add(SYN_WEIGHT, 2, D2(HID, HID), "model.layers.%d.self_attn.o_proj.weight", l);
        add(SYN_BIAS, 1, D1(HID), "model.layers.%d.self_attn.q_proj.bias", l);
        add(SYN_WEIGHT, 2, D2(HID, HID), "model.layers.%d.self_attn.q_proj.weight", l);
        add(SYN_BIAS, 1, D1(KV * HD), "model.layers.%d.self_attn.v_proj.bias", l);
        add(SYN_WEIGHT, 2, D2(KV * HD, HID), "model.layers.%d.self_attn.v_proj.weight", l);
    }
    add(SYN_LN_W, 1, D1(HID), "model.norm.weight");
    if (!TIED)
        add(SYN_WEIGHT, 2, D2(VOCAB, HID), "lm_head.weight");
    for (int l = 0; l < vis; l++) {
        add(SYN_BIAS, 1, D1(V_DIM), "visual.blocks.%d.attn.proj.bias", l);
        add(SYN_WEIGHT, 2, D2(V_DIM, V_DIM), "visual.blocks.%d.attn.proj.weight", l);
        add(SYN_BIAS, 1, D1(3 * V_DIM), "visual.blocks.%d.attn.qkv.bias", l);
        add(SYN_WEIGHT, 2, D2(3 * V_DIM, V_DIM), "visual.blocks.%d.attn.qkv.weight", l);
        add(SYN_BIAS, 1, D1(V_MLP), "visual.blocks.%d.mlp.fc1.bias", l);
        add(SYN_WEIGHT, 2, D2(V_MLP, V_DIM), "visual.blocks.%d.mlp.fc1.weight", l);
        add(SYN_BIAS, 1, D1(V_DIM), "visual.blocks.%d.mlp.fc2.bias", l);
        add(SYN_WEIGHT, 2, D2(V_DIM, V_MLP), "visual.blocks.%d.mlp.fc2.weight", l);
        add(SYN_LN_B, 1, D1(V_DIM), "visual.blocks.%d.norm1.bias", l);
        add(SYN_LN_W, 1, D1(V_DIM), "visual.blocks.%d.norm1.weight", l);
        add(SYN_LN_B, 1, D1(V_DIM), "visual.blocks.%d.norm2.bias", l);
        add(SYN_LN_W, 1, D1(V_DIM), "visual.blocks.%d.norm2.weight", l);
    }
    const int M4 = V_DIM * MERGE * MERGE;
    add(SYN_LN_B, 1, D1(V_DIM), "visual.merger.ln_q.bias");
    add(SYN_LN_W, 1, D1(V_DIM), "visual.merger.ln_q.weight");
    add(SYN_BIAS, 1, D1(M4), "visual.merger.mlp.0.bias");
    add(SYN_WEIGHT, 2, D2(M4, M4), "visual.merger.mlp.0.weight");
    add(SYN_BIAS, 1, D1(HID), "visual.merger.mlp.2.bias");
    add(SYN_WEIGHT, 2, D2(HID, M4), "visual.merger.mlp.2.weight");
    add(SYN_WEIGHT, 5, ((const int64_t[]){V_DIM, 3, TPATCH, PATCH, PATCH}), "visual.patch_embed.proj.weight");
}

/* Qwen/Qwen2-VL-2B-Instruct's config.json, layer counts as written */
static const char *config_fmt =
    "{\n"
    "  \"_note\": \"SYNTHETIC WEIGHTS: deterministic pseudo-random values written by mmembed tools/mkqwen2vl.c "
    "with the shapes of Qwen2-VL-2B or -7B (Ops-MM-embedding-v1). For benchmarks only; the embeddings are "
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
    "  \"tie_word_embeddings\": %s,\n"
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

int main(int argc, char **argv)
{
    syn_tool = "mkqwen2vl";
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
        } else if (!strcmp(argv[i], "--7b")) {
            HID = 3584, HEADS = 28, KV = 4, FFN = 18944, VOCAB = 152064, TIED = 0;
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
                        "[--header-only] [--7b]\n");
        return 2;
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "mkqwen2vl: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (syn_copy_tokenizer(tok, dir))
        return 1;
    char cfg[4096];
    snprintf(cfg, sizeof cfg, config_fmt, L_FULL, V_FULL, HID, FFN, layers, HEADS, layers, KV, TIED ? "true" : "false",
             vis, V_DIM, V_HEADS, HID, PATCH, MERGE, PATCH, TPATCH, VOCAB);
    if (syn_write_text(dir, "config.json", cfg) || syn_write_text(dir, "preprocessor_config.json", preprocessor_json))
        return 1;
    build_list(layers, vis);
    return syn_write_safetensors(dir, "BF16", syn_to_bf16, header_only) ? 1 : 0;
}
