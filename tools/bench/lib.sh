# Shared steps of tools/bench/bench_{clip,text,use}.sh (sourced; `say` is
# defined by the caller).

# bench_export SCRIPT ARGS...: a tools/bench/export_*.py under $PY, which
# needs torch (Debian python3-torch); exporter noise is filtered out
bench_export() {
    if ! $PY -c 'import torch' 2>/dev/null; then
        say "$PY has no torch: apt-get install -y python3-torch"
        exit 1
    fi
    $PY "$@" 2>&1 | grep -v -e UserWarning -e _jit_pass >&2 || true
}

# for the reports: the CPU's model name, onnxruntime-node's version
bench_cpu() { sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1; }
bench_ort_version() { node -p "require('./tools/bench/node_modules/onnxruntime-node/package.json').version"; }

# onnxruntime-node into tools/bench/node_modules (--ignore-scripts: the CPU
# library ships in the package)
bench_ensure_ort() {
    if [ ! -d tools/bench/node_modules/onnxruntime-node ]; then
        say "installing onnxruntime-node"
        (cd tools/bench && npm ci --ignore-scripts --no-audit --no-fund >&2)
    fi
}

# bench_build_driver NAME: build/bench/NAME from tools/bench/NAME.c, linked
# against a libmmembed.a the Makefile builds with its own flags in a separate
# B= (parallel `make`s in build/ are not disturbed) and the Makefile's LDLIBS.
# Sets MMFLAGS (the optimisation flags used, for the report).
bench_build_driver() {
    say "building build/bench/mm/libmmembed.a and build/bench/$1"
    make -s --no-print-directory B=build/bench/mm build/bench/mm/libmmembed.a >&2
    printf 'bench-print-%%:\n\t@echo $($*)\n' > build/bench/print.mk
    CFLAGS_MM=$(make -s --no-print-directory -f Makefile -f build/bench/print.mk bench-print-CFLAGS | sed 's/ -MMD//; s/ -MP//')
    LDLIBS_MM=$(make -s --no-print-directory -f Makefile -f build/bench/print.mk bench-print-LDLIBS)
    # shellcheck disable=SC2086
    cc $CFLAGS_MM -o build/bench/$1 tools/bench/$1.c build/bench/mm/libmmembed.a $LDLIBS_MM
    MMFLAGS=$(for f in $CFLAGS_MM; do case $f in -O*|-march=*|-mtune=*|-ffast-math|-fno-math-errno) printf '%s ' "$f";; esac; done)
}

# bench_run ORT_SCRIPT ONNX WORK DRIVER MODEL OUT CHECK_LABEL: both engines,
# interleaved; the raw lines go to OUT; fails unless the cross-check passed
# and results came out.
bench_run() {
    say "running (threads $THREADS, >= $MIN_RUNS runs and >= ${SECS}s per case;" \
        "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>}; load: $(cut -d' ' -f1-3 /proc/loadavg))"
    # DTYPES=f32,bf16,q8: our engine once per dtype (RESULT ours-<dtype>)
    node "$1" "$2" "$3" --threads "$THREADS" --secs "$SECS" \
        --min-runs "$MIN_RUNS" --max-runs "$MAX_RUNS" --gap-ms "$GAP_MS" \
        ${DTYPES:+--variants "$DTYPES"} \
        --ours "$4 $5 $3 --serve${DTYPES:+ --dtypes $DTYPES}" | tee "$6" | grep -v '^RESULT' >&2 || true
    if ! grep -q "^CHECK $7" "$6" || grep -q '^CHECK FAILED' "$6" || ! grep -q '^RESULT' "$6"; then
        say "failed (see $6)"
        exit 1
    fi
}

# bench_ship_gpu_libs OUT BIN...: every shared library the BINs load, for a
# GPU machine that has CUDA but none of our Debian packages: glibc's own
# into OUT/glibc (with what libcuda may ask it for), the rest into OUT/lib;
# CUDA's libraries are left to the machine
bench_ship_gpu_libs() {
    _out=$1
    shift
    for _b in "$@"; do
        ldd "$_b" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r _l; do
            case $(basename "$_l") in
            libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*) ;;
            libc.so*|libm.so*|libmvec.so*|ld-linux*|libpthread.so*|libdl.so*|librt.so*) cp -L "$_l" "$_out/glibc/" ;;
            *) cp -L "$_l" "$_out/lib/" ;;
            esac
        done
    done
    for _l in libpthread.so.0 libdl.so.2 librt.so.1; do
        [ -e "/lib/x86_64-linux-gnu/$_l" ] && cp -L "/lib/x86_64-linux-gnu/$_l" "$_out/glibc/"
    done
    return 0
}
