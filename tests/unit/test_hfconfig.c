/* Unit tests for the Hugging Face config reader (mmembed/hfconfig.h): typed
 * getters, defaults of absent keys and absent sub-objects, and the one
 * error format "file: where.key: what is wrong"; that the registry
 * reports a bad config.json key that way for every architecture, and the
 * image preprocessor a bad preprocessor_config.json key. Run from the
 * repository root. */
#include "mmembed/hfconfig.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/preprocess.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmp[] = "/tmp/mmembed-cfg-XXXXXX";

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    return path;
}

static void test_getters(void)
{
    char err[MM_ERRLEN] = "";
    mm_cfg_file_t *f;
    const char *path = write_file("config.json",
        "{\"hidden_size\": 64, \"eps\": 1e-6, \"bad\": \"x\", \"neg\": -3, \"big\": 10000000000,"
        " \"eos_token_id\": [7, 8], \"mrope\": [1, 2, 3], \"arch\": [\"BertModel\"], \"flag\": true,"
        " \"text_config\": {\"layers\": 2.5, \"inner\": {\"n\": 1}}, \"nul\": null}");
    int rc = mm_cfg_open(path, &f, err, sizeof err);
    CHECK(rc == MM_OK, "open: %s", err);
    if (rc)
        return;
    const mm_cfg_t root = mm_cfg_root(f);
    int v = 0;
    double d = 0;
    CHECK(mm_cfg_size(&root, "hidden_size", &v, err, sizeof err) == MM_OK && v == 64, "size");
    CHECK(mm_cfg_pos(&root, "absent", 12, &v, err, sizeof err) == MM_OK && v == 12, "default");
    CHECK(mm_cfg_pos(&root, "nul", 5, &v, err, sizeof err) == MM_OK && v == 5, "null is absent");
    char want[512];
    rc = mm_cfg_size(&root, "bad", &v, err, sizeof err);
    snprintf(want, sizeof want, "%s: bad: not an integer", path);
    CHECK(rc == MM_E_INVALID && !strcmp(err, want), "not an integer: %s", err);
    rc = mm_cfg_size(&root, "missing", &v, err, sizeof err);
    snprintf(want, sizeof want, "%s: missing: missing", path);
    CHECK(rc == MM_E_INVALID && !strcmp(err, want), "required: %s", err);
    rc = mm_cfg_pos(&root, "neg", 1, &v, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, ": neg: -3 out of range [1, "), "range: %s", err);
    rc = mm_cfg_int(&root, "big", 0, -5, 5, &v, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "big: 10000000000 out of range [-5, 5]"), "int64: %s", err);
    CHECK(mm_cfg_num(&root, "eps", 1, &d, err, sizeof err) == MM_OK && d == 1e-6, "num");
    CHECK(mm_cfg_num(&root, "hidden_size", 1, &d, err, sizeof err) == MM_OK && d == 64, "an int is a number");
    CHECK(mm_cfg_num(&root, "neg", 1, &d, err, sizeof err) == MM_E_INVALID && strstr(err, "neg: must be positive"),
          "positive: %s", err);
    CHECK(mm_cfg_first_int(&root, "eos_token_id", -1) == 7, "first of an array");
    CHECK(mm_cfg_first_int(&root, "hidden_size", -1) == 64 && mm_cfg_first_int(&root, "bad", -1) == -1, "first int");
    int three[3] = {0};
    CHECK(mm_cfg_ints(&root, "mrope", three, 3, err, sizeof err) == MM_OK && three[2] == 3, "ints");
    CHECK(mm_cfg_ints(&root, "mrope", three, 2, err, sizeof err) == MM_E_INVALID && strstr(err, "mrope: must list 2"),
          "ints count: %s", err);
    CHECK(mm_cfg_ints(&root, "absent", three, 3, err, sizeof err) == MM_E_NOTFOUND, "ints absent");
    CHECK(!strcmp(mm_cfg_str0(&root, "arch"), "BertModel") && !mm_cfg_str(&root, "hidden_size"), "strings");
    CHECK(mm_cfg_bool(&root, "flag") && !mm_cfg_bool(&root, "absent") && mm_cfg_has(&root, "flag") &&
          !mm_cfg_has(&root, "nul"), "bool / has");

    mm_cfg_t tc, in, none;
    CHECK(mm_cfg_sub(&root, "text_config", &tc) == 1 && mm_cfg_sub(&tc, "inner", &in) == 1, "sub");
    rc = mm_cfg_size(&tc, "layers", &v, err, sizeof err);
    snprintf(want, sizeof want, "%s: text_config.layers: not an integer", path);
    CHECK(rc == MM_E_INVALID && !strcmp(err, want), "where: %s", err);
    CHECK(mm_cfg_size(&in, "n", &v, err, sizeof err) == MM_OK && v == 1, "nested");
    CHECK(mm_cfg_errf(&in, "n", err, sizeof err, MM_E_UNSUPPORTED, "odd %d", 1) == MM_E_UNSUPPORTED &&
          strstr(err, ": text_config.inner.n: odd 1"), "errf: %s", err);
    /* an absent sub-object: its getters give defaults, and errors still name it */
    CHECK(mm_cfg_sub(&root, "vision_config", &none) == 0 && mm_cfg_pos(&none, "depth", 9, &v, err, sizeof err) == 0 &&
          v == 9, "absent view default");
    CHECK(mm_cfg_size(&none, "depth", &v, err, sizeof err) == MM_E_INVALID && strstr(err, "vision_config.depth: missing"),
          "absent view required: %s", err);
    CHECK(mm_cfg_sub(&root, "hidden_size", &none) == 0, "a number is no object");
    mm_cfg_close(f);

    CHECK(mm_cfg_open(write_file("a.json", "[1, 2]"), &f, err, sizeof err) == MM_E_INVALID && strstr(err, "not a JSON object"),
          "array for object: %s", err);
    CHECK(mm_cfg_open_array(write_file("a.json", "[1, 2]"), &f, err, sizeof err) == MM_OK, "array");
    mm_cfg_close(f);
    CHECK(mm_cfg_open(write_file("b.json", "{\"a\": "), &f, err, sizeof err) == MM_E_INVALID, "truncated");
    CHECK(mm_cfg_open_in(tmp, "nope.json", &f, err, sizeof err) == MM_E_NOTFOUND && strstr(err, "nope.json"),
          "missing file: %s", err);
}

static void test_parse_and_preproc(void)
{
    char err[MM_ERRLEN] = "";
    mm_cfg_file_t *f;
    static const char good[] = "{\"a\": {\"b\": 3}}";
    CHECK(mm_cfg_parse("mem", good, sizeof good - 1, &f, err, sizeof err) == MM_OK, "parse: %s", err);
    if (f) {
        const mm_cfg_t r = mm_cfg_root(f);
        mm_cfg_t a;
        int v = 0;
        CHECK(mm_cfg_sub(&r, "a", &a) && mm_cfg_size(&a, "b", &v, err, sizeof err) == MM_OK && v == 3, "parsed");
        CHECK(mm_cfg_get(&r, "a") && !mm_cfg_get(&r, "zz"), "get");
        mm_cfg_close(f);
    }
    CHECK(mm_cfg_parse("mem", "{\"a\": ", 6, &f, err, sizeof err) == MM_E_INVALID && strstr(err, "mem: not valid JSON"),
          "truncated: %s", err);
    CHECK(mm_cfg_parse("mem", "[1]", 3, &f, err, sizeof err) == MM_E_INVALID && strstr(err, "mem: not a JSON object"),
          "array: %s", err);
    CHECK(mm_cfg_parse("mem", "", 0, &f, err, sizeof err) == MM_E_INVALID, "empty");

    /* the preprocessor's keys report through the same format */
    mm_preproc_t p;
    static const char bad[] = "{\"size\": {\"shortest_edge\": -1}}";
    int rc = mm_preproc_parse(bad, sizeof bad - 1, &p, err, sizeof err);
    CHECK(rc == MM_E_INVALID && !strcmp(err, "preprocessor config: size.shortest_edge: must be an integer in [1, 16384]"),
          "preprocessor key: %d %s", rc, err);
    static const char crop[] = "{\"crop_size\": {\"height\": 224.0, \"width\": 0}}";
    rc = mm_preproc_parse(crop, sizeof crop - 1, &p, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, ": crop_size.width: must be an integer in [1, "), "nested: %d %s", rc, err);
    static const char q[] = "{\"image_processor_type\": \"Qwen2VLImageProcessor\", \"min_pixels\": 9, \"max_pixels\": 4}";
    rc = mm_preproc_parse(q, sizeof q - 1, &p, err, sizeof err);
    CHECK(rc == MM_E_INVALID && strstr(err, "min_pixels: 9 > max_pixels 4"), "qwen2vl: %d %s", rc, err);
    const char *path = write_file("preprocessor_config.json", "{\"image_std\": [1, 0, 1]}");
    char want[300];
    snprintf(want, sizeof want, "%s: image_std: must not be 0", path);
    rc = mm_preproc_load(path, &p, err, sizeof err);
    CHECK(rc == MM_E_INVALID && !strcmp(err, want), "file name in the error: %d %s", rc, err);
}

/* A fixture folder whose config.json has one edit: the registry's load
 * must fail with "<dir>/config.json: <where.key>: ...". */
static void expect_cfg_error(const char *fixture, const char *from, const char *to, const char *want)
{
    char cwd[512], path[1024], src[1280];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "getcwd");
    static const char *files[] = {"model.safetensors", "tokenizer.json", "preprocessor_config.json"};
    for (size_t i = 0; i < MM_ARRAY_LEN(files); i++) {
        snprintf(src, sizeof src, "%s/%s/%s", cwd, fixture, files[i]);
        snprintf(path, sizeof path, "%s/%s", tmp, files[i]);
        unlink(path);
        if (access(src, F_OK) == 0)
            CHECK(symlink(src, path) == 0, "symlink %s", files[i]);
    }
    snprintf(src, sizeof src, "%s/config.json", fixture);
    FILE *f = fopen(src, "r");
    static char cfg[65536];
    size_t n = f ? fread(cfg, 1, sizeof cfg - 1, f) : 0;
    if (f)
        fclose(f);
    cfg[n] = 0;
    char *at = strstr(cfg, from);
    CHECK(at != NULL, "%s: config has %s", fixture, from);
    if (!at)
        return;
    snprintf(path, sizeof path, "%s/config.json", tmp);
    f = fopen(path, "w");
    if (f) {
        fprintf(f, "%.*s%s%s", (int)(at - cfg), cfg, to, at + strlen(from));
        fclose(f);
    }
    char err[MM_ERRLEN] = "", full[1400];
    mm_encoder_t *e = NULL;
    int rc = mm_encoder_load(tmp, "f32", &e, err, sizeof err);
    snprintf(full, sizeof full, "%s/config.json: %s", tmp, want);
    CHECK(rc != MM_OK && !e && strstr(err, full), "%s (%s): rc %d, \"%s\", want \"%s\"", fixture, to, rc, err, full);
    mm_encoder_free(e);
}

int main(void)
{
    if (!mkdtemp(tmp)) {
        CHECK(0, "mkdtemp");
        return check_summary("test_hfconfig");
    }
    test_getters();
    test_parse_and_preproc();
    expect_cfg_error("tests/fixtures/clip/clip-tiny", "\"hidden_size\": 32", "\"hidden_size\": \"32\"",
                     "text_config.hidden_size: not an integer");
    expect_cfg_error("tests/fixtures/bert/bert-tiny", "\"hidden_act\": \"gelu\"", "\"hidden_act\": \"mish\"",
                     "hidden_act: \"mish\" not supported");
    expect_cfg_error("tests/fixtures/qwen3/qwen3-tiny", "\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3",
                     "num_attention_heads: 2 not a multiple of num_key_value_heads 3");
    expect_cfg_error("tests/fixtures/qwen2vl/qwen2vl-tiny", "\"depth\": 2", "\"depth\": 0",
                     "vision_config.depth: 0 out of range");
    static const char *rm[] = {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
                               "a.json", "b.json"};
    for (size_t i = 0; i < MM_ARRAY_LEN(rm); i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", tmp, rm[i]);
        unlink(p);
    }
    rmdir(tmp);
    return check_summary("test_hfconfig");
}
