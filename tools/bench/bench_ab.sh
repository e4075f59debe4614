#!/bin/sh
# bench_ab.sh — bench_clip.sh and bench_text.sh for two commits in one run:
# the before build's driver, the after build's driver and ONNX Runtime
# alternate run by run (tools/bench/ab_serve.py behind ort_bench.js'
# --ours), so all three see the same machine load.
#
#   usage: tools/bench/bench_ab.sh BEFORE_TREE [clip|text ...]
#     BEFORE_TREE  a worktree of the older commit (e.g. `git worktree add
#                  ../wtbefore REV`); this tree is "after"
#   knobs: THREADS=1,2 SECS=3 MIN_RUNS=5 MAX_RUNS=30 GAP_MS=100 DTYPES=f32,bf16,q8
#          PY=/usr/bin/python3 (numpy, for the check-output comparison)
#          MID=TREE   a third build timed in the same rounds ("mid" columns)
#          TABLE_ONLY=1  print the tables again from the last raw files
#
# Needs: the models and ONNX files of bench_clip.sh / bench_text.sh (run
# each once in this tree, or their steps 1-2) and tools/bench/node_modules.
# Each tree's driver (tools/bench/{clip,text}_bench.c of that tree) is
# linked against that tree's build/libmmembed.a (`make all` there: the same
# CFLAGS as bench_build_driver's B=build/bench/mm) into build/bench/ab/.
# Prints a markdown table per model: wall ms per item (median), ours/ORT
# for each build, after/before (of the medians and of the fastest runs),
# and the process CPU ms per item (median;
# on a shared, oversubscribed machine the CPU time waits less on the
# scheduler than the wall time); raw lines in build/bench/ab/{clip,text}.txt.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
[ $# -ge 1 ] || { echo "usage: $0 BEFORE_TREE [clip|text ...]" >&2; exit 2; }
BEFORE=$(cd "$1" && pwd)
shift
WHAT=${*:-clip text}

THREADS=${THREADS:-1,2}
DTYPES=${DTYPES:-f32,bf16,q8}
SECS=${SECS:-3}
MIN_RUNS=${MIN_RUNS:-5}
MAX_RUNS=${MAX_RUNS:-30}
GAP_MS=${GAP_MS:-100}
PY=${PY:-/usr/bin/python3}
AB=${AB:-$ROOT/build/bench/ab}   # drivers, raw lines, work folders

say() { echo "bench_ab: $*" >&2; }
. tools/bench/lib.sh
mkdir -p "$AB"
bench_ensure_ort

# ab_driver TREE NAME OUT: TREE's tools/bench/NAME.c against TREE's build/libmmembed.a
ab_driver() {
    say "building $3 from $1"
    (
        cd "$1"
        make -s --no-print-directory all >&2
        printf 'bench-print-%%:\n\t@echo $($*)\n' > "$AB/print.mk"
        cf=$(make -s --no-print-directory -f Makefile -f "$AB/print.mk" bench-print-CFLAGS | sed 's/ -MMD//; s/ -MP//')
        ll=$(make -s --no-print-directory -f Makefile -f "$AB/print.mk" bench-print-LDLIBS)
        # shellcheck disable=SC2086
        cc $cf -o "$3" "tools/bench/$2.c" build/libmmembed.a $ll
    )
}

MID=${MID:+$(cd "$MID" && pwd)}
if [ -n "$MID" ]; then
    VARIANTS=$(echo "$DTYPES" | tr ',' '\n' | sed 's/.*/b-&,m-&,a-&/' | paste -sd, -)
else
    VARIANTS=$(echo "$DTYPES" | tr ',' '\n' | sed 's/.*/b-&,a-&/' | paste -sd, -)
fi

for w in $WHAT; do
    case $w in
    clip) NAME=clip_bench ORTJS=tools/bench/ort_bench.js MODEL=models/clip-vit-b32-synthetic
          ONNX=models/onnx/clip-vit-b32-synthetic LABEL=image
          [ -f $ONNX/vision.onnx ] || { say "run tools/bench/bench_clip.sh once first"; exit 1; } ;;
    text) NAME=text_bench ORTJS=tools/bench/ort_text_bench.js MODEL=models/bench-minilm
          ONNX=models/onnx/minilm.onnx LABEL=text
          [ -f $ONNX ] || { say "run tools/bench/bench_text.sh once first"; exit 1; } ;;
    *) say "unknown $w"; exit 2 ;;
    esac
    WORK=$AB/work_$w
    OUT=$AB/$w.txt
    if [ -z "${TABLE_ONLY:-}" ]; then
        ab_driver "$BEFORE" $NAME "$AB/before_$NAME"
        [ -z "$MID" ] || ab_driver "$MID" $NAME "$AB/mid_$NAME"
        ab_driver "$ROOT" $NAME "$AB/after_$NAME"
        mkdir -p "$WORK"
        # bench_run appends "MODEL WORK --serve --dtypes VARIANTS" to the --ours command
        AB_BEFORE=$AB/before_$NAME AB_MID=${MID:+$AB/mid_$NAME} AB_AFTER=$AB/after_$NAME DTYPES=$VARIANTS \
            bench_run $ORTJS $ONNX "$WORK" "$PY tools/bench/ab_serve.py" $MODEL "$OUT" $LABEL
    fi
    echo
    echo "$w: before $(git -C "$BEFORE" rev-parse --short HEAD),${MID:+ mid $(git -C "$MID" rev-parse --short HEAD),} after $(git rev-parse --short HEAD)" \
         "$(git status --porcelain -- src include | grep -q . && echo '(after: src/ or include/ modified)')," \
         "$(nproc) CPUs ($(bench_cpu)), onnxruntime-node $(bench_ort_version), $(grep -c '^RESULT ort' "$OUT") cases x threads," \
         "runs per case: $(awk '/^RESULT ort/ {print $7}' "$OUT" | sort -n | sed -n '1p;$p' | paste -sd- -), load at print: $(cut -d' ' -f1-3 /proc/loadavg)"
    # f32 check outputs of the two builds on the same inputs (worst cosine)
    $PY - "$WORK" before ${MID:+mid} <<'EOF'
import sys, os, glob
import numpy as np
w = sys.argv[1]
for sfx, f, g in [(sfx, f, os.path.join(w + "." + sfx, os.path.basename(f)))
                  for sfx in sys.argv[2:] for f in sorted(glob.glob(os.path.join(w, "check_*.f32")))]:
    if not os.path.exists(g):
        continue
    a, b = np.fromfile(f, np.float32), np.fromfile(g, np.float32)
    if a.size != b.size:
        print(f"{os.path.basename(f)}: sizes differ"); continue
    d = int(open(os.path.join(w, "meta.txt")).read().split()[1])  # "dim N" first
    a, b = a.reshape(-1, d).astype(np.float64), b.reshape(-1, d).astype(np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    print(f"{os.path.basename(f)}: after vs {sfx} f32 outputs, {len(cos)} vectors, worst cosine {cos.min():.9f}, max |diff| {np.abs(a - b).max():.3g}")
EOF
    echo
    echo "ms per item, medians of the runs; ratios of medians (after/before < 1: after faster)"
    echo
    awk -v dts="$DTYPES" -v mid="${MID:+1}" '
/^RESULT/ {
    key = $3 " " $4
    if (!(key in seen)) { seen[key] = 1; order[n++] = key }
    med[$2 " " key] = $5; cpu[$2 " " key] = $9; mn[$2 " " key] = $8
}
END {
    nd = split(dts, d, ",")
    printf "| case | thr | dtype | ORT f32 ms | before ms |%s after ms | before/ORT |%s after/ORT | after/before | same, fastest runs |", \
        (mid ? " mid ms |" : ""), (mid ? " mid/ORT |" : "")
    printf " before CPU ms |%s after CPU ms |%s after/before CPU |\n", (mid ? " mid CPU ms |" : ""), (mid ? " mid/before CPU |" : "")
    printf "|---|---|---|---:|---:|%s---:|---:|%s---:|---:|---:|---:|%s---:|%s---:|\n", (mid ? "---:|" : ""), (mid ? "---:|" : ""), \
        (mid ? "---:|" : ""), (mid ? "---:|" : "")
    for (i = 0; i < n; i++) {
        split(order[i], k, " ")
        r = med["ort " order[i]]
        for (j = 1; j <= nd; j++) {
            b = med["ours-b-" d[j] " " order[i]]; a = med["ours-a-" d[j] " " order[i]]; m = med["ours-m-" d[j] " " order[i]]
            bc = cpu["ours-b-" d[j] " " order[i]]; ac = cpu["ours-a-" d[j] " " order[i]]; mc = cpu["ours-m-" d[j] " " order[i]]
            if (b <= 0 || a <= 0 || r <= 0 || bc <= 0) continue
            printf "| %s | %s | %s | %.2f | %.2f |", k[1], k[2], d[j], r, b
            if (mid) printf " %.2f |", m
            printf " %.2f | %.2f |", a, b / r
            if (mid) printf " %.2f |", m / r
            bm = mn["ours-b-" d[j] " " order[i]]; am = mn["ours-a-" d[j] " " order[i]]
            printf " %.2f | %.3f | %.3f | %.2f |", a / r, a / b, (bm > 0 ? am / bm : 0), bc
            if (mid) printf " %.2f |", mc
            printf " %.2f |", ac
            if (mid) printf " %.3f |", mc / bc
            printf " %.3f |\n", ac / bc
            lw[j] += log(a / b); lc[j] += log(ac / bc); cnt[j]++
            if (bm > 0 && am > 0) lm[j] += log(am / bm)
            if (mid && m > 0 && mc > 0) { mw[j] += log(m / b); mcl[j] += log(mc / bc) }
        }
    }
    printf "\ngeometric means over the %d cases x threads:\n", n
    for (j = 1; j <= nd; j++) if (cnt[j]) {
        printf "- %s: after/before wall %.3f (fastest runs %.3f), CPU %.3f", d[j], exp(lw[j] / cnt[j]), exp(lm[j] / cnt[j]), exp(lc[j] / cnt[j])
        if (mid) printf "; mid/before wall %.3f, CPU %.3f", exp(mw[j] / cnt[j]), exp(mcl[j] / cnt[j])
        printf "\n"
    }
}' "$OUT"
done
