#!/bin/sh
# device_gpu.sh — the CUDA backend's checks (CLIP; BERT, Qwen3, Qwen2-VL)
# and the CLIP benchmark on a GPU
# machine that has the CUDA toolkit (libcudart, libcublas) and Python with
# torch + transformers but none of our Debian packages. Two steps:
#
#   tools/bench/device_gpu.sh pack [DIR]   (here; DIR defaults to .devin/gpuclip)
#       builds `make GPU=1` gpu_clip, gpu_models and mkclip, and packs into
#       DIR/gpuclip.tar.xz them with every shared library they load except
#       CUDA's own (glibc apart, in glibc/), the clip-tiny fixtures, the
#       bert/qwen3/qwen2vl fixtures (fix/models), the CLIP tokenizer and
#       torch_clip.py (xz: the device's 64 MiB transfer limit)
#   sh DIR/run.sh                          (there; OUT=folder for the detail files)
#       fidelity on clip-tiny (f16, bf16, tf32 vs the HF references and
#       our CPU f32), the same for bert-tiny, qwen3-tiny and qwen2vl-tiny
#       (gpu_models: cosine per fixture vector, exit 1 below 0.999), then the ViT-B/32-shaped synthetic model (mkclip):
#       GPU vs CPU vectors and ms per batch, then PyTorch eager beside it
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tools/bench/lib.sh
[ "${1:-}" = pack ] || { echo "usage: $0 pack [DIR]" >&2; exit 2; }
DEST=${2:-.devin/gpuclip}
make -s GPU=1 -j2 build/gpu/bench/gpu_clip build/gpu/bench/gpu_models >&2
make -s build/mkclip >&2
OUT=build/gpu/pkg
rm -rf "$OUT" && mkdir -p "$OUT/lib" "$OUT/glibc" "$OUT/fix/pixels"
cp build/gpu/bench/gpu_clip build/gpu/bench/gpu_models build/mkclip "$OUT/"
bench_ship_gpu_libs "$OUT" "$OUT/gpu_clip" "$OUT/gpu_models" "$OUT/mkclip"
cp -r tests/fixtures/clip/clip-tiny "$OUT/fix/"
cp tests/fixtures/clip/text_emb.json tests/fixtures/clip/image_emb.json "$OUT/fix/"
cp tests/fixtures/clip/pixels/*.f16 "$OUT/fix/pixels/"
mkdir -p "$OUT/fix/models/bert" "$OUT/fix/models/qwen3" "$OUT/fix/models/qwen2vl"
cp -r tests/fixtures/bert/bert-tiny tests/fixtures/bert/bert_ref.json "$OUT/fix/models/bert/"
cp -r tests/fixtures/qwen3/qwen3-tiny tests/fixtures/qwen3/qwen3_ref.json tests/fixtures/qwen3/tokenizer.json.gz \
    "$OUT/fix/models/qwen3/"
cp -r tests/fixtures/qwen2vl/qwen2vl-tiny tests/fixtures/qwen2vl/ref.json tests/fixtures/qwen2vl/images \
    "$OUT/fix/models/qwen2vl/"
cp tests/fixtures/clip/tokenizer/tokenizer.json tools/bench/torch_clip.py "$OUT/"
cat > "$OUT/run.sh" <<'RUN'
#!/bin/sh
set -u
D=$(cd "$(dirname "$0")" && pwd)
T=${TMPDIR:-/tmp}/gpuclip; mkdir -p "$T"
O=${OUT:-$T}
[ -x "$D/gpu_clip" ] || { mkdir -p "$T/pkg" && tar -xJf "$D/gpuclip.tar.xz" -C "$T/pkg" && D=$T/pkg; } || exit 1
CUDALIB=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -d "$d" ] && CUDALIB="$CUDALIB:$d"
done
if ! ls $(echo "$CUDALIB" | tr ':' ' ') 2>/dev/null | grep -q 'libcublas.so.13'; then  # a pip-installed cuBLAS
    for l in $(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -n 1); do CUDALIB="$CUDALIB:$(dirname "$l")"; done
fi
echo "CUDA libraries from: $CUDALIB"
# the machine's glibc when it is at least ours (2.36: libcuda then loads
# with its own), else ours through our loader
GV=$(ldd --version 2>/dev/null | head -n1 | grep -o '[0-9]*\.[0-9]*$' || echo 0)
if [ "$(printf '%s\n2.36\n' "$GV" | sort -V | head -n1)" = 2.36 ]; then
    L="env LD_LIBRARY_PATH=$D/lib$CUDALIB"  # not for python3 below
else
    L="$D/glibc/ld-linux-x86-64.so.2 --library-path $D/lib:$D/glibc$CUDALIB"
fi
echo "glibc $GV; GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
env LD_LIBRARY_PATH="$D/lib$CUDALIB" ldd "$D/gpu_clip" | grep -i 'not found\|cublas\|cudart'

$L "$D/gpu_clip" --threads "$(nproc)" --out "$O/fidelity.txt" fidelity "$D/fix"; rc=$?; echo "fidelity exit $rc"
if [ $rc != 0 ] && command -v compute-sanitizer >/dev/null; then  # what went wrong, where
    $L compute-sanitizer --print-limit 5 "$D/gpu_clip" --dtypes f16 fidelity "$D/fix" 2>&1 | tail -n 40
fi
$L "$D/gpu_models" --out "$O/fidelity_models.txt" "$D/fix/models"; rm=$?; echo "gpu_models exit $rm"
if [ $rm != 0 ] && command -v compute-sanitizer >/dev/null; then
    $L compute-sanitizer --print-limit 5 "$D/gpu_models" --dtypes f16 "$D/fix/models" 2>&1 | tail -n 40
fi
$L "$D/mkclip" "$T/model" "$D/tokenizer.json" >/dev/null || exit 1
$L "$D/gpu_clip" --threads "$(nproc)" --dtypes f16,bf16 --secs "${SECS:-0.5}" bench "$T/model"; echo "bench exit $?"
PYTHONUNBUFFERED=1 python3 "$D/torch_clip.py" "$T/model" --secs "${SECS:-0.5}" 2>&1 | grep -v Warning
RUN
rm -rf "$DEST" && mkdir -p "$DEST"
tar -cJf "$DEST/gpuclip.tar.xz" -C "$OUT" .
cp "$OUT/run.sh" "$DEST/"
du -sh "$DEST" >&2
echo "device_gpu: packed into $DEST; on the GPU machine: sh $DEST/run.sh" >&2
