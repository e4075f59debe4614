#!/bin/sh
# bench_use.sh — Universal Sentence Encoder Lite: our C engine (mm_use_embed)
# vs ONNX Runtime (f32, CPU) on the same weights (models/use-lite, the
# converted TF.js model), sentences/s at batch 1 and 32.
#
#   usage (from anywhere): tools/bench/bench_use.sh
#   knobs (environment):   THREADS=1,2  SECS=3  MIN_RUNS=5  MAX_RUNS=40  GAP_MS=100
#                          PY=/usr/bin/python3  (a python3 with torch, for the export)
#
# Steps, each skipped when its output is already there and up to date:
#   1. tools/bench/export_use.py: models/use-lite rebuilt in PyTorch from
#      model.safetensors (src/model/use.c's graph, op by op) ->
#      models/onnx/use_lite.onnx (input_ids + attention_mask int64 [B, T])
#   2. tools/bench/node_modules (npm ci --ignore-scripts)
#   3. build/bench/use_bench (tools/bench/use_bench.c + libmmembed.a built
#      by the Makefile in B=build/bench/mm with its CFLAGS/LDLIBS), always
#   4. node tools/bench/ort_use_bench.js --ours "use_bench ... --serve":
#      cross-check (32 sentences: our vectors from the texts vs ORT's from
#      one padded batch of the ids mm_use_tokenize gives; cosine >= 0.9999
#      each), then per case one run of ours alternates with one run of ORT
#      until both have MIN_RUNS runs and SECS seconds have passed (or MAX_RUNS).
# Cases: 32 fixed English sentences of 12..21 tokens (mean 15.7); b1 =
# sentence 0 (18 tokens), b32 = all 32 (ORT: one padded batch [32, 21]).
# OUR TIME INCLUDES TOKENIZATION (mm_use_embed takes texts); ORT's does not.
# Threads: mm_use_embed is single-threaded per call, so for ours "threads N"
# splits the batch into N shards embedded concurrently by N persistent
# threads (b1 stays on one thread); for ORT it is intraOpNumThreads.
# Table: sentences/s = batch / median wall time of one batch.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"

THREADS=${THREADS:-1,2}
SECS=${SECS:-3}
MIN_RUNS=${MIN_RUNS:-5}
MAX_RUNS=${MAX_RUNS:-40}
GAP_MS=${GAP_MS:-100}
MODEL=models/use-lite
ONNX=models/onnx/use_lite.onnx
WORK=build/bench/use_work
PY=${PY:-/usr/bin/python3}

say() { echo "bench_use: $*" >&2; }
. tools/bench/lib.sh
mkdir -p build/bench "$WORK" models/onnx

# 1. ONNX export
[ -f $MODEL/model.safetensors ] || { say "$MODEL/model.safetensors missing (tools/use/convert.js)"; exit 1; }
if [ ! -f $ONNX ] || [ tools/bench/export_use.py -nt $ONNX ] || [ $MODEL/model.safetensors -nt $ONNX ]; then
    say "writing $ONNX"
    bench_export tools/bench/export_use.py $MODEL $ONNX
    [ -f $ONNX ] || { say "export failed"; exit 1; }
fi

# 2. onnxruntime-node
bench_ensure_ort

# 3. our driver
USE_BENCH=build/bench/use_bench
bench_build_driver use_bench

# 4. both, interleaved
OUT=build/bench/last_use_run.txt
CPU=$(bench_cpu)
bench_run tools/bench/ort_use_bench.js $ONNX $WORK $USE_BENCH $MODEL $OUT use

echo
echo "USE Lite (models/use-lite), f32, 32 English sentences of 12..21 tokens, $(nproc) CPUs ($CPU), load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours: mmembed $(git describe --always --dirty 2>/dev/null || echo '?') built with ${MMFLAGS}; mm_use_embed on the TEXTS (tokenization included);" \
     "threads N = batch split over N threads (mm_use_embed is single-threaded; b1 runs on one)"
echo "ORT: onnxruntime-node $(bench_ort_version)," \
     "ids from mm_use_tokenize (no tokenizer in its time), b32 one padded batch; intraOpNumThreads = threads, interOpNumThreads 1, graphOptimizationLevel all"
sed -n 's/^CHECK use \([0-9]*\) sentences.* worst /cross-check: cosine ours vs ORT over 32 sentences, worst /p' $OUT
echo "sentences/s from the median batch time (fastest run in parentheses); ratio = ours / ORT sentences/s (>1: ours faster)"
awk '
/^RESULT/ {
    key = $3 " " $4
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
    med[$2 " " key] = $5; mn[$2 " " key] = $8; runs[$2 " " key] = $7
}
END {
    printf "%-14s %7s %20s %20s %7s\n", "case", "threads", "ours sent/s", "ORT sent/s", "ratio"
    for (i = 0; i < n; i++) {
        split(order[i], k, " ")
        o = med["ours " order[i]]; r = med["ort " order[i]]
        printf "%-14s %7s %10.1f (%7.1f) %10.1f (%7.1f) %7.2f\n", "use_" k[1], k[2],
               1000 / o, 1000 / mn["ours " order[i]], 1000 / r, 1000 / mn["ort " order[i]], (o > 0 ? r / o : 0)
    }
}' $OUT
