#!/usr/bin/env python3
"""ab_serve.py — two builds of one bench driver behind one --serve pipe, so
that ort_bench.js / ort_text_bench.js alternate before, after and ONNX
Runtime run by run (same inputs, same moment, same machine load).

    AB_BEFORE=old/clip_bench AB_AFTER=new/clip_bench \
        ab_serve.py MODEL_DIR WORK_DIR --serve --dtypes b-f32,a-f32,b-bf16,a-bf16

It is the --ours command of tools/bench/lib.sh's bench_run (CLIP_BENCH=
in bench_clip.sh). Variants are "b-<dtype>" (AB_BEFORE) and "a-<dtype>"
(AB_AFTER); each driver is started with the plain dtypes (f32 first) and
"run CASE TH K b-bf16" goes to the before driver as "run CASE TH K bf16".
With AB_MID set, "m-<dtype>" variants go to a third build (WORK_DIR.mid).
The drivers time themselves (the TIMES line), so this relay adds nothing
to the numbers. AB_AFTER writes WORK_DIR (what ORT reads and checks
against); AB_BEFORE writes WORK_DIR.before, so its check outputs can be
compared with the after build's (tools/bench/bench_ab.sh does).
"""
import os
import subprocess
import sys


def main():
    args = sys.argv[1:]
    if len(args) < 3 or "--serve" not in args:
        sys.exit("usage: AB_BEFORE=.. AB_AFTER=.. ab_serve.py MODEL WORK --serve --dtypes b-f32,a-f32,..")
    model, work = args[0], args[1]
    variants = args[args.index("--dtypes") + 1].split(",") if "--dtypes" in args else ["b-f32", "a-f32"]
    dts = ["f32"]
    for v in variants:
        side, _, dt = v.partition("-")
        if side not in ("a", "b", "m") or not dt or (side == "m" and not os.environ.get("AB_MID")):
            sys.exit(f"ab_serve: variant {v!r} is not b-DTYPE, a-DTYPE or (with AB_MID) m-DTYPE")
        if dt not in dts:
            dts.append(dt)
    sides = [("b", os.environ["AB_BEFORE"], work + ".before")]
    if os.environ.get("AB_MID"):
        sides.append(("m", os.environ["AB_MID"], work + ".mid"))
    sides.append(("a", os.environ["AB_AFTER"], work))
    procs = {}
    ready = None
    # after last: the after build's files in WORK_DIR are the last written
    for side, drv, wdir in sides:
        os.makedirs(wdir, exist_ok=True)
        p = subprocess.Popen([drv, model, wdir, "--serve", "--dtypes", ",".join(dts)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        line = p.stdout.readline()
        if not line.startswith("READY"):
            sys.exit(f"ab_serve: {drv}: unexpected {line!r}")
        procs[side] = p
        ready = line
    sys.stdout.write(ready)
    sys.stdout.flush()
    for line in sys.stdin:
        f = line.split()
        if not f or f[0] == "quit":
            break
        if f[0] != "run" or len(f) < 5:
            sys.exit(f"ab_serve: unexpected request {line!r}")
        side, _, dt = f[4].partition("-")
        p = procs[side]
        p.stdin.write(" ".join(f[:4] + [dt]) + "\n")
        p.stdin.flush()
        sys.stdout.write(p.stdout.readline())
        sys.stdout.flush()
    for p in procs.values():
        try:
            p.stdin.write("quit\n")
            p.stdin.close()
        except BrokenPipeError:
            pass
        p.wait()


if __name__ == "__main__":
    main()
