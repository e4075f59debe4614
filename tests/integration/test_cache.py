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


def test_cache_keys_separate_instruction_input_type_and_token_ids():
    from test_embed import TINY
    models = [{"name": "tiny", "path": TINY, "default": True, "instruction": "query: "}]
    with Server(workers=1, models=models) as s:
        def emb(body):
            r = s.post_json("/v1/embeddings", dict(body, model="tiny"))
            assert r.status == 200, r
            return r.headers.get("x-cache"), r.json()["data"][0]["embedding"]

        def fresh(body):
            return emb(dict(body, cache=False))[1]
        plain = {"input": "a cat"}
        assert emb(plain)[0] == "miss"
        assert emb(plain)[0] == "hit"
        # an explicit instruction is a different model input: a miss, and the right vector
        for body in ({"input": "a cat", "instruction": "represent: "},
                     {"input": "a cat", "input_type": "query"},              # the model's "query: "
                     {"input": "a cat", "instruction": "other: "}):
            xc, v = emb(body)
            assert xc == "miss", (body, xc)
            assert v == fresh(body), body
            assert v != emb(plain)[1], body                                  # not the plain entry
            assert emb(body) == ("hit", v), body
        # document/passage add nothing: the plain entry
        assert emb({"input": "a cat", "input_type": "document"}) == ("hit", emb(plain)[1])
        # the instruction is part of what the model reads: "query: " + "a cat" is the input
        # "query: a cat", so the two share an entry and the vector
        q = emb({"input": "a cat", "input_type": "query"})[1]
        assert emb({"input": "query: a cat"})[1] == q
        # token ids are never answered from the text entries (nor cached)
        ids = {"input": [49406, 320, 2368, 49407]}
        r = s.post_json("/v1/embeddings", dict(ids, model="tiny"))
        assert r.status == 200 and r.headers.get("x-cache") != "hit", (r, r.headers)
        assert r.json()["data"][0]["embedding"] == fresh(ids)


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
    # The cache overflows by construction: more distinct entries than its capacity are inserted
    # before the kill storm, so evictions are certain however slow the machine (ASan) is; then
    # clients read and write while workers are SIGKILLed, so kills land mid-write.
    with Server(workers=3, models=MODELS[:1], extra={"backoff_max": "0.5", "cache": "{ size_mb = 1; }"}) as s:
        cap = int(s.metrics()['mmembed_cache_entries{kind="capacity"}'])
        assert cap > 0
        texts = [f"key number {i}" for i in range(cap + 1500)]
        ref = {}
        for i in range(0, len(texts), 64):
            d = s.post_json("/embed/text", {"texts": texts[i:i + 64], "cache": False}).json()["data"]
            for t, item in zip(texts[i:i + 64], d):
                ref[t] = item["embedding"]
        # overflow: every text once through the cache (all misses, each one inserted)
        for i in range(0, len(texts), 64):
            r = s.post_json("/embed/text", {"texts": texts[i:i + 64]})
            assert r.status == 200 and r.headers.get("x-cache") == "miss", (r, r.headers)
        m = s.metrics()
        inserts, evictions = m["mmembed_cache_inserts_total"], m["mmembed_cache_evictions_total"]
        assert inserts == len(texts), (inserts, len(texts))
        assert evictions >= inserts - cap, (evictions, inserts, cap)
        assert m['mmembed_cache_entries{kind="used"}'] <= cap, m
        # the newest entry is still there and is answered from the cache, bit-identical to the miss
        last = s.post_json("/embed/text", {"texts": [texts[-1]]})
        assert last.headers.get("x-cache") == "hit", last.headers
        assert max(abs(a - b) for a, b in zip(last.json()["data"][0]["embedding"], ref[texts[-1]])) <= 1e-5

        stop = time.time() + 8
        checked, wrong, lock = [0], [], threading.Lock()

        def client(seed):
            rng = random.Random(seed)
            while time.time() < stop:
                batch = rng.sample(texts if rng.random() < 0.5 else texts[:300], rng.randint(1, 6))
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
        assert not any(t.is_alive() for t in ts), "a client hung"
        # after the storm every entry still answers right, through the cache
        wait_until(lambda: len(s.worker_pids()) == 3, timeout=30, what="workers back")
        for i in range(0, len(texts), 64):
            r = s.post_json("/embed/text", {"texts": texts[i:i + 64]})
            assert r.status == 200, r
            for t, item in zip(texts[i:i + 64], r.json()["data"]):
                checked[0] += 1
                if max(abs(a - b) for a, b in zip(item["embedding"], ref[t])) > 1e-5:
                    wrong.append(t)
        m = s.metrics()
        print(f"    cache stress: capacity {cap}, {len(texts)} keys, {checked[0]} vectors checked, {kills} kills, "
              f"hits {m['mmembed_cache_hits_total']:.0f}, inserts {m['mmembed_cache_inserts_total']:.0f}, "
              f"evictions {m['mmembed_cache_evictions_total']:.0f}, wrong {len(wrong)}")
        assert not wrong, wrong[:5]
        assert checked[0] >= len(texts)
        assert m["mmembed_cache_evictions_total"] >= m["mmembed_cache_inserts_total"] - cap, m


