"""The executor on a real GPU (issue 18). Skipped unless MMEMBED_GPU_DEVICE
names one ("cuda:0"): tools/bench/device_executor.sh packs the `make GPU=1`
build, nginx and these tests for a GPU machine and runs them there.

Checked: CLIP vectors from the GPU executor against the Hugging Face
references and the workers' CPU f32 path (cosine >= 0.999, f16 and bf16,
texts and images), batching invariance (a request's vectors alone vs in a
batch of four workers' requests: cosine >= 0.9999), and SIGKILLs of the
executor under load (only 200 or 503 + Retry-After, it restarts and
serves). Then, printed and never asserted, JPEG uploads/s and texts/s
through nginx with the model on the GPU vs in the workers
(MMEMBED_GPU_MODEL: a ViT-B/32-shaped folder; MMEMBED_BENCH_SECONDS)."""
import base64
import json
import os
import signal
import threading
import time

from harness import Server, skip, wait_until
from test_embed import FX, TINY, cos, img, multipart
from test_executor import exec_pid, executor, executor_chaos, post_retry, vecs

DEV = os.environ.get("MMEMBED_GPU_DEVICE", "")
MIN_COS = 0.999      # f16 / bf16 operands, f32 accumulation (the bound)
MIN_BATCH = 0.9999   # the same input alone vs in a batch


def need_gpu():
    if not DEV:
        skip("no GPU here: MMEMBED_GPU_DEVICE is unset (tools/bench/device_executor.sh runs this on a GPU machine)")


def server(models, workers=2, **kw):
    s = Server(workers=workers, models=models, **kw)
    if os.environ.get("MMEMBED_AS_ROOT"):   # a machine without www-data: workers stay root
        s.settings.pop("user", None)
        s.settings.pop("group", None)
        s.write_conf()
    return s


def test_gpu_vectors_match_hf_and_cpu():
    need_gpu()
    texts = json.load(open(os.path.join(FX, "text_emb.json")))
    images = json.load(open(os.path.join(FX, "image_emb.json")))
    models = [{"name": "cpu", "path": TINY, "default": True},
              {"name": "gpu-f16", "path": TINY, "device": DEV},
              {"name": "gpu-bf16", "path": TINY, "device": DEV, "gpu_dtype": "bf16"}]
    with server(models) as s:
        ex = executor(s)
        print(f"    executor: {ex['backend']}; " +
              ", ".join(f"{m['name']} {m['run']} {m['device_bytes'] / 2**20:.1f} MiB" for m in ex["models"]))
        assert "cuda" in ex["backend"] and all(m["run"] == "backend" for m in ex["models"]), ex
        worst = {}
        tlist = [t for t in texts if t["text"]]
        for model in ("cpu", "gpu-f16", "gpu-bf16"):
            for at in range(0, len(tlist), 32):
                batch = tlist[at:at + 32]
                got = vecs(s.post_json("/v1/embeddings", {"input": [t["text"] for t in batch], "model": model,
                                                           "cache": False}))
                for v, t in zip(got, batch):
                    c = cos(v, t["embedding"])
                    worst[(model, "text")] = min(worst.get((model, "text"), 1), c)
            for e in images:   # every fixture image (L, RGBA, P decode to RGB as HF's do) that was packed
                if not os.path.exists(os.path.join(FX, "images", e["file"])):
                    continue
                v = vecs(s.post_json("/embed/image", {"images": [base64.b64encode(img(e["file"])).decode()],
                                                      "model": model, "cache": False}))[0]
                worst[(model, "image")] = min(worst.get((model, "image"), 1), cos(v, e["embedding"]))
        print("    worst cosine to HF: " + ", ".join(f"{m} {k} {c:.6f}" for (m, k), c in sorted(worst.items())))
        assert all(c >= MIN_COS for c in worst.values()), worst
        # GPU vs our CPU f32, the same requests
        for model in ("gpu-f16", "gpu-bf16"):
            a = vecs(s.post_json("/v1/embeddings", {"input": [t["text"] for t in tlist[:16]], "model": "cpu",
                                                    "cache": False}))
            b = vecs(s.post_json("/v1/embeddings", {"input": [t["text"] for t in tlist[:16]], "model": model,
                                                    "cache": False}))
            assert min(cos(x, y) for x, y in zip(a, b)) >= MIN_COS, model


def test_gpu_batches_across_workers_without_changing_vectors():
    need_gpu()
    workers = 4
    texts = ["a photo of a cat", "two dogs playing in the snow", "a diagram", "x"]
    models = [{"name": "gpu", "path": TINY, "device": DEV, "default": True}]
    with server(models, workers=workers, extra={"executor": "{ batch_delay_us = 20000; }"}) as s:
        alone = {t: vecs(s.post_json("/v1/embeddings", {"input": [t], "cache": False}))[0] for t in texts}
        pid = exec_pid(s)
        os.kill(pid, signal.SIGSTOP)
        try:
            out = [None] * workers

            def go(i):
                out[i] = post_retry(s, "/v1/embeddings", {"input": texts, "cache": False})
            ts = [threading.Thread(target=go, args=(i,)) for i in range(workers)]
            for t in ts:
                t.start()
            wait_until(lambda: executor(s)["slots_in_use"] == workers, timeout=20, what="slots filled")
        finally:
            os.kill(pid, signal.SIGCONT)
        for t in ts:
            t.join(60)
        for r in out:
            for v, t in zip(vecs(r), texts):
                assert cos(v, alone[t]) >= MIN_BATCH, (t, cos(v, alone[t]))
        st = executor(s)["batches"]
        assert st["max_requests"] >= workers and st["max_workers"] >= workers, st


def test_gpu_executor_killed_under_load():
    need_gpu()
    # the CPU executor's chaos test, on the GPU's executor (each restart uploads the weights again)
    executor_chaos(server, [{"name": "tiny-x", "path": TINY, "device": DEV, "default": True}])


def bench(s, model, seconds, clients, body, ctype):
    done, lock = [0, 0], threading.Lock()
    stop = time.time() + seconds

    def client():
        while time.time() < stop:
            r = s.request("POST", f"/embed/image?model={model}" if ctype != "application/json" else "/v1/embeddings",
                          body=body, headers={"Content-Type": ctype}, timeout=60)
            with lock:
                done[0 if r.status == 200 else 1] += 1
            if r.status == 503:
                time.sleep(0.002)   # a polite client (Retry-After is 1 s; the bench retries sooner)
    ts = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join(seconds + 60)
    # every request that started before the stop is counted, over the time until the last one ended
    return done[0] / (time.time() - t0), done[1]


def test_gpu_throughput_end_to_end():
    need_gpu()
    path = os.environ.get("MMEMBED_GPU_MODEL")
    if not path:
        skip("MMEMBED_GPU_MODEL unset (a ViT-B/32-shaped CLIP folder)")
    secs = float(os.environ.get("MMEMBED_BENCH_SECONDS", "10"))
    workers = int(os.environ.get("MMEMBED_BENCH_WORKERS", str(os.cpu_count() or 4)))
    jpeg = img("photo640x480.jpg")
    for where in ("cpu", DEV):
        models = [{"name": "m", "path": path, "device": where, "default": True}]
        # queues deep enough for 64 clients; a slot per worker and more
        with server(models, workers=workers, extra={"queue_depth": "32", "executor": "{ slots = 256; }"}) as s:
            body, ct = multipart({"model": "m", "cache": "false"}, [("image", "a.jpg", jpeg, "image/jpeg")])
            vecs(s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct}))   # warm
            for clients in (1, 16, 64):
                rate, errs = bench(s, "m", secs, clients, body, ct)
                print(f"    {where}: {workers} workers, {clients} clients: {rate:.1f} JPEG uploads/s (640x480), "
                      f"{errs} non-200")
            tb = json.dumps({"input": ["a photo of a cat on a sofa"] * 64, "model": "m", "cache": False}).encode()
            rate, errs = bench(s, "m", secs, 16, tb, "application/json")
            print(f"    {where}: 16 clients x 64 texts: {rate * 64:.0f} texts/s, {errs} non-200")
            if where != "cpu":
                st = executor(s)["batches"]
                print(f"    executor batches: {st['count']}, mean inputs {st['mean_inputs']}, max {st['max_inputs']}, "
                      f"across workers {st['across_workers']}, busy {st['busy_seconds']} s")
