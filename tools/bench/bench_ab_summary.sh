#!/bin/sh
# bench_ab_summary.sh — after/before over several tools/bench/bench_ab.sh runs
# (their raw build/bench/ab/{clip,text}.txt, copied aside): per dtype, the
# geometric mean over the cases x threads of each run's after/before (wall
# medians, fastest runs, CPU medians), then per case the after/before wall
# ratio of every run and their geometric mean.
#   usage: tools/bench/bench_ab_summary.sh RUN1/clip.txt RUN2/clip.txt ...
set -eu
awk '
FNR == 1 { nf++ }
/^RESULT ours-[ab]-/ {
    split($2, e, "-"); s = e[2]; dt = e[3]; k = $3 " " $4 " " dt
    w[nf, s, k] = $5; m[nf, s, k] = $8; c[nf, s, k] = $9
    if (!(k in seen)) { seen[k] = 1; order[n++] = k; if (!(dt in dts)) { dts[dt] = 1; dl[nd++] = dt } }
}
END {
    print "| dtype | run | cases x threads | after/before, median wall (geo. mean) | fastest runs | median CPU |"
    print "|---|---|---:|---:|---:|---:|"
    for (j = 0; j < nd; j++) for (r = 1; r <= nf + 1; r++) {
        lw = lm = lc = cnt = 0
        for (i = 0; i < n; i++) {
            split(order[i], kk, " "); if (kk[3] != dl[j]) continue
            for (f = (r > nf ? 1 : r); f <= (r > nf ? nf : r); f++) {
                k = order[i]
                if (!w[f, "b", k] || !w[f, "a", k]) continue
                lw += log(w[f, "a", k] / w[f, "b", k]); lm += log(m[f, "a", k] / m[f, "b", k])
                lc += log(c[f, "a", k] / c[f, "b", k]); cnt++
            }
        }
        if (cnt) printf "| %s | %s | %d | %.3f | %.3f | %.3f |\n", dl[j], (r > nf ? "all" : r), cnt, exp(lw / cnt), exp(lm / cnt), exp(lc / cnt)
    }
    printf "\nPer case, after/before of the median wall times in each run:\n\n| case | thr | dtype |"
    for (f = 1; f <= nf; f++) printf " run %d |", f
    printf " geo. mean |\n|---|---|---|"
    for (f = 1; f <= nf; f++) printf "---:|"
    printf "---:|\n"
    for (i = 0; i < n; i++) {
        k = order[i]; split(k, kk, " "); printf "| %s | %s | %s |", kk[1], kk[2], kk[3]; l = cnt = 0
        for (f = 1; f <= nf; f++) if (w[f, "b", k] && w[f, "a", k]) { q = w[f, "a", k] / w[f, "b", k]; printf " %.2f |", q; l += log(q); cnt++ } else printf " |"
        printf " %.2f |\n", cnt ? exp(l / cnt) : 0
    }
}' "$@"
