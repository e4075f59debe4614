#!/usr/bin/env python3
"""Memory and load time per dtype (not a test): for each dtype and pool size,
start the master (through the test harness, real nginx) with the ViT-B/32-shaped
model of `make run`, send every worker image and text requests so both towers'
weights are touched, then report from /proc/<pid>/smaps(_rollup) (tools/pss_report.py):
the pack size, each worker's Pss, the total Pss of master + workers, and the
master's weight preparation time (/info load_ms: read safetensors, convert,
pack into the shared memfd) and, with a pack cache (a fresh directory per
dtype: the first start builds and stores the pack, later starts map it),
the preparation time of a start that maps it.

Usage: tools/mem_report.py [--dtypes f32,bf16,q8] [--workers 1,2,4]
Uses build/test/mmembed (make test-build) and models/clip-vit-b32-synthetic (make default-model)."""
import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from harness import Server  # noqa: E402
from pss_report import report  # noqa: E402

MODEL = os.path.join(ROOT, "models", "clip-vit-b32-synthetic")
IMG = os.path.join(ROOT, "tests", "fixtures", "clip", "images", "photo640x480.jpg")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtypes", default="f32,bf16,q8")
    ap.add_argument("--workers", default="1,2,4")
    a = ap.parse_args()
    data = open(IMG, "rb").read()
    b = "----mem"
    body = (f'--{b}\r\nContent-Disposition: form-data; name="cache"\r\n\r\nfalse\r\n'
            f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    print("ViT-B/32 shape (synthetic weights), every worker served images and texts; MiB")
    print(f"{'dtype':5} {'workers':>7} {'pack':>7} {'worker Pss':>11} {'total Pss':>10} {'load ms':>8}  pack cache")
    for dt in a.dtypes.split(","):
        cache = tempfile.mkdtemp(prefix="mmembed-packs-")
        for w in [0] + [int(x) for x in a.workers.split(",")]:
            models = [{"name": "clip", "path": MODEL, "default": True, "dtype": dt}]
            extra = {"max_requests": "0", "pack_cache": f'"{cache}"'}
            if w == 0:  # the start that builds the pack (cache empty): its preparation time only
                with Server(workers=1, models=models, extra=extra) as s:
                    info = s.get("/info").json()["models"][0]
                    print(f"{info['dtype']:5} {'-':>7} {'':>7} {'':>11} {'':>10} {info['load_ms']:>8.0f}  "
                          f"{info['pack_cache']} (built from the checkpoint)")
                continue
            with Server(workers=w, models=models, extra=extra) as s:
                info = s.get("/info").json()["models"][0]
                pids = set(s.worker_pids())
                for _ in range(4 * w):
                    s.request("POST", "/embed/image", body=body,
                              headers={"Content-Type": f"multipart/form-data; boundary={b}"})
                    s.post_json("/embed/text", {"texts": ["a photo of a cat"], "cache": False})
                rep = report(s.master.pid, pids)
                ws = [r for r in rep["processes"] if r["role"] == "worker"]
                total = sum(r["pss_kb"] for r in rep["processes"] if r["role"] in ("master", "worker"))
                print(f"{info['dtype']:5} {w:>7} {rep['pack_kb'] / 1024:>7.0f} "
                      f"{sum(r['pss_kb'] for r in ws) / len(ws) / 1024:>11.0f} {total / 1024:>10.0f} "
                      f"{info['load_ms']:>8.0f}  {info['pack_cache']}")


if __name__ == "__main__":
    main()
