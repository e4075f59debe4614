/* The registry's pack-size estimate (mm_encoder_pack_bytes, read from the
 * checkpoint headers alone, before any weights are read) against the pack
 * every family really builds, per dtype the CPU can pack: the memory-aware
 * `auto` (issue 20) chooses by it, so it must neither starve a machine
 * (under) nor step down a precision that fits (over). */
#include "check.h"
#include "mmembed/common.h"
#include "mmembed/encoder.h"
#include "mmembed/nn.h"

#define FIX "tests/fixtures"
#define TOKGZ FIX "/qwen3/tokenizer.json.gz"

/* A folder with src's files, gunzipped where stored so, and the Qwen
 * tokenizer the Qwen3 fixture keeps when src has none (as test_qwen2vl). */
static int stage(const char *src, char *dir)
{
    char cmd[1200];
    strcpy(dir, "/tmp/mmembed-reg-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(cmd, sizeof cmd,
             "for f in %s/*; do case $f in *.gz) gzip -dc $f > %s/$(basename $f .gz);; "
             "*) ln -s \"$PWD/$f\" %s/;; esac; done && { [ -e %s/tokenizer.json ] || gzip -dc " TOKGZ
             " > %s/tokenizer.json; }",
             src, dir, dir, dir, dir);
    return system(cmd);
}

/* lo..hi: the ratio estimate / pack allowed. The estimate sizes every
 * checkpoint matrix alone; the text encoders fuse q|k|v and gate|up into
 * one packed matrix, which pads less in oneDNN's 64-column blocks. That is
 * noise at real widths (the ViT-B/32 shape: within 1%) but up to +15% on
 * the 32-wide BERT fixture. */
static void estimate_vs_pack(const char *src, double lo, double hi)
{
    char err[MM_ERRLEN], dir[64], cmd[128];
    if (stage(src, dir)) {
        CHECK(0, "%s: cannot stage it in %s", src, dir);
        return;
    }
    size_t est[MM_DT_COUNT];
    CHECK(mm_encoder_pack_bytes(dir, est, err, sizeof err) == MM_OK, "%s: pack bytes: %s", src, err);
    static const char *names[] = {"f32", "bf16", "q8", "q4"};
    for (size_t d = 0; d < MM_ARRAY_LEN(names); d++) {
        mm_dtype_t dt;
        if (mm_dtype_parse(names[d], &dt) || !mm_nn_dtype_native(dt)) {
            SKIP("%s: %s is not native on this CPU (%s)", src, names[d], mm_nn_cpu()->isa);
            continue;
        }
        mm_encoder_t *e;
        int rc = mm_encoder_load(dir, names[d], &e, err, sizeof err);
        CHECK(rc == MM_OK, "%s as %s: %s", src, names[d], err);
        if (rc)
            continue;
        const size_t real = mm_encoder_info(e)->weight_bytes;
        const double r = (double)est[dt] / (double)real;
        printf("%-40s %-4s estimate %10zu pack %10zu  ratio %.3f\n", src, names[d], est[dt], real, r);
        CHECK(r >= lo && r <= hi, "%s %s: estimate %zu vs pack %zu (ratio %.3f)", src, names[d], est[dt], real, r);
        mm_encoder_free(e);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) { /* best effort */
    }
}

int main(void)
{
    mm_nn_cpu();
#if defined(__SANITIZE_ADDRESS__)
    SKIP("the ViT-B/32 shape under ASan: its four packs take minutes there; the plain build checks it");
#else
    estimate_vs_pack("models/clip-vit-b32-synthetic", 0.99, 1.01); /* made by `make default-model` */
#endif
    estimate_vs_pack(FIX "/clip/clip-tiny", 0.99, 1.02);
    estimate_vs_pack(FIX "/clip/clip-tiny-bf16", 0.99, 1.02);
    estimate_vs_pack(FIX "/bert/bert-tiny", 0.97, 1.20);
    estimate_vs_pack(FIX "/qwen3/qwen3-tiny", 0.99, 1.02);
    estimate_vs_pack(FIX "/qwen2vl/qwen2vl-tiny", 0.99, 1.02);
    estimate_vs_pack(FIX "/qwen2vl/qwen2vl-tiny-v5", 0.99, 1.02);
    return check_summary("test_registry");
}
