#!/bin/sh
# device_clip.sh — the CLIP dtype benchmark on another x86-64 machine that
# has Python with torch and onnxruntime but none of our Debian packages
# (e.g. the device host, whose CPU may have AMX). Two steps:
#
#   tools/bench/device_clip.sh pack   (here)  -> .devin/clipbench/: clip_bench built here and every
#                                                shared library it loads (glibc and the loader too),
#                                                text_bench, mkclip, the CLIP tokenizer, export_onnx.py,
#                                                export_bert.py, ort_bench.py
#   sh .devin/clipbench/run.sh        (there) -> writes the ViT-B/32-shaped synthetic model with mkclip,
#                                                exports it to ONNX with torch, times our engine in f32,
#                                                bf16 and q8 and ONNX Runtime f32 on the same inputs,
#                                                alternating runs (THREADS=1,2 by default), prints
#                                                RESULT lines
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=.devin/clipbench
say() { echo "device_clip: $*" >&2; }
[ "${1:-}" = pack ] || { echo "usage: $0 pack" >&2; exit 2; }
. tools/bench/lib.sh
mkdir -p build/bench
bench_build_driver clip_bench
bench_build_driver text_bench
rm -rf $OUT && mkdir -p $OUT/lib
cp build/bench/clip_bench build/bench/text_bench $OUT/
cc -O2 -std=c11 -D_GNU_SOURCE -o $OUT/mkclip tools/mkclip.c -lm
for b in $OUT/clip_bench $OUT/text_bench $OUT/mkclip; do
    ldd $b | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r l; do cp -L "$l" $OUT/lib/; done
done
cp tests/fixtures/clip/tokenizer/tokenizer.json tools/bench/export_onnx.py tools/bench/export_bert.py tools/bench/safetensors_io.py \
   tools/bench/ort_bench.py $OUT/
cat > $OUT/run.sh <<'RUN'
#!/bin/sh
set -eu
D=$(cd "$(dirname "$0")" && pwd)
T=${TMPDIR:-/tmp}/clipbench; mkdir -p $T/work
L="$D/lib/ld-linux-x86-64.so.2 --library-path $D/lib"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); flags: $(grep -m1 -o -w 'amx_bf16\|amx_int8\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
$L $D/mkclip $T/model $D/tokenizer.json >/dev/null
python3 $D/export_onnx.py $T/model $T/onnx >/dev/null
python3 $D/ort_bench.py $T/onnx $T/work --threads ${THREADS:-1,2} --secs ${SECS:-2} --variants f32,bf16,q8 \
    --ours "$L $D/clip_bench $T/model $T/work --serve --dtypes f32,bf16,q8"
# the all-MiniLM-L6-v2 shape (tools/bench/export_bert.py), text_bench's cases
mkdir -p $T/twork
python3 $D/export_bert.py $T/minilm $T/minilm.onnx >/dev/null 2>&1
python3 $D/ort_bench.py --text $T/minilm.onnx $T/twork --threads ${THREADS:-1,2} --secs ${SECS:-2} \
    --variants f32,bf16,q8 --ours "$L $D/text_bench $T/minilm $T/twork --serve --dtypes f32,bf16,q8"
RUN
du -sh $OUT >&2
say "packed into $OUT; on the other machine: sh $OUT/run.sh"
