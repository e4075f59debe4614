#!/usr/bin/env python3
"""Many clients at once (issue 17), not a test: with the shipped config's
shape (2 workers, 1 thread each, cache off, use-lite + clip-vit-b32), wrk at
1/4/8/16/32 concurrent connections sends one short text each
(POST /v1/embeddings) and, separately, one 640x480 JPEG each (POST
/embed/image, base64 JSON), once per queue_depth. Prints answered req/s
(all statuses), ok/s (200s: the throughput that counts), p50/p99 of all
answers and the share of 503s; every queue_depth runs in each round and the rounds
alternate their order, and the table shows each cell's median over rounds.

Usage: tools/bench_concurrency.py [--depths 0,4] [--clients 1,4,8,16,32]
                                  [--kinds text,image] [--seconds 5] [--rounds 2]
Uses build/test/mmembed (make test-build), wrk, and the models of `make run`."""
import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness import Server  # noqa: E402

MODELS = [{"name": "use-lite", "path": os.path.join(ROOT, "models", "use-lite"), "default": True},
          {"name": "clip-vit-b32", "path": os.path.join(ROOT, "models", "clip-vit-b32-synthetic"), "dtype": "auto"}]
JPEG = os.path.join(ROOT, "tests", "fixtures", "clip", "images", "photo640x480.jpg")


def bodies():
    img = base64.b64encode(open(JPEG, "rb").read()).decode()
    return {"text": ("/v1/embeddings", json.dumps({"input": "a photo of a cat on a sofa", "model": "use-lite"})),
            "image": ("/embed/image", json.dumps({"images": [img], "model": "clip-vit-b32"}))}


def ms(v):
    n, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(port, path, body, conns, secs):
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n")
    try:
        out = subprocess.run(["wrk", f"-t{min(conns, 2)}", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "30s",
                              "-s", f.name, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": ms(lat["50"]), "p99": ms(lat["99"]),
            "share503": (int(non2xx.group(1)) / total) if non2xx and total else 0.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="0,4")
    ap.add_argument("--clients", default="1,4,8,16,32")
    ap.add_argument("--kinds", default="text,image")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    depths = [int(x) for x in a.depths.split(",")]
    clients = [int(x) for x in a.clients.split(",")]
    kinds = a.kinds.split(",")
    bd = bodies()
    cells = {}   # (kind, clients, depth) -> [result per round]
    servers = {d: Server(workers=2, models=MODELS, extra={"queue_depth": str(d), "jpeg_dct_scaling": "2",
                                                          "cache": "{ size_mb = 0; }"}) for d in depths}
    try:
        for s in servers.values():
            s.start()
        for rnd in range(a.rounds):
            order = depths if rnd % 2 == 0 else depths[::-1]
            for kind in kinds:
                path, body = bd[kind]
                for c in clients:
                    for d in order:
                        r = wrk(servers[d].port, path, body, c, a.seconds)
                        cells.setdefault((kind, c, d), []).append(r)
                        print(f"  round {rnd + 1} {kind:5s} c={c:2d} queue_depth={d}: {r['rps']:7.1f} req/s "
                              f"{r['rps'] * (1 - r['share503']):7.1f} ok/s "
                              f"p50 {r['p50']:7.1f} ms p99 {r['p99']:7.1f} ms 503 {100 * r['share503']:5.1f}%",
                              flush=True)
        for d, s in servers.items():
            m = s.metrics()
            n = m.get('mmembed_batch_size_count', 0)
            print(f"queue_depth={d}: mean batch {m.get('mmembed_batch_size_sum', 0) / n if n else 0:.2f} requests, "
                  f"mean queue wait {1e3 * m.get('mmembed_queue_wait_seconds_sum', 0) / max(1, m.get('mmembed_queue_wait_seconds_count', 1)):.1f} ms")
    finally:
        for s in servers.values():
            s.stop()
    print(f"\nmedians over {a.rounds} rounds of {a.seconds}s, 2 workers x 1 thread, cache off")
    print("| kind | clients | " + " | ".join(f"qd={d}: ok/s (req/s), p50/p99 ms, 503" for d in depths) + " |")
    print("|---|---|" + "---|" * len(depths))
    for kind in kinds:
        for c in clients:
            row = []
            for d in depths:
                rs = cells[(kind, c, d)]
                med = {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "share503")}
                ok = statistics.median(r["rps"] * (1 - r["share503"]) for r in rs)
                row.append(f"{ok:.0f} ({med['rps']:.0f}), {med['p50']:.1f}/{med['p99']:.1f}, "
                           f"{100 * med['share503']:.1f}%")
            print(f"| {kind} | {c} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
