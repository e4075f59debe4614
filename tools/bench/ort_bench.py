#!/usr/bin/env python3
"""ort_bench.py — the ONNX Runtime side of the CLIP (and, with --text, the
MiniLM-shape BERT) benchmark in Python, for
machines without Node (tools/bench/device_clip.sh runs it on the GPU host's
CPU). Times the cases clip_bench times, on the inputs it wrote to WORK_DIR,
and prints "RESULT ort <case> <threads> <ms per item> <ms per batch> <runs>
<min ms per item> <CPU ms per item>" like ort_common.js, after checking that
ORT and our f32 engine give the same vectors (cosine >= 0.9999).

  usage: python3 ort_bench.py ONNX_DIR WORK_DIR [--threads 1,2] [--secs 3] [--min-runs 5]
         python3 ort_bench.py --text MINILM_ONNX_FILE TEXT_WORK_DIR ...  (text_bench's cases b1, b32)
                              [--ours "clip_bench MODEL WORK --serve --dtypes f32,bf16,q8" --variants f32,bf16,q8]

With --ours, our driver runs as a child speaking clip_bench's --serve
protocol and each case alternates one run of ours per variant with one run
of ORT (as ort_common.js does), so both see the same machine noise; its
lines are "RESULT ours-<variant> ..."."""
import argparse
import os
import shlex
import subprocess
import time

import numpy as np
import onnxruntime as ort

CASES = [("image_b1", 1, 0), ("image_b8", 8, 0), ("text16_b1", 1, 16), ("text16_b32", 32, 16),
         ("text77_b1", 1, 77), ("text77_b32", 32, 77)]


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
    ours = None
    if a.ours:
        ours = subprocess.Popen(shlex.split(a.ours), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = ours.stdout.readline()
        assert line.startswith("READY"), line
    variants = [v for v in a.variants.split(",") if v] or [None]

    def ours_run(name, th, v):
        ours.stdin.write(f"run {name} {th} 1{' ' + v if v else ''}\n")
        ours.stdin.flush()
        t = ours.stdout.readline().split()
        assert t and t[0] == "TIMES", t
        w, c = t[3].split("/")
        return float(w), float(c)

    meta = dict(line.split() for line in open(os.path.join(a.work, "meta.txt")) if line.strip())
    if a.text:
        return text_main(a, meta, ours, variants, ours_run)
    S, C, D = int(meta["image_size"]), int(meta["channels"]), int(meta["dim"])
    ids77 = np.fromfile(os.path.join(a.work, "ids77.i32"), dtype=np.int32).astype(np.int64).reshape(-1, 77)
    ids16 = np.fromfile(os.path.join(a.work, "ids16.i32"), dtype=np.int32).astype(np.int64).reshape(-1, 16)
    px = np.fromfile(os.path.join(a.work, "pixels.f32"), dtype=np.float32).reshape(-1, C, S, S)
    print(f"INFO onnxruntime {ort.__version__}")
    for th in [int(x) for x in a.threads.split(",")]:
        so = ort.SessionOptions()
        so.intra_op_num_threads = th
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        text = ort.InferenceSession(os.path.join(a.onnx, "text.onnx"), so, providers=["CPUExecutionProvider"])
        vision = ort.InferenceSession(os.path.join(a.onnx, "vision.onnx"), so, providers=["CPUExecutionProvider"])
        want = np.fromfile(os.path.join(a.work, "check_image.f32"), dtype=np.float32).reshape(-1, D)
        got = vision.run(None, {"pixel_values": px[:len(want)]})[0]
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        print(f"CHECK image worst {cos.min():.7f}")
        for name, n, ln in CASES:
            if ln:
                feed, sess = {"input_ids": (ids16 if ln == 16 else ids77)[:n]}, text
            else:
                feed, sess = {"pixel_values": px[:n]}, vision
            sess.run(None, feed)
            times, cpus = [], []
            mine = {v: [] for v in variants}
            start = time.perf_counter()
            while len(times) < a.min_runs or time.perf_counter() - start < a.secs:
                if ours:
                    for v in variants:
                        time.sleep(0.05)
                        mine[v].append(ours_run(name, th, v))
                    time.sleep(0.05)
                c0, t0 = time.process_time(), time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t0) * 1e3)
                cpus.append((time.process_time() - c0) * 1e3)
                if len(times) >= 200:
                    break
            for v in (variants if ours else []):
                w = [x[0] for x in mine[v]]
                m = float(np.median(w))
                print(f"RESULT ours{'-' + v if v else ''} {name} {th} {m / n:.3f} {m:.3f} {len(w)} {min(w) / n:.3f} "
                      f"{float(np.median([x[1] for x in mine[v]])) / n:.3f}", flush=True)
            med = float(np.median(times))
            print(f"RESULT ort {name} {th} {med / n:.3f} {med:.3f} {len(times)} {min(times) / n:.3f} "
                  f"{float(np.median(cpus)) / n:.3f}", flush=True)
    if ours:
        ours.stdin.write("quit\n")
        ours.stdin.flush()
        ours.wait()


def session(path, th):
    so = ort.SessionOptions()
    so.intra_op_num_threads = th
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def text_main(a, meta, ours, variants, ours_run):
    """MiniLM shape: 16-token sequences, batch 1 and 32 (input_ids + attention_mask -> pooled)."""
    D = int(meta["dim"])
    ids = np.fromfile(os.path.join(a.work, "ids16.i32"), dtype=np.int32).astype(np.int64).reshape(-1, 16)
    lens = np.fromfile(os.path.join(a.work, "check_lens.i32"), dtype=np.int32)
    cids = np.fromfile(os.path.join(a.work, "check_ids.i32"), dtype=np.int32).astype(np.int64)
    want = np.fromfile(os.path.join(a.work, "check_out.f32"), dtype=np.float32).reshape(-1, D)
    print(f"INFO onnxruntime {ort.__version__}")
    for th in [int(x) for x in a.threads.split(",")]:
        sess = session(a.onnx, th)
        T = int(lens.max())
        pid, mask, off = np.zeros((len(lens), T), np.int64), np.zeros((len(lens), T), np.int64), 0
        for i, ln in enumerate(lens):
            pid[i, :ln], mask[i, :ln] = cids[off:off + ln], 1
            off += ln
        got = sess.run(None, {"input_ids": pid, "attention_mask": mask})[0]
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        print(f"CHECK text worst {cos.min():.7f}")
        for name, n in (("b1", 1), ("b32", 32)):
            feed = {"input_ids": ids[:n], "attention_mask": np.ones((n, 16), np.int64)}
            sess.run(None, feed)
            times, mine = [], {v: [] for v in variants}
            start = time.perf_counter()
            while len(times) < a.min_runs or time.perf_counter() - start < a.secs:
                if ours:
                    for v in variants:
                        time.sleep(0.05)
                        mine[v].append(ours_run(name, th, v))
                    time.sleep(0.05)
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t0) * 1e3)
                if len(times) >= 200:
                    break
            for v in (variants if ours else []):
                m = float(np.median([x[0] for x in mine[v]]))
                print(f"RESULT ours{'-' + v if v else ''} {name} {th} {m / n:.3f} {m:.3f} {len(mine[v])}", flush=True)
            med = float(np.median(times))
            print(f"RESULT ort {name} {th} {med / n:.3f} {med:.3f} {len(times)}", flush=True)
    if ours:
        ours.stdin.write("quit\n")
        ours.stdin.flush()
        ours.wait()


if __name__ == "__main__":
    main()
