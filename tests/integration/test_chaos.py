"""Chaos under load: clients at 2x the worker count while a random worker is
SIGKILLed every second. Every answer must be 200 or 503 + Retry-After; no
connection errors, no 502/504. Run without a queue and with one: the queued
requests (and batches) of a killed worker are retried by nginx elsewhere,
never left hanging."""
import os
import random
import signal
import threading
import time

from harness import Server
from test_embed import MODELS

SECONDS = int(os.environ.get("MMEMBED_CHAOS_SECONDS", "30"))


def test_chaos_kill_random_worker_every_second():
    chaos(queue_depth=0)


def test_chaos_with_queues_and_batches():
    chaos(queue_depth=4)


def chaos(queue_depth):
    workers = 4
    with Server(workers=workers, models=MODELS[:1], extra={"backoff_max": "2.0", "queue_depth": str(queue_depth)}) as s:
        stop = time.time() + SECONDS
        counts, bad, lock = {}, [], threading.Lock()

        def client(i):
            n = 0
            while time.time() < stop:
                n += 1
                try:
                    if n % 3 == 0:
                        r = s.post_json("/v1/embeddings", {"input": [f"text {i} {n}", "a photo of a cat"]}, timeout=20)
                    else:
                        r = s.request("POST", "/__test/sleep?ms=%d" % (5 + (n * 13 + i) % 40), body=b"{}", timeout=20)
                except Exception as e:  # noqa: BLE001 - a connection error is a failure
                    with lock:
                        bad.append(repr(e))
                    continue
                with lock:
                    counts[r.status] = counts.get(r.status, 0) + 1
                    if r.status not in (200, 503) or (r.status == 503 and r.headers.get("retry-after") != "1"):
                        bad.append(repr(r))
                if r.status == 503:
                    time.sleep(0.005)   # a polite client backs off a little
        ts = [threading.Thread(target=client, args=(i,)) for i in range(2 * workers)]
        for t in ts:
            t.start()
        kills = 0
        rng = random.Random(7)
        while time.time() < stop - 0.5:
            time.sleep(1.0)
            st = s.get("/status")
            if st.status != 200:   # every worker busy or restarting: the overflow process answered 503
                continue
            pids = [w["pid"] for w in st.json()["workers"] if w["state"] in ("idle", "busy")]
            if pids:
                try:
                    os.kill(rng.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        for t in ts:
            t.join(60)
        assert not any(t.is_alive() for t in ts), "a client hung"
        m = s.metrics()
        print(f"    chaos {SECONDS}s, queue_depth {queue_depth}: {kills} kills, responses {counts}, restarts "
              f"{m['mmembed_worker_restarts_total']:.0f}, crashes {m['mmembed_worker_crashes_total']:.0f}, "
              f"backoffs {m['mmembed_worker_backoffs_total']:.0f}")
        assert not bad, bad[:5]
        assert counts.get(200, 0) > 50, counts
        assert m["mmembed_worker_crashes_total"] >= kills * 0.9
        assert m["mmembed_worker_restarts_total"] >= 1
        # the pool recovers fully
        from harness import wait_until
        wait_until(lambda: len(s.worker_pids()) == workers, timeout=15, what="pool recovered")
