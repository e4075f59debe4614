#!/usr/bin/env python3
"""HTTP benchmarks through nginx (not tests): cache-hit latency vs /health,
a Zipf replay against the shared cache, text and video embedding cost, and
image embedding per dtype (latency over engine time, 1 vs 2 workers).

Usage: tools/bench_http.py [cache|zipf|text|video|image|all] [--seconds 10]
       (image: BENCH_DTYPES=f32,bf16,q8 picks the dtypes)
Uses build/test/mmembed (make test-build) and the models of `make run`
(models/use-lite, models/clip-vit-b32-synthetic)."""
import argparse
import http.client
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Server  # noqa: E402

MODELS = [{"name": "use-lite", "path": os.path.join(ROOT, "models", "use-lite"), "default": True},
          {"name": "clip-vit-b32", "path": os.path.join(ROOT, "models", "clip-vit-b32-synthetic")}]


def wrk(port, path, secs, conns=1, body=None):
    args = ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency"]
    script = None
    if body is not None:
        script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        script.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                     f"wrk.body = {json.dumps(body)}\n")
        script.close()
        args += ["-s", script.name]
    out = subprocess.run(args + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    if script:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return rps, lat.get("50"), lat.get("99")


def bench_cache(s, secs):
    print(f"cache hit vs /health through nginx, 1 connection, {secs}s each (wrk)")
    rps, p50, p99 = wrk(s.port, "/health", secs)
    print(f"  GET /health                         {rps:8.0f} req/s  p50 {p50}  p99 {p99}")
    body = json.dumps({"input": "a photo of a cat on a sofa", "model": "use-lite"})
    s.request("POST", "/v1/embeddings", body=body.encode(), headers={"Content-Type": "application/json"})
    rps, p50, p99 = wrk(s.port, "/v1/embeddings", secs, body=body)
    print(f"  POST /v1/embeddings (cache hit)     {rps:8.0f} req/s  p50 {p50}  p99 {p99}")
    nb = json.dumps({"input": "a photo of a cat on a sofa", "model": "use-lite", "cache": False})
    rps, p50, p99 = wrk(s.port, "/v1/embeddings", secs, body=nb)
    print(f"  POST /v1/embeddings (cache off)     {rps:8.0f} req/s  p50 {p50}  p99 {p99}")


def bench_zipf(s, n=10000, keys=2000, threads=4):
    rng = random.Random(1)
    weights = [1 / (k + 1) ** 1.1 for k in range(keys)]
    picks = rng.choices(range(keys), weights=weights, k=n)
    hits, lock, idx = [0], threading.Lock(), [0]

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        while True:
            with lock:
                if idx[0] >= n:
                    break
                k = picks[idx[0]]
                idx[0] += 1
            while True:
                c.request("POST", "/v1/embeddings", body=json.dumps({"input": f"query number {k} about things"}),
                          headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 503:
                    break
                time.sleep(0.002)
            if r.getheader("X-Cache") == "hit":
                with lock:
                    hits[0] += 1
        c.close()
    t0 = time.time()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt = time.time() - t0
    print(f"Zipf(1.1) replay: {n} requests over {keys} distinct texts, {threads} clients: hit rate "
          f"{hits[0] / n:.1%}, {n / dt:.0f} req/s ({dt:.1f}s)")


def bench_video(s, runs=10):
    d = tempfile.mkdtemp()
    clip = os.path.join(d, "clip.mp4")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=10",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", clip], check=True)
    data = open(clip, "rb").read()
    b = "----bench"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="max_frames"\r\n\r\n8\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="cache"\r\n\r\nfalse\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="video"; filename="clip.mp4"\r\n'
            f"Content-Type: video/mp4\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    times, dec, mod = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = s.request("POST", "/embed/video", body=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
        times.append((time.perf_counter() - t0) * 1000)
        j = r.json()
        dec.append(j["timing_ms"]["decode"])
        mod.append(j["timing_ms"]["model"])
    med = sorted(times)[len(times) // 2]
    hwm = max(int(re.search(r"VmHWM:\s+(\d+)", open(f"/proc/{p}/status").read()).group(1)) for p in s.worker_pids())
    print(f"video 10 s 640x360 H.264, 8 frames, ViT-B/32 shape, 1 thread: median {med:.0f} ms end to end "
          f"(decode {sorted(dec)[runs // 2]:.0f} ms, model {sorted(mod)[runs // 2]:.0f} ms); worker peak RSS {hwm / 1024:.0f} MiB")
    rss0 = [int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p}/status").read()).group(1)) for p in s.worker_pids()]
    for _ in range(int(os.environ.get("BENCH_VIDEO_MORE", "0"))):
        s.request("POST", "/embed/video", body=body, headers={"Content-Type": f"multipart/form-data; boundary={b}"})
    rss1 = [int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p}/status").read()).group(1)) for p in s.worker_pids()]
    if os.environ.get("BENCH_VIDEO_MORE"):
        print(f"  worker RSS before/after {os.environ['BENCH_VIDEO_MORE']} more requests: {rss0} -> {rss1} kB")


def bench_text(secs):
    """Sentences/s through nginx (cache off), 1 worker, 1 connection: USE-Lite and the
    all-MiniLM-L6-v2 shape (models/bench-minilm from tools/bench/export_bert.py, with the
    WordPiece tokenizer of the BERT fixture copied in: ids only need to be in range)."""
    minilm = os.path.join(ROOT, "models", "bench-minilm")
    if not os.path.exists(os.path.join(minilm, "tokenizer.json")):
        import shutil
        shutil.copy(os.path.join(ROOT, "tests", "fixtures", "bert", "bert-tiny", "tokenizer.json"), minilm)
    models = [MODELS[0], {"name": "minilm", "path": minilm}]
    sent = "the quick brown fox jumps over the lazy dog near the river bank today"
    print(f"text through nginx, 1 worker x 1 thread, cache off, 1 connection, {secs}s each (wrk)")
    with Server(workers=1, models=models, extra={"max_requests": "0"}) as s:
        for model in ("use-lite", "minilm"):
            for batch in (1, 32):
                body = json.dumps({"input": [f"{sent} {i}" for i in range(batch)] if batch > 1 else sent,
                                   "model": model, "cache": False})
                rps, p50, p99 = wrk(s.port, "/v1/embeddings", secs, body=body)
                print(f"  {model:9s} batch {batch:2d}: {rps * batch:8.0f} sentences/s  p50 {p50}  p99 {p99}")


def bench_image(secs, runs=40):
    """640x480 JPEG as multipart to /embed/image through nginx (cache off), ViT-B/32 shape, per dtype:
    p50 end to end against the engine's own model time (the Server-Timing header), 1 worker x 1 thread,
    one request at a time; then images/s with 1 and 2 workers (1 thread each, 2 connections per worker,
    queue_depth 2 so a busy worker holds the next request instead of answering 503 at once)."""
    data = open(os.path.join(ROOT, "tests", "fixtures", "clip", "images", "photo640x480.jpg"), "rb").read()
    b = "----bench"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="cache"\r\n\r\nfalse\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    ctype = f"multipart/form-data; boundary={b}"
    d = tempfile.mkdtemp()
    open(os.path.join(d, "body"), "wb").write(body)
    lua = os.path.join(d, "post.lua")
    open(lua, "w").write(f'local f = io.open("{d}/body", "rb")\nwrk.method = "POST"\nwrk.body = f:read("*all")\n'
                         f'f:close()\nwrk.headers["Content-Type"] = "{ctype}"\n')
    print("image 640x480 JPEG multipart -> /embed/image through nginx, cache off, ViT-B/32 shape "
          f"({os.cpu_count()} CPUs)")
    for dt in os.environ.get("BENCH_DTYPES", "f32,bf16,q8").split(","):
        models = [dict(MODELS[1], default=True, dtype=dt)]
        with Server(workers=1, models=models, extra={"max_requests": "0"}) as s:
            info = s.get("/info").json()["models"][0]
            for _ in range(3):
                s.request("POST", "/embed/image", body=body, headers={"Content-Type": ctype})
            e2e, model, dec = [], [], []
            for _ in range(runs):
                t0 = time.perf_counter()
                r = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ctype})
                e2e.append((time.perf_counter() - t0) * 1000)
                st = dict(re.findall(r"(\w+);dur=([\d.]+)", r.headers.get("server-timing", "")))
                model.append(float(st["model"]))
                dec.append(float(st["decode"]))
            med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
            print(f"  {dt:4s} (runs {info['dtype']}): p50 end to end {med(e2e):6.1f} ms = engine {med(model):6.1f} ms "
                  f"+ {med(e2e) - med(model):4.1f} ms (decode+resize {med(dec):.1f} ms; target: engine + 6 ms)")
        rates = []
        for w in (1, 2):
            with Server(workers=w, models=models, extra={"max_requests": "0", "queue_depth": "2"}) as s:
                s.request("POST", "/embed/image", body=body, headers={"Content-Type": ctype})
                out = subprocess.run(["wrk", "-t1", f"-c{2 * w}", f"-d{secs}s", "-s", lua,
                                      f"http://127.0.0.1:{s.port}/embed/image"], capture_output=True, text=True).stdout
                m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
                total, dur = int(m.group(1)), float(m.group(2)) * (60 if m.group(3) == "m" else 1)
                non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
                bad = int(non2xx.group(1)) if non2xx else 0
                rates.append((total - bad) / dur)  # 200s only: a busy worker's 503 is instant
        print(f"         images/s: 1 worker {rates[0]:.1f}, 2 workers {rates[1]:.1f} "
              f"({rates[1] / rates[0]:.2f}x; target >= 1.8x)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", nargs="?", default="all")
    ap.add_argument("--seconds", type=int, default=10)
    a = ap.parse_args()
    with Server(workers=2, models=MODELS, extra={"max_requests": "0"}) as s:
        if a.what in ("cache", "all"):
            bench_cache(s, a.seconds)
        if a.what in ("zipf", "all"):
            bench_zipf(s)
    if a.what in ("text", "all"):
        bench_text(a.seconds)
    if a.what in ("image", "all"):
        bench_image(a.seconds)
    if a.what in ("video", "all"):
        with Server(workers=1, models=MODELS, extra={"max_requests": "0"}) as s:
            bench_video(s)


if __name__ == "__main__":
    main()
