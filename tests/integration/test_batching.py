"""Queued requests of the text routes run as one batch in a worker (issue 17):
each request keeps its own options and its own errors, and its vectors do
not depend on its batch-mates. The batch is made deterministic with the
test-only /__test/sleep?until_queued=N, which holds the request thread until
N requests wait in the queue."""
import base64
import struct
import threading

from harness import Server, wait_until
from test_embed import MODELS, img, multipart

TOL = 1e-6   # a vector computed in a batch vs alone: packed passes run each sequence on its own


def close(a, b, tol=TOL):
    assert len(a) == len(b), (len(a), len(b))
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= tol, worst


def vecs(r):
    out = []
    for d in r.json()["data"]:
        e = d["embedding"]
        if isinstance(e, str):
            raw = base64.b64decode(e)
            e = list(struct.unpack("<%df" % (len(raw) // 4), raw))
        out.append(e)
    return out


def send(s, req, timeout=30):
    """req: (path, dict) as JSON, (path, bytes) as raw JSON, or (path, bytes, content type)."""
    path, body = req[0], req[1]
    if len(req) == 3:
        return s.request("POST", path, body=body, headers={"Content-Type": req[2]}, timeout=timeout)
    if isinstance(body, bytes):
        return s.request("POST", path, body=body, headers={"Content-Type": "application/json"}, timeout=timeout)
    return s.post_json(path, body, timeout=timeout)


def hold_and_send(s, reqs):
    """Occupy the only worker, queue every request of `reqs` behind it, then
    let them run as one pass. Returns their responses in order."""
    n = len(reqs)
    holder = threading.Thread(target=lambda: s.request("POST", f"/__test/sleep?ms=60000&until_queued={n}",
                                                        body=b"{}", timeout=90))
    holder.start()
    wait_until(lambda: s.status()["busy_workers"] == 1, what="worker held")
    out = [None] * n

    def go(i):
        out[i] = send(s, reqs[i], timeout=90)
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts + [holder]:
        t.join(120)
    return out


def test_batch_keeps_each_requests_options_and_vectors():
    models = MODELS + [{"name": "tiny-q", "path": MODELS[0]["path"], "instruction": "query: "}]
    reqs = [
        ("/v1/embeddings", {"input": "a photo of a cat", "cache": False}),
        ("/v1/embeddings", {"input": ["a dog", "a diagram of a dog"], "dimensions": 8, "cache": False}),
        ("/v1/embeddings", {"input": "a photo of a cat", "encoding_format": "base64", "cache": False}),
        ("/v1/embeddings", {"input": "a photo of a cat", "model": "tiny-bf16", "cache": False}),
        ("/v1/embeddings", {"input": "a photo of a cat", "model": "tiny-q", "input_type": "query", "cache": False}),
        ("/v1/embeddings", {"input": "a cat", "instruction": "represent: ", "cache": False}),
        ("/v1/embeddings", {"input": [[49406, 320, 1125, 49407]], "cache": False}),
        ("/embed/text", {"texts": ["a photo of a cat", "two dogs"], "normalize": False, "cache": False}),
        ("/v1/embeddings", {"input": "word " * 200, "truncate": False, "cache": False}),   # 422: too long
        ("/v1/embeddings", b'{"input": "broken'),                                           # 400: bad JSON
        ("/v1/embeddings", {"input": "a photo of a cat", "model": "nope"}),                # 404
        ("/v1/embeddings", {"input": "word " * 200, "cache": False}),                        # truncated: fine
    ]
    with Server(workers=1, models=models, extra={"queue_depth": "16"}) as s:
        alone = [s.request("POST", p, body=b, headers={"Content-Type": "application/json"}) if isinstance(b, bytes)
                 else s.post_json(p, b) for p, b in reqs]
        before = s.metrics()
        batched = hold_and_send(s, reqs)
        for i, (a, b) in enumerate(zip(alone, batched)):
            assert a.status == b.status, (i, a, b)
            if a.status != 200:
                assert a.json()["error"]["code"] == b.json()["error"]["code"], (i, a, b)
                continue
            va, vb = vecs(a), vecs(b)
            assert len(va) == len(vb), i
            for x, y in zip(va, vb):
                close(x, y)
            ja, jb = a.json(), b.json()
            assert ja.get("model") == jb.get("model") and ja.get("usage") == jb.get("usage"), (i, ja, jb)
        assert [s for s in (r.status for r in batched)] == [200] * 8 + [422, 400, 404, 200]
        assert len(vecs(batched[1])[0]) == 8                              # dimensions
        assert isinstance(batched[2].json()["data"][0]["embedding"], str)  # base64
        assert batched[3].json()["model"] == "tiny-bf16"
        # the instruction was applied: the query vector differs from the plain one
        assert max(abs(x - y) for x, y in zip(vecs(batched[4])[0], vecs(batched[0])[0])) > 1e-3
        # these requests ran as one pass of the request thread
        m = s.metrics()
        big = lambda mm: mm['mmembed_batch_size_bucket{le="+Inf"}'] - mm['mmembed_batch_size_bucket{le="8"}']
        assert big(m) - big(before) == 1, m
        assert m["mmembed_queue_wait_seconds_count"] >= len(reqs) * 2 + 1
        assert s.status()["workers"][0]["last_batch"] in (1, len(reqs))


def test_cache_within_a_batch_and_queue_status():
    with Server(workers=1, models=MODELS[:1], extra={"queue_depth": "8"}) as s:
        ref = s.post_json("/v1/embeddings", {"input": "a red car", "cache": False})
        reqs = [("/v1/embeddings", {"input": "a red car"}) for _ in range(4)]
        out = hold_and_send(s, reqs)
        for r in out:
            assert r.status == 200, r
            close(vecs(r)[0], vecs(ref)[0])
        st = s.status()
        assert st["queue_depth"] == 8 and st["queued"] == 0 and st["workers"][0]["queued"] == 0, st
        assert "mmembed_queue_depth" in s.metrics()


def test_no_503_while_the_queue_has_room():
    """Four clients on one worker with queue_depth 3: every request is held
    and answered, none is turned away."""
    with Server(workers=1, models=MODELS[:1], extra={"queue_depth": "3"}) as s:
        statuses, lock = [], threading.Lock()
        # the harness's /health polls before the worker was up may have met the
        # overflow process (503): count only what happens under the load
        before = s.metrics()["mmembed_busy_rejections_total"]

        def client(i):
            for n in range(10):
                r = s.post_json("/v1/embeddings", {"input": f"client {i} text {n}"}, timeout=60)
                with lock:
                    statuses.append(r.status)
        ts = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        assert statuses == [200] * 40, statuses
        assert s.metrics()["mmembed_busy_rejections_total"] == before


def test_image_batch_keeps_each_requests_options_errors_and_vectors():
    """Queued /embed/image requests run as one pass: multipart and JSON,
    two models, their own normalize / cache / filenames, and failing
    requests (a truncated PNG after a good image, an empty image, bad
    base64, an unknown model) that answer alone what they answered alone."""
    b64 = lambda name: base64.b64encode(img(name)).decode()
    png = img("rgb224.png")

    def form(fields, files):
        body, ct = multipart(fields, [("image", n, d, "application/octet-stream") for n, d in files])
        return ("/embed/image", body, ct)
    reqs = [
        form({"cache": "false"}, [("rgb224.png", png), ("photo640x480.jpg", img("photo640x480.jpg"))]),
        ("/embed/image", {"images": [b64("gray500x400.jpg")], "normalize": False, "cache": False}),
        form({"cache": "false"}, [("ok.png", png), ("half.png", png[: len(png) // 2])]),   # 400: its 2nd image
        ("/embed/image", {"images": [b64("wide500x300_q75.jpg")], "model": "tiny-bf16", "cache": False}),
        ("/embed/image", {"images": [b64("portrait333x517_444.jpg"), b64("photo400x300.webp"),
                                     "data:image/png;base64," + b64("palette256x200.png")], "cache": False}),
        form({"cache": "false"}, [("a.png", png), ("empty.png", b""), ("b.png", png)]),    # 400: empty image
        ("/embed/image", {"images": [b64("rgba300x500.png"), b64("tiny31x17.png"), b64("anim200x150.gif"),
                                     b64("gray100x80.png")], "cache": False}),
        ("/embed/image", {"images": [b64("rgb224.png")]}),                                  # through the cache
        ("/embed/image", {"images": [b64("rgb224.png")], "model": "nope"}),                 # 404
        ("/embed/image", {"images": ["not base64 at all!"], "cache": False}),               # 400
        ("/embed/image", {"images": [b64("photo640x480.jpg")], "model": "tiny-bf16", "cache": False}),
    ]
    with Server(workers=1, models=MODELS, extra={"queue_depth": "16"}) as s:
        alone = [send(s, q) for q in reqs]
        before = s.metrics()
        batched = hold_and_send(s, reqs)
        assert [r.status for r in batched] == [200, 200, 400, 200, 200, 400, 200, 200, 404, 400, 200], batched
        for i, (a, b) in enumerate(zip(alone, batched)):
            assert a.status == b.status, (i, a, b)
            if a.status != 200:
                assert a.json()["error"]["code"] == b.json()["error"]["code"], (i, a, b)
                continue
            ja, jb = a.json(), b.json()
            assert ja["model"] == jb["model"] and len(ja["data"]) == len(jb["data"]), (i, ja, jb)
            for x, y in zip(ja["data"], jb["data"]):
                assert x.get("filename") == y.get("filename"), i
                close(x["embedding"], y["embedding"])
            assert "model;dur=" in b.headers.get("server-timing", ""), i
        assert [d["filename"] for d in batched[0].json()["data"]] == ["rgb224.png", "photo640x480.jpg"]
        assert batched[2].json()["error"]["code"] == "invalid_image" and "image 1" in batched[2].json()["error"]["message"]
        assert batched[5].json()["error"]["code"] == "empty_image"
        assert abs(sum(x * x for x in vecs(batched[1])[0]) - 1) > 1e-3   # normalize: false
        assert abs(sum(x * x for x in vecs(batched[0])[0]) - 1) < 1e-4
        assert batched[3].json()["model"] == "tiny-bf16"
        m = s.metrics()
        big = lambda mm: mm['mmembed_batch_size_bucket{le="+Inf"}'] - mm['mmembed_batch_size_bucket{le="8"}']
        assert big(m) - big(before) == 1, m
        assert s.status()["workers"][0]["last_batch"] in (1, len(reqs))
