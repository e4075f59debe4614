#!/usr/bin/env python3
"""ort_bench.py — the ONNX Runtime side of the CLIP benchmark (and, with
--text, of the MiniLM-shape one) in Python, for machines without Node:
tools/bench/device_clip.sh runs it on the device host's CPU. Times the cases
clip_bench (text_bench) times, on the inputs it wrote to WORK_DIR, after
checking that ORT and our f32 engine give the same vectors (cosine >= 0.9999
is expected; the worst is printed as a CHECK line).

  usage: python3 ort_bench.py ONNX_DIR WORK_DIR [--threads 1,2] [--secs 3] [--min-runs 5]
                              [--ours "clip_bench MODEL WORK --serve --dtypes f32,bf16,q8" --variants f32,bf16,q8]
         python3 ort_bench.py --text MINILM_ONNX_FILE TEXT_WORK_DIR ...   (text_bench's cases b1, b32)

With --ours, our driver runs as a child speaking the drivers' --serve
protocol and each case alternates one run of ours per variant with one run
of ORT (as ort_common.js does), so both see the same machine noise.
Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
<min ms per item> <CPU ms per item>" with engine "ort" or "ours-<variant>"."""
import argparse
import os
import shlex
import subprocess
import time

import numpy as np
import onnxruntime as ort

CLIP_CASES = [("image_b1", 1, 0), ("image_b8", 8, 0), ("text16_b1", 1, 16), ("text16_b32", 32, 16),
              ("text77_b1", 1, 77), ("text77_b32", 32, 77)]
TEXT_CASES = [("b1", 1, 16), ("b32", 32, 16)]


def session(path, th):
    so = ort.SessionOptions()
    so.intra_op_num_threads = th
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def worst_cosine(got, want):
    return float(((got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)).min())


class Ours:
    """Our driver as a child process (--serve protocol)."""

    def __init__(self, cmd):
        self.p = subprocess.Popen(shlex.split(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        assert line.startswith("READY"), line

    def run(self, name, th, variant):
        self.p.stdin.write(f"run {name} {th} 1{' ' + variant if variant else ''}\n")
        self.p.stdin.flush()
        t = self.p.stdout.readline().split()
        assert t and t[0] == "TIMES", t
        return tuple(float(x) for x in t[3].split("/"))

    def quit(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()


def result(engine, name, th, n, runs):
    wall = [r[0] for r in runs]
    med = float(np.median(wall))
    print(f"RESULT {engine} {name} {th} {med / n:.3f} {med:.3f} {len(runs)} {min(wall) / n:.3f} "
          f"{float(np.median([r[1] for r in runs])) / n:.3f}", flush=True)


def time_case(a, ours, variants, name, n, th, run_ort):
    """Alternates our variants' runs with ORT's until min-runs and secs (at most 200)."""
    run_ort()
    mine, theirs = {v: [] for v in variants}, []
    start = time.perf_counter()
    while len(theirs) < a.min_runs or (time.perf_counter() - start < a.secs and len(theirs) < 200):
        for v in (variants if ours else []):
            time.sleep(0.05)
            mine[v].append(ours.run(name, th, v))
        time.sleep(0.05 if ours else 0)
        c0, t0 = time.process_time(), time.perf_counter()
        run_ort()
        theirs.append(((time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3))
    for v in (variants if ours else []):
        result(f"ours-{v}" if v else "ours", name, th, n, mine[v])
    result("ort", name, th, n, theirs)


def clip_sessions(a, th, meta):
    """(cases -> run functions) for one thread count, after the image cross-check."""
    S, C, D = int(meta["image_size"]), int(meta["channels"]), int(meta["dim"])
    rd = lambda f, t: np.fromfile(os.path.join(a.work, f), dtype=t)  # noqa: E731
    ids = {77: rd("ids77.i32", np.int32).astype(np.int64).reshape(-1, 77),
           16: rd("ids16.i32", np.int32).astype(np.int64).reshape(-1, 16)}
    px = rd("pixels.f32", np.float32).reshape(-1, C, S, S)
    text, vision = session(os.path.join(a.onnx, "text.onnx"), th), session(os.path.join(a.onnx, "vision.onnx"), th)
    want = rd("check_image.f32", np.float32).reshape(-1, D)
    print(f"CHECK image worst {worst_cosine(vision.run(None, {'pixel_values': px[:len(want)]})[0], want):.7f}")
    return {name: (lambda s=text if ln else vision, f={"input_ids": ids[ln][:n]} if ln else {"pixel_values": px[:n]}:
                   s.run(None, f)) for name, n, ln in CLIP_CASES}


def text_sessions(a, th, meta):
    """MiniLM shape: 16-token sequences (input_ids + attention_mask -> pooled)."""
    D = int(meta["dim"])
    rd = lambda f, t: np.fromfile(os.path.join(a.work, f), dtype=t)  # noqa: E731
    ids = rd("ids16.i32", np.int32).astype(np.int64).reshape(-1, 16)
    lens, cids, want = rd("check_lens.i32", np.int32), rd("check_ids.i32", np.int32), rd("check_out.f32", np.float32)
    sess = session(a.onnx, th)
    pid, mask, off = np.zeros((len(lens), lens.max()), np.int64), np.zeros((len(lens), lens.max()), np.int64), 0
    for i, ln in enumerate(lens):  # the check texts as one padded batch
        pid[i, :ln], mask[i, :ln] = cids[off:off + ln], 1
        off += ln
    got = sess.run(None, {"input_ids": pid, "attention_mask": mask})[0]
    print(f"CHECK text worst {worst_cosine(got, want.reshape(-1, D)):.7f}")
    return {name: (lambda f={"input_ids": ids[:n], "attention_mask": np.ones((n, 16), np.int64)}: sess.run(None, f))
            for name, n, _ in TEXT_CASES}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("work")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--secs", type=float, default=3)
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--ours")
    ap.add_argument("--variants", default="")
    ap.add_argument("--text", action="store_true")
    a = ap.parse_args()
    ours = Ours(a.ours) if a.ours else None   # it writes WORK_DIR before READY
    variants = [v for v in a.variants.split(",") if v] or [None]
    meta = dict(line.split() for line in open(os.path.join(a.work, "meta.txt")) if line.strip())
    print(f"INFO onnxruntime {ort.__version__}")
    for th in [int(x) for x in a.threads.split(",")]:
        runs = (text_sessions if a.text else clip_sessions)(a, th, meta)
        for name, n, _ in (TEXT_CASES if a.text else CLIP_CASES):
            time_case(a, ours, variants, name, n, th, runs[name])
    if ours:
        ours.quit()


if __name__ == "__main__":
    main()
