#!/bin/sh
# device_executor.sh — the GPU executor (issue 18) on a GPU machine that has
# the CUDA toolkit's libraries (libcudart, libcublas) and Python 3 but none
# of our Debian packages (no nginx either). Two steps:
#
#   tools/bench/device_executor.sh pack [DIR]   (here; DIR defaults to .devin/gpuexec)
#       builds `make GPU=1` build/gpu/mmembed and build/mkclip, and packs into
#       DIR/gpuexec.tar.xz: them and nginx with every shared library they load
#       except CUDA's own (glibc apart, in glibc/), a mini checkout for the
#       integration harness (tests/integration: harness.py, run.py,
#       test_embed.py, test_executor.py, test_executor_gpu.py; the clip
#       fixtures; nginx/ with the template and www/), and run.sh (63.4 MiB with
#       xz -9e on 2026-12-07: the device's transfer limit is 64 MiB; XZ_OPT)
#   sh DIR/run.sh                               (there; DEVICE=cuda:0 by default)
#       runs tests/integration/test_executor_gpu.py through real nginx:
#       fidelity of the GPU executor (f16, bf16) vs Hugging Face and CPU f32,
#       batching across workers, SIGKILLs under load; then JPEG uploads/s and
#       texts/s through nginx, ViT-B/32-shaped model (mkclip) on the GPU
#       executor vs in the workers (SECS=10 per row, WORKERS=nproc).
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
. tools/bench/lib.sh
[ "${1:-}" = pack ] || { echo "usage: $0 pack [DIR]" >&2; exit 2; }
DEST=${2:-.devin/gpuexec}
make -s GPU=1 -j2 build/gpu/mmembed >&2
make -s build/mkclip >&2
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
OUT=build/gpu/pkgexec
rm -rf "$OUT" && mkdir -p "$OUT/lib" "$OUT/glibc" "$OUT/bin" "$OUT/real" "$OUT/tests/integration" "$OUT/tests/fixtures" \
    "$OUT/nginx" "$OUT/build/test"
cp build/gpu/mmembed build/mkclip "$NGINX" "$OUT/real/"
bench_ship_gpu_libs "$OUT" "$OUT/real/mmembed" "$OUT/real/mkclip" "$OUT/real/nginx"
cp tests/integration/harness.py tests/integration/run.py tests/integration/test_embed.py \
   tests/integration/test_executor.py tests/integration/test_executor_gpu.py tests/integration/test_qwen2vl.py \
   "$OUT/tests/integration/"
# (test_executor.py and test_qwen2vl.py for the helpers they share; their
# BERT / Qwen2-VL fixtures stay home: the 64 MiB limit)
mkdir -p "$OUT/tests/fixtures/clip"
cp -rL tests/fixtures/clip/clip-tiny tests/fixtures/clip/images "$OUT/tests/fixtures/clip/"
rm "$OUT/tests/fixtures/clip/images/large2000x1500.jpg"   # 1 MB of JPEG: the limit again
cp tests/fixtures/clip/text_emb.json tests/fixtures/clip/image_emb.json "$OUT/tests/fixtures/clip/"
strip --strip-unneeded "$OUT/real/mmembed" "$OUT/real/mkclip" 2>/dev/null || true
cp -r nginx/www "$OUT/nginx/"
cp nginx/mmembed.conf.in /etc/nginx/fastcgi_params /etc/nginx/mime.types "$OUT/nginx/"
cat > "$OUT/run.sh" <<'RUN'
#!/bin/sh
set -u
D=$(cd "$(dirname "$0")" && pwd)
T=${TMPDIR:-/tmp}/gpuexec; mkdir -p "$T"
[ -x "$D/real/mmembed" ] || { rm -rf "$T/pkg" && mkdir -p "$T/pkg" && tar -xJf "$D/gpuexec.tar.xz" -C "$T/pkg" && D=$T/pkg; } || exit 1
CUDALIB=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -d "$d" ] && CUDALIB="$CUDALIB:$d"
done
if ! ls $(echo "$CUDALIB" | tr ':' ' ') 2>/dev/null | grep -q 'libcublas.so.13'; then  # a pip-installed cuBLAS
    for l in $(find / -xdev -name 'libcublas.so.13' 2>/dev/null | head -n 1); do CUDALIB="$CUDALIB:$(dirname "$l")"; done
fi
# the machine's glibc when it is at least ours (2.36), else ours through our loader;
# the wrappers exec once: mmembed's workers and executors, nginx's workers, are forks
GV=$(ldd --version 2>/dev/null | head -n1 | grep -o '[0-9]*\.[0-9]*$' || echo 0)
for b in mmembed nginx mkclip; do
    if [ "$(printf '%s\n2.36\n' "$GV" | sort -V | head -n1)" = 2.36 ]; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$D/lib$CUDALIB" "$D/real/$b" > "$D/bin/$b"
    else
        printf '#!/bin/sh\nexec %s --library-path %s %s "$@"\n' "$D/glibc/ld-linux-x86-64.so.2" \
            "$D/lib:$D/glibc$CUDALIB" "$D/real/$b" > "$D/bin/$b"
    fi
    chmod +x "$D/bin/$b"
done
ln -sf "$D/bin/mmembed" "$D/build/test/mmembed"
sed -i "s|/etc/nginx/|$D/nginx/|g" "$D/nginx/mmembed.conf.in"
echo "glibc $GV; GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
id www-data >/dev/null 2>&1 || export MMEMBED_AS_ROOT=1
"$D/bin/mkclip" "$T/vitb32" "$D/tests/fixtures/clip/clip-tiny/tokenizer.json" >/dev/null || exit 1
export PATH="$D/bin:$PATH" MMEMBED_BIN="$D/bin/mmembed" MMEMBED_GPU_DEVICE="${DEVICE:-cuda:0}" \
       MMEMBED_GPU_MODEL="$T/vitb32" MMEMBED_BENCH_SECONDS="${SECS:-10}" MMEMBED_BENCH_WORKERS="${WORKERS:-$(nproc)}"
cd "$D" && python3 tests/integration/run.py test_executor_gpu.py; echo "tests exit $?"
RUN
rm -rf "$DEST" && mkdir -p "$DEST"
XZ_OPT=${XZ_OPT:--9e -T0} tar -cJf "$DEST/gpuexec.tar.xz" -C "$OUT" .   # xz: the device's 64 MiB transfer limit
cp "$OUT/run.sh" "$DEST/"
du -sh "$DEST" >&2
echo "device_executor: packed into $DEST; on the GPU machine: sh $DEST/run.sh" >&2
