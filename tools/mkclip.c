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
 * Weights: see tools/synth.h (deterministic per tensor name). The embeddings
 * mean nothing; only shapes and speed are real. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "synth.h"

/* ViT-B/32 */
enum {
    T_DIM = 512, T_HID = 2048, T_LAYERS = 12, T_HEADS = 8, T_VOCAB = 49408, T_POS = 77,
    V_DIM = 768, V_HID = 3072, V_LAYERS = 12, V_HEADS = 12, V_IMG = 224, V_PATCH = 32,
    V_SEQ = (V_IMG / V_PATCH) * (V_IMG / V_PATCH) + 1, PROJ = 512,
};

static void __attribute__((format(printf, 7, 8)))
add(syn_kind_t kind, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3, const char *fmt, ...)
{
    const int64_t d[4] = {d0, d1, d2, d3};
    va_list ap;
    va_start(ap, fmt);
    syn_vadd(kind, ndim, d, fmt, ap);
    va_end(ap);
}

static void add_layers(const char *tower, int layers, int dim, int hid)
{
    for (int l = 0; l < layers; l++) {
        const char *p = tower;
        add(SYN_LN_B, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm1.bias", p, l);
        add(SYN_LN_W, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm1.weight", p, l);
        add(SYN_LN_B, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm2.bias", p, l);
        add(SYN_LN_W, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.layer_norm2.weight", p, l);
        add(SYN_BIAS, 1, hid, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc1.bias", p, l);
        add(SYN_WEIGHT, 2, hid, dim, 0, 0, "%s.encoder.layers.%d.mlp.fc1.weight", p, l);
        add(SYN_BIAS, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.mlp.fc2.bias", p, l);
        add(SYN_WEIGHT, 2, dim, hid, 0, 0, "%s.encoder.layers.%d.mlp.fc2.weight", p, l);
        static const char *proj[] = {"k_proj", "out_proj", "q_proj", "v_proj"};
        for (int i = 0; i < 4; i++) {
            add(SYN_BIAS, 1, dim, 0, 0, 0, "%s.encoder.layers.%d.self_attn.%s.bias", p, l, proj[i]);
            add(SYN_WEIGHT, 2, dim, dim, 0, 0, "%s.encoder.layers.%d.self_attn.%s.weight", p, l, proj[i]);
        }
    }
}

static void build_list(void)
{
    add(SYN_CONST, 0, 0, 0, 0, 0, "logit_scale");
    add(SYN_WEIGHT, 2, T_POS, T_DIM, 0, 0, "text_model.embeddings.position_embedding.weight");
    add(SYN_WEIGHT, 2, T_VOCAB, T_DIM, 0, 0, "text_model.embeddings.token_embedding.weight");
    add_layers("text_model", T_LAYERS, T_DIM, T_HID);
    add(SYN_LN_B, 1, T_DIM, 0, 0, 0, "text_model.final_layer_norm.bias");
    add(SYN_LN_W, 1, T_DIM, 0, 0, 0, "text_model.final_layer_norm.weight");
    add(SYN_WEIGHT, 2, PROJ, T_DIM, 0, 0, "text_projection.weight");
    add(SYN_WEIGHT, 1, V_DIM, 0, 0, 0, "vision_model.embeddings.class_embedding");
    add(SYN_WEIGHT, 4, V_DIM, 3, V_PATCH, V_PATCH, "vision_model.embeddings.patch_embedding.weight");
    add(SYN_WEIGHT, 2, V_SEQ, V_DIM, 0, 0, "vision_model.embeddings.position_embedding.weight");
    add_layers("vision_model", V_LAYERS, V_DIM, V_HID);
    add(SYN_LN_B, 1, V_DIM, 0, 0, 0, "vision_model.post_layernorm.bias");
    add(SYN_LN_W, 1, V_DIM, 0, 0, 0, "vision_model.post_layernorm.weight");
    add(SYN_LN_B, 1, V_DIM, 0, 0, 0, "vision_model.pre_layrnorm.bias");
    add(SYN_LN_W, 1, V_DIM, 0, 0, 0, "vision_model.pre_layrnorm.weight");
    add(SYN_WEIGHT, 2, PROJ, V_DIM, 0, 0, "visual_projection.weight");
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

int main(int argc, char **argv)
{
    syn_tool = "mkclip";
    if (argc != 3) {
        fprintf(stderr, "usage: mkclip OUT_DIR TOKENIZER_JSON\n");
        return 2;
    }
    const char *dir = argv[1], *tok = argv[2];
    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        fprintf(stderr, "mkclip: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (syn_copy_tokenizer(tok, dir))
        return 1;
    if (syn_write_text(dir, "config.json", config_json) ||
        syn_write_text(dir, "preprocessor_config.json", preprocessor_json))
        return 1;
    build_list();
    return syn_write_safetensors(dir, "F16", syn_to_f16, 0) ? 1 : 0;
}
