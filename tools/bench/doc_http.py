#!/usr/bin/env python3
"""Documents through the server (issue 19, "Numbers to report"): pages/s
rendered and embedded by POST /embed/document for a generated text+figure
PDF, per pool size; render vs preprocess vs model time per page (the
response's Server-Timing); and the peak RSS of the renderer (poppler's
pdftoppm, run here with exactly the arguments the server gives it for the
same pages, its ru_maxrss read with getrusage). Not a test: it asserts
nothing about speed.

  tools/bench/doc_http.py [--model DIR] [--dtype auto|f32|bf16|q8|q4]
                          [--workers 1,2] [--threads 1] [--pages 1-20]
                          [--max-image-tokens N] [--seconds 20] [--min-requests 2]

Defaults: the synthetic CLIP ViT-B/32 of `make default-model`
(models/clip-vit-b32-synthetic), tools/mkpdf.py doc20 (20 Letter/A4 pages,
30 lines of text and a figure each), 1 and 2 workers of 1 thread, each
worker kept busy by its own client, cache off. Uses build/test/mmembed
(make test-build) and nginx, through tests/integration/harness.py.
Qwen2-VL 2B shape: build/mkqwen2vl DIR tests/fixtures/qwen3/tokenizer.json.gz,
then --model DIR --dtype bf16 --max-image-tokens 1280 --pages 1 --workers 1."""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Server  # noqa: E402
from test_embed import multipart  # noqa: E402


def timing(headers):
    st = dict(headers).get("server-timing", "") or dict(headers).get("Server-Timing", "")
    return {k: float(v) for k, v in re.findall(r"(\w+);dur=([0-9.]+)", st)}


def renderer_peak_rss(pdf, items):
    """Run pdftoppm as the server runs it (consecutive pages at one size in
    one run, the PDF on stdin) in a child Python, whose RUSAGE_CHILDREN
    ru_maxrss is then the largest run's peak RSS (KiB)."""
    runs, i = [], 0
    while i < len(items):
        k, side = i + 1, max(items[i]["width"], items[i]["height"])
        while k < len(items) and items[k]["page"] == items[k - 1]["page"] + 1 and \
                max(items[k]["width"], items[k]["height"]) == side:
            k += 1
        runs.append((items[i]["page"], items[k - 1]["page"], side))
        i = k
    code = ("import resource, subprocess, sys, json\n"
            "pdf = sys.stdin.buffer.read()\n"
            "for a, b, s in json.loads(sys.argv[1]):\n"
            "    subprocess.run(['pdftoppm', '-f', str(a), '-l', str(b), '-scale-to', str(s), '-'], input=pdf,\n"
            "                   stdout=subprocess.DEVNULL, check=True)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, json.dumps(runs)], input=pdf, capture_output=True, check=True)
    return int(out.stdout), len(runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "clip-vit-b32-synthetic"))
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--pages", default="", help='page selection sent as "pages" (default: all)')
    ap.add_argument("--pdf", default="doc20", help="a tools/mkpdf.py kind or a PDF file")
    ap.add_argument("--max-image-tokens", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--min-requests", type=int, default=2, help="per client")
    ap.add_argument("--pack-cache", default="", help="pack_cache directory (a large model starts faster the second time)")
    a = ap.parse_args()
    if os.path.exists(a.pdf):
        pdf = open(a.pdf, "rb").read()
    else:
        pdf = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "mkpdf.py"), a.pdf], check=True,
                             capture_output=True).stdout
    model = {"name": "m", "path": os.path.abspath(a.model), "default": True, "dtype": a.dtype}
    if a.max_image_tokens:
        model["max_image_tokens"] = a.max_image_tokens
    fields = {"cache": "false"}
    if a.pages:
        fields["pages"] = a.pages
    body, ct = multipart(fields, [("file", "doc.pdf", pdf, "application/pdf")])
    print(f"PDF {a.pdf}: {len(pdf)} bytes; model {a.model}; {os.cpu_count()} CPUs "
          f"(load average {os.getloadavg()[0]:.2f} at start: timings on a shared machine are noisy)")
    items = None
    for threads in [int(x) for x in a.threads.split(",")]:
        for workers in [int(x) for x in a.workers.split(",")]:
            extra = {"max_requests": "0", "threads": str(threads), "request_timeout": "3600.0"}
            if a.pack_cache:
                os.makedirs(a.pack_cache, exist_ok=True)
                extra["pack_cache"] = '"%s"' % os.path.abspath(a.pack_cache)
            limits = {"max_body_bytes": '"64M"', "render_budget": "600.0"}
            t_start = time.time()
            s = Server(workers=workers, models=[model], extra=extra, limits=limits)
            s.start(wait=False)
            try:
                s.wait_ready(timeout=1800)
                info = s.get("/info").json()["models"][0]
                print(f"  server up in {time.time() - t_start:.1f} s (weights {info['dtype']}, load_ms "
                      f"{info.get('load_ms')})", flush=True)
                r = s.request("POST", "/embed/document", body=body, headers={"Content-Type": ct}, timeout=3600)
                assert r.status == 200, (r.status, r.body[:300])   # warm-up (and the pages' sizes)
                items = r.json()["data"]
                print(f"  warm-up: {len(items)} pages in {r.elapsed:.2f} s, Server-Timing {timing(r.headers)}", flush=True)
                n_pages = len(items)
                lock, done, tims, lat = threading.Lock(), [0], [], []
                t_end = time.time() + a.seconds

                def client():
                    k = 0
                    while k < a.min_requests or time.time() < t_end:
                        q = s.request("POST", "/embed/document", body=body, headers={"Content-Type": ct}, timeout=3600)
                        assert q.status == 200, (q.status, q.body[:300])
                        with lock:
                            done[0] += 1
                            tims.append(timing(q.headers))
                            lat.append(q.elapsed)
                        k += 1
                t0 = time.time()
                th = [threading.Thread(target=client) for _ in range(workers)]
                for t in th:
                    t.start()
                for t in th:
                    t.join()
                wall = time.time() - t0
                if not done[0]:   # --seconds 0 --min-requests 0: the first request is the one measured
                    done[0], tims, lat, wall = 1, [timing(r.headers)], [r.elapsed], r.elapsed
                pages = done[0] * n_pages
                per = {k: sum(t.get(k, 0) for t in tims) / pages for k in ("render", "decode", "model")}
                print(f"{info['name']} ({info.get('arch')}, dtype {info['dtype']}), {workers} worker(s) x {threads} "
                      f"thread(s): {done[0]} requests x {n_pages} pages ({items[0]['width']}x{items[0]['height']} "
                      f"first) in {wall:.1f} s = {pages / wall:.2f} pages/s; per page in a worker: render "
                      f"{per['render']:.1f} ms, preprocess {per['decode']:.1f} ms, model {per['model']:.1f} ms; "
                      f"request p50 {sorted(lat)[len(lat) // 2]:.2f} s")
            finally:
                s.stop()
    rss, runs = renderer_peak_rss(pdf, items)
    print(f"renderer peak RSS: {rss / 1024:.1f} MiB (pdftoppm, the server's {runs} runs for these {len(items)} pages "
          f"at their sizes; largest run)")


if __name__ == "__main__":
    main()
