#!/bin/sh
# device_cpu.sh — our engine against ONNX Runtime dynamic int8 and PyTorch
# bf16 on another x86-64 machine's CPU (the device host: 16 Sapphire Rapids
# cores with AMX, Python 3 with torch, transformers, onnxruntime, numpy, but
# none of our Debian packages, no network, 600 s a command). The numbers of
# issues 17 (thread scaling, text rows vs peers), 16 (the Ops-MM-2B shape vs
# PyTorch) and 20 (pack size and speed per dtype). Two steps:
#
#   tools/bench/device_cpu.sh pack [DIR]   (here; DIR defaults to .devin/cpubench, git-ignored)
#       builds clip_bench, text_bench, qwen2vl_bench (the Makefile's flags,
#       tools/bench/lib.sh), mkclip and mkqwen2vl, and packs them with every
#       shared library they load (glibc and its loader too) into
#       DIR/cpubench.tar.xz beside run.sh and the Python scripts (cpu_bench.py,
#       cpu_summary.py, export_onnx.py, export_bert.py, safetensors_io.py) and
#       the CLIP and Qwen tokenizers. Models are generated there, not shipped
#       (the transfer limit is 64 MiB; the pack is ~19 MB). ORT int8 quantizes
#       MatMul/Attention only: ORT has no ConvInteger for int8 weights, so
#       CLIP's patch-embedding Conv stays f32 there.
#   sh DIR/run.sh SECTION...               (there, from anywhere)
#
# Sections (each prints RESULT / FULL / CHECK / PACK lines as it goes and a
# compact table at its end; estimated wall time on the 16-core host,
# model generation included when the machine is fresh):
#   A    issue 17 thread scaling, THREADS (default 1,2,4,8,16): ours bf16 and
#        q8, ort-int8 (quantize_dynamic per_channel QInt8), torch-bf16, runs
#        alternating. Parts: Aclip (ViT-B/32 images batch 8, CLIP 16-token
#        texts batch 32, 77-token texts batch 1 and 32), Amini (the MiniLM
#        shape, 16-token texts batch 32 and 1), Allm (a Qwen2-VL-2B-shape
#        decoder forward over 1,024 tokens, timed on a 2-layer cut of the
#        28: times per layer scale alike; x14 for the full depth;
#        LLM_LAYERS=N times another cut, up to 28, without ORT past ~10
#        layers: protobuf's 2 GB).  Aclip ~2 min, Amini ~1, Allm ~1.5: ~4-5 min
#   B    issue 16 at 16 threads (THREADS default 16): the full Ops-MM-2B
#        shape (mkqwen2vl, 4.4 GB), ms per 32-token text and per image at 256
#        and 1280 visual tokens, ours bf16/q8 (DTYPES=f32,bf16,q8 adds f32,
#        ~+1.5 min) vs torch-bf16 (transformers' Qwen2VLForConditionalGeneration
#        on the same folder and weights, last-token pooling).           ~3-4 min
#   B1   the same at 1 thread (THREADS default 1): every engine timed on
#        1- and 2-layer cuts of the shape and extrapolated to 28 decoder
#        layers and 32 vision blocks (the full shape takes ~1 min an image
#        at one thread). Thread counts below FULL_MIN_THREADS (8) are
#        always extrapolated, the others measured on the full shape.      ~2-3 min
#   C    issue 20, ours only, THREADS (default 1,16): pack size and ms per
#        item for f32/bf16/q8/q4 (DTYPES) on the ViT-B/32 shape (Cclip:
#        clip_bench's six cases), the MiniLM shape (Cmini) and the 2B shape
#        (Cqwen: text32 and image256, QCASES; 1 thread extrapolated from
#        the cuts, 16 measured on the full shape; header-estimated packs).
#        Cclip ~1.5 min, Cmini ~0.5, Cqwen ~3 (+1 when the models are not
#        there yet from A/B/B1 on the same warm machine)               ~5 min
#   all  A B B1 C in turn (over 600 s: for a machine without that limit)
# e.g. sh .devin/cpubench/run.sh A;  sh .devin/cpubench/run.sh B;  THREADS=1,16 sh .devin/cpubench/run.sh Aclip
# The durations are estimates (nothing here was run on that machine); a
# section that risks the 600 s limit can go as its parts in separate calls
# (the logs in $OUT come back even from a call that was cut off). The
# device's run tool copies only tracked files: give it carry
# [".devin/cpubench"].
#
# Environment: THREADS (see above), SECS (seconds a case keeps going, at
# least RUNS rounds, at most MAXRUNS; A and C: 0.5 / 3 / 15; B: 0 / 3),
# DTYPES (A, B: bf16,q8; C: f32,bf16,q8,q4), QCASES, PY (python3), OUT
# (logs and tables land there: the device's $OUT comes back), CPUBENCH_TMP
# (models and work files, default ${TMPDIR:-/tmp}/cpubench: kept, so a warm
# machine does not make them again), QFULL_LAYERS (a cut-down "full" model,
# for testing the flow on a small machine).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
say() { echo "device_cpu: $*" >&2; }
[ "${1:-}" = pack ] || { echo "usage: $0 pack [DIR]" >&2; exit 2; }
DEST=${2:-.devin/cpubench}
. tools/bench/lib.sh
mkdir -p build/bench
bench_build_driver clip_bench
bench_build_driver text_bench
bench_build_driver qwen2vl_bench
STAGE=build/bench/cpubench
rm -rf "$STAGE" && mkdir -p "$STAGE/lib"
cp build/bench/clip_bench build/bench/text_bench build/bench/qwen2vl_bench "$STAGE/"
cc -O2 -std=c11 -D_GNU_SOURCE -o "$STAGE/mkclip" tools/mkclip.c -lm
cc -O2 -std=c11 -D_GNU_SOURCE -o "$STAGE/mkqwen2vl" tools/mkqwen2vl.c -lm
for b in clip_bench text_bench qwen2vl_bench mkclip mkqwen2vl; do
    ldd "$STAGE/$b" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r l; do cp -L "$l" "$STAGE/lib/"; done
done
cp tests/fixtures/clip/tokenizer/tokenizer.json "$STAGE/clip-tokenizer.json"
mkdir -p "$STAGE/qwen-tok"
cp tests/fixtures/qwen3/tokenizer.json.gz tests/fixtures/qwen3/tokenizer_config.json "$STAGE/qwen-tok/"
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src include tools || echo +dirty) built $(date -u +%FT%TZ) flags $MMFLAGS" \
    > "$STAGE/VERSION"
rm -rf "$DEST" && mkdir -p "$DEST"
XZ_OPT=${XZ_OPT:--3 -T0} tar -cJf "$DEST/cpubench.tar.xz" -C "$STAGE" .
cp tools/bench/cpu_bench.py tools/bench/cpu_summary.py tools/bench/export_onnx.py tools/bench/export_bert.py \
   tools/bench/safetensors_io.py tools/bench/device_cpu_run.sh "$DEST/"
mv "$DEST/device_cpu_run.sh" "$DEST/run.sh"
du -sh "$DEST" >&2
say "packed $(cat "$STAGE/VERSION") into $DEST; on the other machine: sh $DEST/run.sh A|B|B1|C"
