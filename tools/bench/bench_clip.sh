#!/bin/sh
# bench_clip.sh — our C CLIP engine vs ONNX Runtime (f32, CPU) on the same
# ViT-B/32-shaped model, side by side in one run.
#
#   usage (from anywhere): tools/bench/bench_clip.sh
#   knobs (environment):   THREADS=1,2  SECS=3  MIN_RUNS=5  MAX_RUNS=30  GAP_MS=100
#                          DTYPES=f32,bf16,q8,q4  (our dense-layer dtypes, each
#                            timed against the same ORT f32 runs)
#                          OPENBLAS_CORETYPE=...  (reaches our engine only; note
#                            that some sandboxes preset it, e.g. to Haswell)
#                          PY=/usr/bin/python3  (a python3 with torch, for the export)
#                          CLIP_BENCH=path      (prebuilt clip_bench; default: build it)
#
# Steps, each skipped when its output is already there and up to date:
#   1. build/bench/mkclip (tools/mkclip.c) -> models/clip-vit-b32-synthetic
#      (synthetic f16 weights with ViT-B/32 shapes and HF tensor names)
#   2. tools/bench/export_onnx.py (Debian python3-torch) -> models/onnx/
#      clip-vit-b32-synthetic/{text,vision}.onnx, opset 17, dynamic batch
#   3. tools/bench/node_modules (npm ci --ignore-scripts: onnxruntime-node
#      carries its CPU library)
#   4. build/bench/clip_bench (tools/bench/clip_bench.c + src/nn + src/model),
#      always rebuilt
#   5. node tools/bench/ort_bench.js --ours "clip_bench ... --serve":
#      cross-check (cosine >= 0.9999 between the two engines' outputs on the
#      same ids / pixels), then each case alternates one run of ours with one
#      run of ORT until both have MIN_RUNS runs and SECS seconds have passed
#      (or MAX_RUNS), and the table prints medians.
# Cases: ms per image (batch 1, 8), per text (16 and 77 tokens; batch 1, 32).
# Targets (issue 6): f32 <= 1.1x ORT; bf16 <= 1/3 of ORT for images (batch 1
# and 8) and text16 batch 32, <= 1/2 for text77 batch 1.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

THREADS=${THREADS:-1,2}
DTYPES=${DTYPES:-f32,bf16,q8,q4}
SECS=${SECS:-3}
MIN_RUNS=${MIN_RUNS:-5}
MAX_RUNS=${MAX_RUNS:-30}
GAP_MS=${GAP_MS:-100}
MODEL=models/clip-vit-b32-synthetic
ONNX=models/onnx/clip-vit-b32-synthetic
WORK=build/bench/work
PY=${PY:-/usr/bin/python3}   # Debian's, for python3-torch (not a pyenv python3 on PATH)
CLIP_BENCH=${CLIP_BENCH:-}    # a prebuilt clip_bench instead of building one

say() { echo "bench_clip: $*" >&2; }
. tools/bench/lib.sh
mkdir -p build/bench "$WORK" models

# 1. synthetic model
if [ ! -x build/bench/mkclip ] || [ tools/mkclip.c -nt build/bench/mkclip ]; then
    say "building build/bench/mkclip"
    cc -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o build/bench/mkclip tools/mkclip.c -lm
fi
if [ ! -f $MODEL/model.safetensors ] || [ build/bench/mkclip -nt $MODEL/model.safetensors ]; then
    say "writing $MODEL"
    build/bench/mkclip $MODEL tests/fixtures/clip/tokenizer/tokenizer.json >&2
fi

# 2. ONNX export
if [ ! -f $ONNX/vision.onnx ] || [ $MODEL/model.safetensors -nt $ONNX/vision.onnx ] ||
   [ tools/bench/export_onnx.py -nt $ONNX/vision.onnx ]; then
    say "exporting $ONNX"
    bench_export tools/bench/export_onnx.py $MODEL $ONNX
    [ -f $ONNX/vision.onnx ] || { say "export failed"; exit 1; }
fi

# 3. onnxruntime-node
bench_ensure_ort

# 4. our driver, linked against a libmmembed.a that the Makefile builds with
#    its own flags in a separate B= (so parallel `make`s in build/ are not
#    disturbed), and the Makefile's LDLIBS
if [ -n "$CLIP_BENCH" ]; then
    say "using $CLIP_BENCH"
    MMFLAGS="prebuilt"
else
    CLIP_BENCH=build/bench/clip_bench
    bench_build_driver clip_bench
fi

# 5. both, interleaved
OUT=build/bench/last_run.txt
CPU=$(bench_cpu)
bench_run tools/bench/ort_bench.js $ONNX $WORK $CLIP_BENCH $MODEL $OUT image

echo
echo "CLIP ViT-B/32 shape, ORT f32 vs ours in $DTYPES, $(nproc) CPUs ($CPU), load after: $(cut -d' ' -f1-3 /proc/loadavg)"
CORE=$(sed -n 's/^INFO ours READY .* openblas-core //p' $OUT)
echo "ours: mmembed $(git describe --always --dirty 2>/dev/null || echo '?')" \
     "$(git status --porcelain -- src include 2>/dev/null | grep -q . && echo '(src/ or include/ modified) ')" \
     "built with ${MMFLAGS}; GEMM: oneDNN matmul (bf16/q8: brgemm, blocked weights)"
echo "ORT: onnxruntime-node $(bench_ort_version)," \
     "f32, intraOpNumThreads = threads, interOpNumThreads 1, graphOptimizationLevel all"
echo "ms per item, median of the runs; ratio = ours / ORT (medians); target from issue 6 in brackets"
awk -v dts="$DTYPES" '
/^RESULT/ {
    key = $3 " " $4
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
    med[$2 " " key] = $5
}
function target(dt, c) {
    if (dt == "f32") return 1.1
    if (dt != "bf16") return 0
    if (c == "image_b1" || c == "image_b8" || c == "text16_b32") return 1 / 3
    if (c == "text77_b1") return 0.5
    return 0
}
END {
    nd = split(dts, d, ",")
    printf "%-11s %3s %8s", "case", "thr", "ORT"
    for (i = 1; i <= nd; i++) printf " %8s %13s", d[i], "ratio"
    printf "\n"
    for (i = 0; i < n; i++) {
        split(order[i], k, " ")
        r = med["ort " order[i]]
        printf "%-11s %3s %8.2f", k[1], k[2], r
        for (j = 1; j <= nd; j++) {
            o = med["ours-" d[j] " " order[i]]
            ratio = (r > 0) ? o / r : 0
            t = target(d[j], k[1])
            printf " %8.2f %5.2f %7s", o, ratio, t ? sprintf("[%s%.2f]", ratio <= t ? "ok" : "NO", t) : ""
        }
        printf "\n"
    }
}' $OUT
