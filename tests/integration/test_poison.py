"""One bad request costs one bounded attempt (issue 12): a request that
crashes a worker or runs past request_timeout is not replayed by nginx on
every other worker; its retry is answered at once with a clear 422 JSON, the
incident is logged and counted, and other clients' requests keep working.
Also the limit bypasses and nginx-level answers found by hostile testing."""
import json
import os
import signal
import socket
import threading
import time

from harness import Server, wait_until
from test_embed import MODELS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PNG = os.path.join(ROOT, "tests", "fixtures", "clip", "images", "rgb224.png")


def err(r, status, code=None):
    assert r.status == status, r
    e = r.json()["error"]
    assert e["message"] and e["type"], e
    if code:
        assert e["code"] == code, e
    return e


class Load:
    """Normal requests from a few threads while a test runs: every answer must
    be a correct 200 (or a 503 busy answer), never a 5xx caused by another
    client's poison."""

    def __init__(self, s, threads=2):
        self.s, self.stop, self.bad, self.ok = s, threading.Event(), [], 0
        self.ts = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, i):
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                r = self.s.post_json("/v1/embeddings", {"input": [f"load {i} {n}"]}, timeout=60)
            except Exception as e:  # noqa: BLE001 - a connection error is a failure
                self.bad.append(repr(e))
                continue
            if r.status == 200 and len(r.json()["data"]) == 1:
                self.ok += 1
            elif r.status != 503:
                self.bad.append(repr(r))
            else:
                time.sleep(0.01)

    def __enter__(self):
        for t in self.ts:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop.set()
        for t in self.ts:
            t.join()


def test_crashing_request_runs_on_one_worker_only():
    with Server(workers=3, models=MODELS[:1]) as s:
        with Load(s) as load:
            r = s.request("POST", "/__test/crash", body=b"{}", timeout=60)
            e = err(r, 422, "request_crashed_worker")
            assert "not run again" in e["message"], e
            wait_until(lambda: s.metrics()["mmembed_worker_crashes_total"] >= 1, what="crash counted")
            wait_until(lambda: s.get("/health").status == 200 and len(s.worker_pids()) == 3, what="replaced")
            m = s.metrics()
            # exactly one worker died: nginx's retries met the mark, not the crash
            assert m["mmembed_worker_crashes_total"] == 1, m
            assert m["mmembed_poison_requests_total"] == 1, m
            assert m["mmembed_poison_refused_total"] >= 1, m
            time.sleep(0.3)
        assert not load.bad, load.bad[:5]
        assert load.ok > 0
        assert "not retried on another worker" in s.log() or "crashed a worker" in s.log(), s.log()[-2000:]


def test_timed_out_request_is_not_replayed():
    with Server(workers=3, models=MODELS[:1], extra={"request_timeout": "1.0"}) as s:
        with Load(s):
            r = s.request("POST", "/__test/sleep?ms=8000", body=b"{}", timeout=60)
            err(r, 422, "request_timeout")
            assert r.elapsed < 7, r.elapsed   # one attempt (1 s), not one per worker
        wait_until(lambda: s.metrics()["mmembed_worker_timeouts_total"] >= 1, what="timeout counted")
        m = s.metrics()
        assert m["mmembed_worker_timeouts_total"] == 1, m
        assert m["mmembed_poison_requests_total"] == 1, m


def test_a_client_retry_is_a_new_request():
    """The mark is nginx's per-request id: the same bytes sent again later by a
    client are run again (they may have failed for reasons of the moment)."""
    with Server(workers=2, models=MODELS[:1], extra={"request_timeout": "1.0"}) as s:
        err(s.request("POST", "/__test/sleep?ms=3000", body=b"{}", timeout=60), 422, "request_timeout")
        assert s.request("POST", "/__test/sleep?ms=1", body=b"{}").status == 200


def test_instruction_counts_against_the_limits():
    with Server(workers=1, models=MODELS[:1], limits={"max_text_bytes": '"1K"', "max_body_bytes": '"4M"',
                                                    "max_request_text_bytes": '"1M"'}) as s:
        # an instruction over max_text_bytes on its own
        r = s.post_json("/v1/embeddings", {"input": ["a"], "instruction": "x" * 2000})
        err(r, 413, "instruction_too_long")
        # instruction + text over max_text_bytes
        r = s.post_json("/v1/embeddings", {"input": ["b" * 600], "instruction": "y" * 600})
        err(r, 413, "text_too_long")
        # a small body that would make the tokenizer read far more than the body limit
        r = s.post_json("/embed/text", {"texts": ["c"] * 1000, "instruction": "z" * 1000})
        assert r.status == 200, r   # 1,001,000 bytes of text: within max_request_text_bytes (1M)
        # a 1 KB instruction on 2,048 one-byte inputs: a 9 KB body asking for 2 MB of tokenizing
        r = s.post_json("/v1/embeddings", {"input": ["d"] * 2048, "instruction": "w" * 1000})
        e = err(r, 413, "request_too_large")
        assert "max_request_text_bytes" in e["message"], e
        assert s.get("/health").status == 200


def test_huge_instruction_is_refused_without_crash():
    """The overflow of issue 12 item 1: a ~34 MB instruction with 64 inputs
    (scaled to the test's body limit); refused as 413, the worker lives."""
    with Server(workers=1, models=MODELS[:1], limits={"max_body_bytes": '"12M"'}) as s:
        pids = s.worker_pids()
        body = json.dumps({"input": ["x"] * 64, "instruction": "i" * (10 << 20)}).encode()
        r = s.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"}, timeout=60)
        err(r, 413)
        assert s.worker_pids() == pids
        assert s.metrics()["mmembed_worker_crashes_total"] == 0


def test_multimodal_weights_are_range_checked():
    import base64
    img = open(PNG, "rb").read()
    b64 = base64.b64encode(img).decode()
    with Server(workers=1, models=MODELS[:1]) as s:
        r = s.post_json("/embed/multimodal", {"text": "a cat", "image": b64, "text_weight": 1e308, "image_weight": 1e308})
        err(r, 400, "invalid_parameter")
        r = s.post_json("/embed/multimodal", {"text": "a cat", "image": b64, "text_weight": 2, "image_weight": 1})
        assert r.status == 200, r
        j = r.json()
        v = j["data"][0]["embedding"]
        assert all(x == x and abs(x) < 1e30 for x in v)
        assert abs(sum(x * x for x in v) - 1) < 1e-4


def test_invalid_utf8_is_never_echoed_raw():
    with Server(workers=1, models=MODELS[:1]) as s:
        bad = b"\xff\xfe\xc3"
        # model name in a 404
        body = b'{"input": "a", "model": "m' + bad + b'"}'
        r = s.request("POST", "/v1/embeddings", body=body, headers={"Content-Type": "application/json"})
        assert r.status in (400, 404), r
        r.body.decode("utf-8")   # strict: raises on invalid UTF-8
        # URL path in a 404
        r = s.request("GET", "/nope%FF%FE")
        assert r.status == 404
        r.body.decode("utf-8")
        json.loads(r.body)
        # multipart filename in a 200
        png = open(PNG, "rb").read()
        bnd = b"XyZ123"
        form = (b"--" + bnd + b'\r\nContent-Disposition: form-data; name="image"; filename="cat' + bad +
                b'.png"\r\nContent-Type: image/png\r\n\r\n' + png + b"\r\n--" + bnd + b"--\r\n")
        r = s.request("POST", "/embed/image", body=form,
                      headers={"Content-Type": "multipart/form-data; boundary=XyZ123"})
        assert r.status == 200, r
        j = json.loads(r.body.decode("utf-8"))
        assert j["data"][0]["filename"].startswith("cat"), j["data"][0]["filename"]


def raw(port, data):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(data)
    out = b""
    while True:
        b = c.recv(65536)
        if not b:
            break
        out += b
    c.close()
    head, _, body = out.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def test_nginx_own_errors_are_json():
    with Server(workers=1, models=MODELS[:1]) as s:
        st, head, body = raw(s.port, b"GARBAGE\r\n\r\n")
        assert st == 400 and b"application/json" in head, head
        assert json.loads(body)["error"]["code"] == "bad_request"
        st, head, body = raw(s.port, b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert st in (414, 494) and b"application/json" in head, head
        json.loads(body)
        st, head, body = raw(s.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000 +
                             b"\r\nConnection: close\r\n\r\n")
        assert st in (400, 494) and b"application/json" in head, head
        json.loads(body)
        st, head, body = raw(s.port, b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
                                     b"Connection: close\r\n\r\n")
        assert st in (400, 501) and b"application/json" in head, head
        json.loads(body)
        r = s.get("/static/nope.js")
        assert r.status == 404 and r.headers["content-type"] == "application/json", r
        # 405 on a POST route names POST
        r = s.request("PUT", "/v1/embeddings", body=b"{}")
        assert r.status == 405 and r.headers["allow"] == "POST", (r, r.headers)
        r = s.request("POST", "/info", body=b"{}")
        assert r.status == 405 and "GET" in r.headers["allow"], (r, r.headers)


def test_model_by_id_and_alias():
    models = [dict(MODELS[0], aliases=["text-embedding-3-small"])]
    with Server(workers=1, models=models) as s:
        r = s.get("/v1/models/text-embedding-3-small")
        assert r.status == 200, r
        j = r.json()
        assert j["id"] == "text-embedding-3-small" and j["object"] == "model" and j["root"] == "tiny", j
        assert s.get("/v1/models/tiny").json()["id"] == "tiny"
        e = err(s.get("/v1/models/nope"), 404, "model_not_found")
        assert "text-embedding-3-small" in e["message"] and "tiny" in e["message"], e
        ids = [m["id"] for m in s.get("/v1/models").json()["data"]]
        assert ids == ["tiny", "text-embedding-3-small"], ids
        a = s.post_json("/v1/embeddings", {"input": "a cat", "model": "text-embedding-3-small"}).json()
        b = s.post_json("/v1/embeddings", {"input": "a cat", "model": "tiny"}).json()
        assert a["data"][0]["embedding"] == b["data"][0]["embedding"]


def test_many_inputs_in_chunks_match_one_by_one():
    """2,048 inputs by default (OpenAI's limit), worked through in chunks: each
    vector equals the one computed alone."""
    with Server(workers=1, models=MODELS[:1]) as s:
        texts = [f"text number {i}" for i in range(2048)]
        r = s.post_json("/v1/embeddings", {"input": texts, "cache": False}, timeout=300)
        assert r.status == 200, r
        data = r.json()["data"]
        assert [d["index"] for d in data] == list(range(2048))
        for i in (0, 63, 64, 65, 1000, 2047):
            one = s.post_json("/v1/embeddings", {"input": texts[i], "cache": False}).json()["data"][0]["embedding"]
            dot = sum(x * y for x, y in zip(one, data[i]["embedding"]))
            assert dot > 0.99999, (i, dot)
        err(s.post_json("/v1/embeddings", {"input": ["x"] * 2049}), 413, "too_many_inputs")


def test_stopped_worker_is_replaced():
    with Server(workers=2, models=MODELS[:1], extra={"heartbeat_timeout": "2.0"}) as s:
        victim = s.worker_pids()[0]
        os.kill(victim, signal.SIGSTOP)
        try:
            wait_until(lambda: victim not in s.worker_pids() and len(s.worker_pids()) == 2, timeout=30,
                       what="stopped worker replaced")
        finally:
            try:
                os.kill(victim, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert s.metrics()["mmembed_worker_wedged_total"] >= 1
        assert "no heartbeat" in s.log()
        for _ in range(6):
            assert s.post_json("/v1/embeddings", {"input": "x"}, timeout=20).status == 200


def test_dead_standin_is_replaced():
    """A crash-looping slot's stand-in answers 503 at once; if it dies, a new
    one takes its socket at once (no black hole until backoff_max)."""
    import tempfile
    flag = tempfile.mktemp(prefix="mmembed-crash-")
    open(flag, "w").close()
    s = Server(workers=1, models=MODELS[:1], extra={"backoff_max": "30.0", "overflow_listen": '"off"'},
               env={"MMEMBED_TEST_CRASH_FILE": flag})
    try:
        s.start(wait=False)
        # every worker aborts at start: the only long-lived child is the stand-in
        seen = {}

        def long_lived():
            now = time.time()
            kids = set(s.children())
            for p in list(seen):
                if p not in kids:
                    del seen[p]
            for p in kids:
                seen.setdefault(p, now)
            old = [p for p, t in seen.items() if now - t > 3.0]
            return old

        standin = wait_until(long_lived, timeout=60, step=0.1, what="a stand-in in a long back-off")[0]
        os.kill(standin, signal.SIGKILL)
        wait_until(lambda: [p for p in s.children() if p != standin], timeout=10, what="stand-in replaced")
        r = s.request("POST", "/v1/embeddings", body=b'{"input":"x"}', headers={"Content-Type": "application/json"},
                      timeout=10)
        assert r.status == 503 and r.elapsed < 2, (r, r.elapsed)
        assert "stand-in of worker 0" in s.log(), s.log()[-2000:]
    finally:
        os.unlink(flag)
        s.stop()
