#!/bin/sh
# word splitting of $L, $PY and $(run_opts ...) is meant
# shellcheck disable=SC2046,SC2086
# run.sh of the payload that tools/bench/device_cpu.sh packs (see its
# header for the sections, their durations and the environment):
#   sh run.sh A | Aclip | Amini | Allm | B | B1 | C | Cclip | Cmini | Cqwen | all  [more sections]
set -u
D=$(cd "$(dirname "$0")" && pwd)
T=${CPUBENCH_TMP:-${TMPDIR:-/tmp}/cpubench}
O=${OUT:-$T/out}
PY=${PY:-python3}
mkdir -p "$T" "$O" || exit 1
[ $# -gt 0 ] || { sed -n '4,6p' "$0"; exit 2; }
START=$(date +%s)
P=$T/pkg
rm -rf "$P" && mkdir -p "$P" || exit 1
tar -xJf "$D/cpubench.tar.xz" -C "$P" 2>/dev/null ||  # no xz there: Python's lzma
    $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$D/cpubench.tar.xz" "$P" || exit 1
L="$P/lib/ld-linux-x86-64.so.2 --library-path $P/lib"
export TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTHONWARNINGS=ignore
echo "cpubench $(cat "$P/VERSION")"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) CPUs; flags: $(grep -m1 -o -w 'amx_bf16\|amx_int8\|avx512_bf16\|avx512_vnni' /proc/cpuinfo | sort -u | tr '\n' ' ')"
echo "memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GB, " $7 " GB available"}'); work in $T; logs in $O"

# step SECTION NAME CMD...: CMD's output into $O/SECTION.log, the lines that
# matter on stdout as they come, then its exit status and time
step() {
    sec=$1 name=$2
    shift 2
    t0=$(date +%s)
    echo "== $name ($(date -u +%T), $((t0 - START)) s in)"
    { "$@" 2>&1; echo "STEP $name rc=$?"; } | tee -a "$O/$sec.log" |
        grep -E '^(RESULT|FULL|FULLPART|CHECK|SKIP|INFO|PACK|STEP|READY)|PACK |FIDELITY|WARN|rror|Traceback|Killed|loaded in'
    echo "== $name: $(($(date +%s) - t0)) s"
}

# models and exports, made once per machine (kept in $T)
gen() {  # gen DIR CMD...: CMD writes DIR.tmp, which becomes DIR
    dir=$1
    shift
    [ -e "$dir/.done" ] && return 0
    rm -rf "$dir" "$dir.tmp"
    t0=$(date +%s)
    "$@" >>"$O/gen.log" 2>&1 || { echo "FAILED: $* (see $O/gen.log)"; tail -n 20 "$O/gen.log"; return 1; }
    [ -d "$dir.tmp" ] && mv "$dir.tmp" "$dir"
    mkdir -p "$dir" && touch "$dir/.done"
    echo "made $dir in $(($(date +%s) - t0)) s"
}
QTOK=$P/qwen-tok/tokenizer.json.gz
clip_model() { gen "$T/clip" $L "$P/mkclip" "$T/clip.tmp" "$P/clip-tokenizer.json"; }
clip_onnx() { clip_model && gen "$T/clip-onnx" $PY "$D/export_onnx.py" "$T/clip" "$T/clip-onnx.tmp"; }
minilm() { gen "$T/minilm" $PY "$D/export_bert.py" "$T/minilm.tmp" "$T/minilm.tmp/minilm.onnx"; }
qwen() {  # qwen NAME [mkqwen2vl options]
    n=$1
    shift
    gen "$T/$n" $L "$P/mkqwen2vl" "$T/$n.tmp" "$QTOK" "$@"
}
qfull() { if [ -n "${QFULL_LAYERS:-}" ]; then qwen qfull --layers "$QFULL_LAYERS"; else qwen qfull; fi; }

SECS_AC=${SECS:-0.5}
RUNS_AC=${RUNS:-3}
MAXRUNS=${MAXRUNS:-15}
run_opts() { echo "--secs $1 --min-runs $2 --max-runs $MAXRUNS"; }

sec_Aclip() {
    clip_onnx || return 1
    mkdir -p "$T/cwork"
    step A Aclip $PY "$D/cpu_bench.py" clip "$T/clip" "$T/clip-onnx" "$T/cwork" --threads "${THREADS:-1,2,4,8,16}" \
        --variants "${DTYPES:-bf16,q8}" $(run_opts "$SECS_AC" "$RUNS_AC") ${CASES:+--cases "$CASES"} \
        --ours "$L $P/clip_bench $T/clip $T/cwork --serve --dtypes ${DTYPES:-bf16,q8}"
}
sec_Amini() {
    minilm || return 1
    mkdir -p "$T/twork"
    step A Amini $PY "$D/cpu_bench.py" minilm "$T/minilm" "$T/minilm/minilm.onnx" "$T/twork" \
        --threads "${THREADS:-1,2,4,8,16}" --variants "${DTYPES:-bf16,q8}" $(run_opts "$SECS_AC" "$RUNS_AC") \
        --ours "$L $P/text_bench $T/minilm $T/twork --serve --dtypes ${DTYPES:-bf16,q8}"
}
sec_Allm() {  # LLM_LAYERS (2): decoder layers of the cut timed
    n=${LLM_LAYERS:-2}
    qwen "q$n" --layers "$n" || return 1
    step A Allm $PY "$D/cpu_bench.py" qwen "$T/qwork" --models "$T/q$n" --cases text1024 \
        --threads "${THREADS:-1,2,4,8,16}" --variants "${DTYPES:-bf16,q8}" $(run_opts "$SECS_AC" "$RUNS_AC") \
        --engines ours,ort,torch --ours "$L $P/qwen2vl_bench {dir} --serve --dtypes ${DTYPES:-bf16,q8}"
}
# B, B1: thread counts >= FULL_MIN_THREADS on the full shape, the others
# extrapolated from the 1- and 2-layer cuts
sec_Bth() {  # sec_Bth SECTION THREADS
    full='' cut=''
    for th in $(echo "$2" | tr ',' ' '); do
        if [ "$th" -ge "${FULL_MIN_THREADS:-8}" ]; then full=$full${full:+,}$th; else cut=$cut${cut:+,}$th; fi
    done
    ours="$L $P/qwen2vl_bench {dir} --serve --dtypes ${DTYPES:-bf16,q8}"
    if [ -n "$full" ]; then
        qfull || return 1
        step "$1" "$1 full shape, threads $full" $PY "$D/cpu_bench.py" qwen "$T/qwork" --models "$T/qfull" \
            --cases "${QCASES:-text32,image256,image1280}" --threads "$full" --variants "${DTYPES:-bf16,q8}" \
            $(run_opts "${SECS:-0}" "${RUNS:-3}") --engines ours,torch --ours "$ours"
    fi
    if [ -n "$cut" ]; then
        qwen q1 --layers 1 && qwen q2 --layers 2 || return 1
        step "$1" "$1 cut-down shapes, threads $cut" $PY "$D/cpu_bench.py" qwen "$T/qwork" --models "$T/q1,$T/q2" \
            --cases "${QCASES:-text32,image256,image1280}" --threads "$cut" --variants "${DTYPES:-bf16,q8}" \
            $(run_opts "${SECS:-0}" "${RUNS:-3}") --engines ours,torch --ours "$ours"
    fi
}
sec_B() { sec_Bth B "${THREADS:-16}"; }
sec_B1() { sec_Bth B1 "${THREADS:-1}"; }
sec_Cclip() {
    clip_model || return 1
    mkdir -p "$T/cwork-c"
    step C Cclip $L "$P/clip_bench" "$T/clip" "$T/cwork-c" --dtypes "${DTYPES:-f32,bf16,q8,q4}" \
        --threads "${THREADS:-1,16}" $(run_opts "${SECS:-0.5}" "$RUNS_AC")
}
sec_Cmini() {
    minilm || return 1
    mkdir -p "$T/twork-c"
    step C Cmini $L "$P/text_bench" "$T/minilm" "$T/twork-c" --dtypes "${DTYPES:-f32,bf16,q8,q4}" \
        --threads "${THREADS:-1,16}" $(run_opts "${SECS:-0.5}" "$RUNS_AC")
}
sec_Cqwen() {
    qwen qhdr --header-only || return 1
    full='' cut=''
    for th in $(echo "${THREADS:-1,16}" | tr ',' ' '); do
        if [ "$th" -ge "${FULL_MIN_THREADS:-8}" ]; then full=$full${full:+,}$th; else cut=$cut${cut:+,}$th; fi
    done
    dts=${DTYPES:-f32,bf16,q8,q4}
    if [ -n "$cut" ]; then  # cuts of 3 and 4 layers: q4 keeps the first 2 text blocks q8, so the growth is a q4 layer
        qwen q3 --layers 3 && qwen q4 --layers 4 || return 1
        step C "Cqwen cut-down shapes, threads $cut" $L "$P/qwen2vl_bench" "$T/q3" --model2 "$T/q4" --pack-dir "$T/qhdr" \
            --threads "$cut" --dtypes "$dts" --cases "${QCASES:-text32,image256}" --min-runs "$RUNS_AC" --secs 0
    fi
    if [ -n "$full" ]; then
        qfull || return 1
        step C "Cqwen full shape, threads $full" $L "$P/qwen2vl_bench" "$T/qfull" --pack-dir "$T/qhdr" \
            --threads "$full" --dtypes "$dts" --cases "${QCASES:-text32,image256}" --min-runs "$RUNS_AC" --secs 0
    fi
}
summary() { $PY "$D/cpu_summary.py" "$1" "$O/$1.log" | tee "$O/$1.table.md"; }

case " $* " in *" all "*) set -- A B B1 C ;; esac
for s in "$@"; do
    case $s in
    A | B | B1 | C | Aclip | Amini | Allm | Cclip | Cmini | Cqwen) ;;
    *) echo "unknown section $s (A Aclip Amini Allm B B1 C Cclip Cmini Cqwen all)"; exit 2 ;;
    esac
done
# a whole section starts its log afresh; a part adds to it (the tables keep
# the last line of each engine, case and thread count)
done_secs=
for s in "$@"; do
    case $s in
    A | B | B1 | C) : >"$O/$s.log" ;;
    esac
    case $s in
    A) sec_Aclip; sec_Amini; sec_Allm ;;
    C) sec_Cclip; sec_Cmini; sec_Cqwen ;;
    *) "sec_$s" ;;
    esac
    case $s in A*) sec=A ;; C*) sec=C ;; *) sec=$s ;; esac
    case " $done_secs " in *" $sec "*) ;; *) done_secs="$done_secs $sec" ;; esac
done
for sec in $done_secs; do summary "$sec"; done
echo "total $(($(date +%s) - START)) s; logs and tables in $O"
