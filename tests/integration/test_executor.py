"""The device executor (issue 18, docs/GPU.md): models with device =
"cpu-executor" run in one executor process over the CPU backend -- the same
process and queue a GPU's executor uses, with the CPU backend in place of
CUDA -- while workers parse, decode, tokenize and preprocess. Checked here:
its vectors equal the workers' own (CLIP, BERT and Qwen2-VL on the
executor's backend, USE-Lite through its CPU encode there), requests of
several workers share one batch, backpressure (a full queue: 503 at once),
deadlines (504, the worker survives), an executor that cannot start
(device = "cuda" without a GPU build: /health and /info say why, its
models answer 503, other models serve), and SIGKILLs of the executor under
load: only 200 or 503 + Retry-After, nothing hangs, it restarts and serves.

Batches are made deterministic by SIGSTOPping the executor while workers
fill their slots, then SIGCONT: it takes every waiting slot at once."""
import math
import os
import random
import signal
import tempfile
import threading
import time

from harness import Server, wait_until
from test_embed import TINY, img
from test_qwen2vl import b64 as qb64
from test_qwen2vl import model_dir as qwen_dir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BERT = os.path.join(ROOT, "tests", "fixtures", "bert", "bert-tiny")
USE = os.path.join(ROOT, "models", "use-lite")   # `make use-model` (make check has it)
MIN_COS = 0.9999   # executor vs worker: the same kernels, batched differently (the batching bound)
TEXTS = ["a photo of a cat", "two dogs playing in the snow", "a diagram of a transformer", "x"]
IMAGES = ["rgb224.png", "photo640x480.jpg", "gray500x400.jpg", "tiny31x17.png"]


def cos(a, b):
    assert len(a) == len(b), (len(a), len(b))
    d = sum(x * y for x, y in zip(a, b))
    return d / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(x * x for x in b)))


def vecs(r):
    assert r.status == 200, r
    return [d["embedding"] for d in r.json()["data"]]


def executor(s, i=0):
    return s.get("/info").json()["executors"][i]


def exec_pid(s, i=0):
    return wait_until(lambda: executor(s, i)["state"] == "up" and executor(s, i)["pid"], timeout=30,
                      what="executor up")


def b64img(name):
    import base64
    return base64.b64encode(img(name)).decode()


def post_retry(s, path, body, timeout=60):
    """A polite client: a 503 (a worker busy, or the queue full) is retried after a moment."""
    end = time.time() + timeout
    while True:
        r = s.post_json(path, body, timeout=timeout)
        if r.status != 503 or time.time() > end:
            return r
        time.sleep(0.02)


def test_executor_vectors_equal_the_workers():
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        qwen = qwen_dir(d)
        models = [{"name": "tiny", "path": TINY, "default": True},
                  {"name": "tiny-x", "path": TINY, "device": "cpu-executor"},
                  {"name": "bert", "path": BERT},
                  {"name": "bert-x", "path": BERT, "device": "cpu-executor"},
                  {"name": "qwen", "path": qwen},
                  {"name": "qwen-x", "path": qwen, "device": "cpu-executor"}]
        pairs = [("tiny", "tiny-x"), ("bert", "bert-x"), ("qwen", "qwen-x")]
        if os.path.exists(os.path.join(USE, "config.json")):   # no backend forward: its CPU encode in the executor
            models += [{"name": "use", "path": USE}, {"name": "use-x", "path": USE, "device": "cpu-executor"}]
            pairs.append(("use", "use-x"))
        else:
            print("    (models/use-lite missing: the executor's CPU-encode path is not checked; make use-model)")
        with Server(workers=2, models=models) as s:
            info = s.get("/info").json()
            dev = {m["name"]: m["device"] for m in info["models"]}
            assert dev["tiny"] == "cpu" and dev["tiny-x"] == "cpu-executor", dev
            ex = info["executors"]
            assert len(ex) == 1 and ex[0]["device"] == "cpu-executor" and ex[0]["state"] == "up", ex
            run = {m["name"]: m["run"] for m in ex[0]["models"]}
            # every family with a backend forward runs on the executor's backend; USE-Lite, its CPU encode there
            want = {"tiny-x": "backend", "bert-x": "backend", "qwen-x": "backend"}
            if ("use", "use-x") in pairs:
                want["use-x"] = "cpu-encode"
            assert run == want, run
            assert ex[0]["backend"].startswith("cpu"), ex[0]
            assert {m["name"]: m["device_bytes"] for m in ex[0]["models"]}["tiny-x"] > 0, ex[0]
            h = s.get("/health").json()
            assert h["status"] == "ok" and h["executors"] == [{"device": "cpu-executor", "state": "up", "deaths": 0}], h

            worst = 1.0
            for a, b in pairs:
                va = vecs(s.post_json("/v1/embeddings", {"input": TEXTS, "model": a, "cache": False}))
                vb = vecs(s.post_json("/v1/embeddings", {"input": TEXTS, "model": b, "cache": False}))
                for x, y in zip(va, vb):
                    worst = min(worst, cos(x, y))
                    assert cos(x, y) >= MIN_COS, (a, cos(x, y))
            for a, b in (("tiny", "tiny-x"), ("qwen", "qwen-x")):
                imgs = [b64img(n) for n in IMAGES]
                va = vecs(s.post_json("/embed/image", {"images": imgs, "model": a, "cache": False}))
                vb = vecs(s.post_json("/embed/image", {"images": imgs, "model": b, "cache": False}))
                assert len(va) == len(vb) == len(IMAGES)
                for x, y in zip(va, vb):
                    worst = min(worst, cos(x, y))
                    assert cos(x, y) >= MIN_COS, (a, cos(x, y))
            # one sequence of text and image (Qwen2-VL), and CLIP's text + image pair
            for a, b in (("qwen", "qwen-x"), ("tiny", "tiny-x")):
                body = {"text": "a red square", "image": qb64("rgb224.png"), "cache": False}
                va = vecs(s.post_json("/embed/multimodal", dict(body, model=a)))[0]
                vb = vecs(s.post_json("/embed/multimodal", dict(body, model=b)))[0]
                assert cos(va, vb) >= MIN_COS, (a, cos(va, vb))
            print(f"    executor vs worker: worst cosine {worst:.7f}")
            st = executor(s)["batches"]
            assert st["count"] >= 8 and st["inputs"] >= len(pairs) * len(TEXTS) + 2 * len(IMAGES), st
            m = s.metrics()
            assert m['mmembed_executor_up{device="cpu-executor"}'] == 1, m
            assert m['mmembed_executor_batches_total{device="cpu-executor"}'] == st["count"]


def test_requests_of_several_workers_share_a_batch():
    workers = 4
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True}]
    with Server(workers=workers, models=models, extra={"executor": "{ slots = 8; batch_delay_us = 20000; }"}) as s:
        alone = {t: vecs(s.post_json("/v1/embeddings", {"input": [t], "cache": False}))[0] for t in TEXTS}
        pid = exec_pid(s)
        before = executor(s)["batches"]
        os.kill(pid, signal.SIGSTOP)
        try:
            out = [None] * workers

            def go(i):
                out[i] = post_retry(s, "/v1/embeddings", {"input": [TEXTS[i], TEXTS[(i + 1) % 4]], "cache": False})
            ts = [threading.Thread(target=go, args=(i,)) for i in range(workers)]
            for t in ts:
                t.start()
            # every worker has filled a slot and waits on it
            wait_until(lambda: executor(s)["slots_in_use"] == workers, timeout=20, what="4 slots filled")
        finally:
            os.kill(pid, signal.SIGCONT)
        for t in ts:
            t.join(60)
        for i, r in enumerate(out):
            v = vecs(r)
            assert cos(v[0], alone[TEXTS[i]]) >= MIN_COS and cos(v[1], alone[TEXTS[(i + 1) % 4]]) >= MIN_COS, i
        st = executor(s)["batches"]
        # the four requests, from four workers, ran as one batch
        assert st["count"] == before["count"] + 1, (before, st)
        assert st["max_requests"] >= workers and st["max_workers"] >= workers, st
        assert st["across_workers"] >= 1 and st["max_inputs"] >= 2 * workers, st


def test_token_budget_splits_batches():
    """max_batch_tokens 1: every waiting request goes in a batch of its own
    (the first always goes), oldest first; none is lost."""
    workers = 3
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True}]
    with Server(workers=workers, models=models,
                extra={"executor": "{ slots = 8; max_batch_tokens = 1; batch_delay_us = 1000; }"}) as s:
        pid = exec_pid(s)
        before = executor(s)["batches"]["count"]
        os.kill(pid, signal.SIGSTOP)
        try:
            out = [None] * workers

            def go(i):
                out[i] = post_retry(s, "/v1/embeddings", {"input": [TEXTS[i]], "cache": False})
            ts = [threading.Thread(target=go, args=(i,)) for i in range(workers)]
            for t in ts:
                t.start()
            wait_until(lambda: executor(s)["slots_in_use"] == workers, timeout=20, what="slots filled")
        finally:
            os.kill(pid, signal.SIGCONT)
        for t in ts:
            t.join(60)
        assert all(r.status == 200 for r in out), out
        st = executor(s)["batches"]
        assert st["count"] - before == workers and st["max_requests"] == 1, st


def test_an_idle_executor_does_not_wait_for_a_batch():
    """batch_delay_us = 1 s: a lone request on an idle executor runs at once
    (each of these would take over a second if the executor waited for
    batch-mates when idle)."""
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True}]
    with Server(workers=1, models=models, extra={"executor": "{ batch_delay_us = 1000000; }"}) as s:
        exec_pid(s)
        for i in range(4):
            r = s.post_json("/v1/embeddings", {"input": [f"alone {i}"], "cache": False})
            assert r.status == 200 and r.elapsed < 0.8, (i, r, r.elapsed)
        assert executor(s)["batches"]["count"] == 4


def test_full_queue_503_at_once_and_deadline_504():
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True}]
    extra = {"executor": "{ slots = 1; }", "request_timeout": "3.0", "heartbeat_timeout": "30.0"}
    with Server(workers=2, models=models, extra=extra) as s:
        pid = exec_pid(s)
        os.kill(pid, signal.SIGSTOP)
        try:
            first = {}
            t = threading.Thread(target=lambda: first.setdefault("r", s.post_json(
                "/v1/embeddings", {"input": "held", "cache": False}, timeout=30)))
            t.start()
            wait_until(lambda: executor(s)["slots_in_use"] == 1, timeout=20, what="the one slot filled")
            # the one slot is taken: a second request is refused at once, with Retry-After
            r = s.post_json("/v1/embeddings", {"input": "refused", "cache": False})
            # (nginx tries each worker on a 503; the last one's answer comes back)
            assert r.status == 503 and r.headers.get("retry-after") == "1", r
            assert r.elapsed < 2.0, r.elapsed
            # the held request: no answer before 90% of request_timeout -> 504 from its worker
            t.join(30)
            r = first["r"]
            assert r.status == 504 and r.json()["error"]["code"] == "executor_timeout", r
            assert 2.0 < r.elapsed < 3.0, r.elapsed
        finally:
            os.kill(pid, signal.SIGCONT)
        m = s.metrics()
        assert m['mmembed_executor_rejected_full_total{device="cpu-executor"}'] >= 1, m
        assert m['mmembed_executor_timeouts_total{device="cpu-executor"}'] == 1, m
        assert m["mmembed_worker_timeouts_total"] == 0   # the worker answered itself; nobody was killed
        # the slot came back: the executor serves again
        assert s.post_json("/v1/embeddings", {"input": "again", "cache": False}).status == 200
        wait_until(lambda: executor(s)["slots_in_use"] == 0, what="slot free")


def test_executor_that_cannot_start():
    """device = "cuda" in a build without the CUDA backend: the executor's
    start fails and is retried with back-off; /health and /info say so and
    why, its model answers 503 + Retry-After at once, the others serve."""
    models = [{"name": "tiny", "path": TINY, "default": True},
              {"name": "tiny-gpu", "path": TINY, "device": "cuda"}]
    s = Server(workers=1, models=models, extra={"backoff_max": "1.0"})
    try:
        s.start(wait=False)

        def health():
            try:
                r = s.get("/health")
                return r if r.body.startswith(b"{") else None
            except OSError:
                return None
        r = wait_until(lambda: (lambda r: r if r and r.json().get("status") == "degraded" else None)(health()),
                       timeout=30, what="/health degraded")
        # the pool serves: 200, and what is down is named
        assert r.status == 200 and r.json()["executors"][0]["device"] == "cuda:0", r.json()
        assert r.json()["executors"][0]["state"] in ("down", "starting") and r.json()["executors"][0]["deaths"] >= 1
        ex = wait_until(lambda: (lambda e: e if e.get("error") else None)(executor(s)), timeout=30, what="error")
        assert "backend" in ex["error"] and ex["state"] in ("down", "starting"), ex
        r = s.post_json("/v1/embeddings", {"input": "x", "model": "tiny-gpu"})
        assert r.status == 503 and r.headers.get("retry-after") == "1" and r.elapsed < 2, r
        assert s.post_json("/v1/embeddings", {"input": "x", "model": "tiny"}).status == 200
        wait_until(lambda: s.metrics()['mmembed_executor_starts_total{device="cuda:0"}'] >= 3, timeout=30,
                   what="restarts with back-off")
        assert "crash-looping" in s.log()
    finally:
        s.stop()


def test_executor_sigkilled_under_load():
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True}]
    executor_chaos(Server, models)


def executor_chaos(make_server, models):
    """Clients at 2x the workers (texts and images) while the executor is
    SIGKILLed every 0.5-1.5 s (test_executor_gpu.py runs it on a GPU)."""
    workers = 3
    seconds = int(os.environ.get("MMEMBED_CHAOS_SECONDS", "12"))
    device = models[0]["device"]
    with make_server(workers=workers, models=models, extra={"backoff_max": "1.0", "queue_depth": "2"}) as s:
        ref_t = vecs(s.post_json("/v1/embeddings", {"input": ["a photo of a cat"], "cache": False}))[0]
        ref_i = vecs(s.post_json("/embed/image", {"images": [b64img("rgb224.png")], "cache": False}))[0]
        stop = time.time() + seconds
        counts, bad, lock = {}, [], threading.Lock()

        def client(i):
            n = 0
            while time.time() < stop:
                n += 1
                try:
                    if n % 2:
                        r = s.post_json("/v1/embeddings", {"input": ["a photo of a cat", f"t {i} {n}"], "cache": False},
                                        timeout=30)
                        want = ref_t
                    else:
                        r = s.post_json("/embed/image", {"images": [b64img("rgb224.png")], "cache": False}, timeout=30)
                        want = ref_i
                except Exception as e:  # noqa: BLE001 - a connection error or a hang is a failure
                    with lock:
                        bad.append(repr(e))
                    continue
                with lock:
                    counts[r.status] = counts.get(r.status, 0) + 1
                    if r.status == 200:
                        if cos(r.json()["data"][0]["embedding"], want) < MIN_COS:
                            bad.append("wrong vector")
                    elif r.status != 503 or r.headers.get("retry-after") != "1":
                        bad.append(repr(r) + r.body.decode()[:200])
                if r.status == 503:
                    time.sleep(0.01)
        ts = [threading.Thread(target=client, args=(i,)) for i in range(2 * workers)]
        for t in ts:
            t.start()
        kills, rng = 0, random.Random(18)
        while time.time() < stop - 1.5:
            time.sleep(0.5 + rng.random())
            try:
                ex = executor(s)
            except Exception:  # noqa: BLE001 - /info itself may meet a busy worker
                continue
            if ex["state"] == "up" and ex["pid"]:
                try:
                    os.kill(ex["pid"], signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        for t in ts:
            t.join(60)
        assert not any(t.is_alive() for t in ts), "a client hung"
        m = s.metrics()
        deaths = m[f'mmembed_executor_deaths_total{{device="{device}"}}']
        print(f"    executor chaos {seconds}s: {kills} kills, responses {counts}, deaths {deaths:.0f}")
        assert not bad, bad[:5]
        assert kills >= 3 and counts.get(200, 0) > 20, (kills, counts)
        assert deaths >= kills
        assert m["mmembed_worker_crashes_total"] == 0   # the workers never died with it
        # it comes back and serves
        # (a kill just before the end may leave it in its restart back-off: /health says "degraded" meanwhile)
        wait_until(lambda: s.get("/health").json().get("status") == "ok", timeout=30, what="healthy again")
        assert s.get("/health").json()["executors"][0]["state"] == "up"
        r = s.post_json("/v1/embeddings", {"input": ["a photo of a cat"], "cache": False})
        assert cos(vecs(r)[0], ref_t) >= MIN_COS
        wait_until(lambda: executor(s)["slots_in_use"] == 0, what="no slot left held")


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_reload_starts_a_new_executor_and_stops_the_old_one():
    """SIGHUP: the new generation's executor starts with its models (here
    one moved onto it), the old one stops once its workers are gone, and
    a graceful stop leaves no executor behind."""
    models = [{"name": "tiny-x", "path": TINY, "device": "cpu-executor", "default": True},
              {"name": "bert", "path": BERT}]
    with Server(workers=1, models=models) as s:
        old = exec_pid(s)
        v = vecs(s.post_json("/v1/embeddings", {"input": ["a cat"], "model": "bert", "cache": False}))[0]
        s.models = [models[0], dict(models[1], device="cpu-executor")]
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: s.status()["generation"] == 2 and len(s.worker_pids()) == 1, timeout=30, what="reload")
        # (/info from a worker of the new generation names the new executor)
        new = wait_until(lambda: (lambda e: e["state"] == "up" and e["pid"] != old and e["pid"])(executor(s)),
                         timeout=30, what="the new generation's executor up")
        wait_until(lambda: not pid_alive(old), timeout=30, what="old executor stopped")
        assert {m["name"]: m["run"] for m in executor(s)["models"]} == {"tiny-x": "backend", "bert": "backend"}
        w = vecs(s.post_json("/v1/embeddings", {"input": ["a cat"], "model": "bert", "cache": False}))[0]
        assert cos(v, w) >= MIN_COS
        # it stopped cleanly, asked to: nothing logged as a death
        assert f"pid {old} died" not in s.log() and f"pid {old} exited" not in s.log(), s.log()[-2000:]
    assert not pid_alive(new), "the executor outlived the master"
