#!/usr/bin/env python3
"""Serving-core benchmark (not a test): GET /health through nginx with 2
workers (wrk), and the time from SIGKILL of a worker to its replacement
serving. Usage: tools/bench_serving.py [--seconds 10] [--connections 8,32]
Needs `make test-build` (uses build/test/mmembed; the hot path is identical)."""
import argparse
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import Server  # noqa: E402


def wrk(port, conns, secs, path="/health"):
    out = subprocess.run(["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--latency", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, lat.get("50"), lat.get("99"), int(non2xx.group(1)) if non2xx else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", default="4,8,32")
    a = ap.parse_args()
    with Server(workers=2, extra={"max_requests": "0"}) as s:
        wrk(s.port, 8, 2)  # warm-up
        print(f"GET /health through nginx, 2 workers, {a.seconds}s per run (wrk -t2)")
        for c in [int(x) for x in a.connections.split(",")]:
            rps, p50, p99, bad = wrk(s.port, c, a.seconds)
            print(f"  connections={c:3d}: {rps:9.0f} req/s  p50 {p50}  p99 {p99}  non-2xx {bad}")
        times = []
        for _ in range(4):   # 5.5 s apart: a slot dying twice within 5 s is a crash loop (backoff)
            before = set(s.worker_pids())
            victim = sorted(before)[0]
            t0 = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while True:
                st = s.status()
                new = [w for w in st["workers"] if w["pid"] not in before and w["state"] == "idle"]
                if new:
                    break
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(5.5)
        times.sort()
        print(f"SIGKILL -> replacement idle and serving: median {times[len(times) // 2]:.1f} ms, "
              f"max {times[-1]:.1f} ms over {len(times)} kills (includes /status polling)")


if __name__ == "__main__":
    main()
