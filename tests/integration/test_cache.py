"""The embedding cache shared by all workers (shared memory): hits are
bit-identical to misses, options never share entries, and SIGKILLed workers
never leave a torn or wrong vector behind."""
import base64
import os
import random
import signal
import threading
import time

from harness import Server, wait_until
from test_embed import MODELS, img, multipart


def test_cache_hits_are_identical_and_keyed_by_everything():
    with Server(workers=2, models=MODELS) as s:
        body = {"input": ["a photo of a cat", "a diagram"], "model": "tiny"}
        a = s.post_json("/v1/embeddings", body)
        b = s.post_json("/v1/embeddings", body)
        assert a.headers.get("x-cache") == "miss" and b.headers.get("x-cache") == "hit", (a, b, a.headers, b.headers)
        assert a.json()["data"] == b.json()["data"]                      # bit-identical floats
        # the other model never sees this entry
        c = s.post_json("/v1/embeddings", dict(body, model="tiny-bf16"))
        assert c.headers.get("x-cache") == "miss"
        # options applied after the cache give the right answers from a hit
        d8 = s.post_json("/v1/embeddings", dict(body, dimensions=8)).json()["data"][0]["embedding"]
        fresh8 = s.post_json("/v1/embeddings", dict(body, dimensions=8, cache=False))
        assert "x-cache" not in fresh8.headers
        assert d8 == fresh8.json()["data"][0]["embedding"]
        # raw vectors are cached before normalization: a hit equals a fresh computation of the
        # same request bit for bit (a different batch may differ by f32 rounding, ~1e-7)
        raw_miss = s.post_json("/embed/text", {"texts": ["a photo of a dog"], "normalize": False})
        raw_hit = s.post_json("/embed/text", {"texts": ["a photo of a dog"], "normalize": False})
        raw_fresh = s.post_json("/embed/text", {"texts": ["a photo of a dog"], "normalize": False, "cache": False})
        assert (raw_miss.headers.get("x-cache"), raw_hit.headers.get("x-cache")) == ("miss", "hit")
        assert raw_hit.json()["data"] == raw_miss.json()["data"] == raw_fresh.json()["data"]
        norm_hit = s.post_json("/embed/text", {"texts": ["a photo of a dog"]}).json()["data"][0]["embedding"]
        n = sum(x * x for x in raw_hit.json()["data"][0]["embedding"]) ** 0.5
        assert max(abs(a - b / n) for a, b in zip(norm_hit, raw_hit.json()["data"][0]["embedding"])) < 1e-6
        # images: a hit skips decoding; one changed byte is a different entry
        png = img("rgb224.png")
        fb, ct = multipart({}, [("image", "a.png", png, "image/png")])
        i1 = s.request("POST", "/embed/image", body=fb, headers={"Content-Type": ct})
        i2 = s.request("POST", "/embed/image", body=fb, headers={"Content-Type": ct})
        assert (i1.headers.get("x-cache"), i2.headers.get("x-cache")) == ("miss", "hit")
        assert i1.json()["data"] == i2.json()["data"]
        j = s.post_json("/embed/image", {"images": [base64.b64encode(png).decode()]})
        assert j.headers.get("x-cache") == "hit"                         # same bytes, other transport
        m = s.metrics()
        assert m["mmembed_cache_hits_total"] >= 4 and m["mmembed_cache_misses_total"] >= 3
        assert m['mmembed_cache_entries{kind="used"}'] >= 4


def test_cache_survives_worker_restart_and_clears_on_reload():
    import signal as sg
    with Server(workers=1, models=MODELS[:1]) as s:
        assert s.post_json("/embed/text", {"texts": ["persist me"]}).headers.get("x-cache") == "miss"
        os.kill(s.worker_pids()[0], sg.SIGKILL)
        wait_until(lambda: len(s.worker_pids()) == 1, what="restart")
        assert s.post_json("/embed/text", {"texts": ["persist me"]}).headers.get("x-cache") == "hit"
        s.signal(sg.SIGHUP)
        wait_until(lambda: s.status()["generation"] == 2 and len(s.worker_pids()) == 1, what="reload")
        assert s.post_json("/embed/text", {"texts": ["persist me"]}).headers.get("x-cache") == "miss"


def test_cache_stress_with_kills_never_returns_a_wrong_vector():
    # more keys than a 1 MiB cache holds: constant puts and evictions, so kills land mid-write
    texts = [f"key number {i}" for i in range(3000)]
    with Server(workers=3, models=MODELS[:1], extra={"backoff_max": "0.5", "cache": "{ size_mb = 1; }"}) as s:
        ref = {}
        for i in range(0, len(texts), 20):
            d = s.post_json("/embed/text", {"texts": texts[i:i + 20], "cache": False}).json()["data"]
            for t, item in zip(texts[i:i + 20], d):
                ref[t] = item["embedding"]
        stop = time.time() + 8
        checked, wrong, lock = [0], [], threading.Lock()

        def client(seed):
            rng = random.Random(seed)
            while time.time() < stop:
                batch = rng.sample(texts[:2600] if rng.random() < 0.5 else texts[:300], rng.randint(1, 6))
                try:
                    r = s.post_json("/embed/text", {"texts": batch}, timeout=10)
                except OSError:
                    continue
                if r.status != 200:
                    continue
                for t, item in zip(batch, r.json()["data"]):
                    with lock:
                        checked[0] += 1
                        # a torn or foreign vector is far off; batching changes only f32 rounding
                        if max(abs(a - b) for a, b in zip(item["embedding"], ref[t])) > 1e-5:
                            wrong.append(t)
        ts = [threading.Thread(target=client, args=(i,)) for i in range(6)]
        for t in ts:
            t.start()
        kills = 0
        while time.time() < stop - 0.3:
            time.sleep(0.25)
            pids = s.worker_pids()
            if pids:
                try:
                    os.kill(random.choice(pids), signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
        for t in ts:
            t.join(30)
        m = s.metrics()
        print(f"    cache stress: {checked[0]} vectors checked, {kills} kills, hits "
              f"{m['mmembed_cache_hits_total']:.0f}, inserts {m['mmembed_cache_inserts_total']:.0f}, evictions "
              f"{m['mmembed_cache_evictions_total']:.0f}, wrong {len(wrong)}")
        assert not wrong, wrong[:5]
        assert checked[0] > 200 and m["mmembed_cache_hits_total"] > 100
        assert m["mmembed_cache_evictions_total"] > 100, m
