"""What the rest of the suite never ran: the release binary, reloads whose
models fail to load or change the model list, auth on every route, /health
before the pool is ready, SIGTERM past stop_timeout, threads >= 2, and
client request ids that are odd or huge."""
import os
import signal
import tempfile
import threading
import time

from harness import ROOT, Server, skip, wait_until
from test_embed import MODELS, TINY, TINY_BF16, cos, img, load, multipart

RELEASE = os.path.join(ROOT, "build", "mmembed")


def test_release_binary_serves_without_test_routes():
    if not os.path.exists(RELEASE):
        skip("build/mmembed not built (make all)", broken=True)
    with Server(workers=2, models=MODELS[:1], bin=RELEASE) as s:
        ref = [r for r in load("text_emb.json") if r["text"]][:4]
        r = s.post_json("/v1/embeddings", {"input": [x["text"] for x in ref]})
        assert r.status == 200, r
        for item, x in zip(r.json()["data"], ref):
            assert cos(item["embedding"], x["embedding"]) >= 0.99999
        body, ct = multipart({}, [("image", "a.png", img("rgb224.png"), "image/png")])
        assert s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct}).status == 200
        # the test hooks are compiled out: every /__test/ route is an unknown route
        for path in ("/__test/sleep?ms=1", "/__test/crash", "/__test/exit"):
            r = s.request("POST", path, body=b"{}")
            assert r.status == 404, (path, r)
            assert r.json()["error"]["code"] == "not_found", r
        assert s.status()["crashes"] == 0


def test_reload_whose_model_fails_to_load_keeps_serving():
    with Server(workers=2, models=MODELS[:1]) as s:
        before = s.post_json("/v1/embeddings", {"input": "a cat"}).json()["data"][0]["embedding"]
        old = sorted(s.worker_pids())
        broken = tempfile.mkdtemp(prefix="mmembed-broken-model-")
        try:
            # parses and validates (the folder exists) but the model cannot load: no config.json
            good = open(s.conf_path).read()
            s.write_conf(raw=good.replace(f'path = "{TINY}"', f'path = "{broken}"'))
            s.signal(signal.SIGHUP)
            wait_until(lambda: "reload failed" in s.log(), timeout=30, what="reload failure logged")
            assert "config.json" in s.log().split("reload failed", 1)[1][:2000] or "config.json" in s.log()
            st = s.status()
            assert st["generation"] == 1 and sorted(s.worker_pids()) == old, st
            r = s.post_json("/v1/embeddings", {"input": "a cat"})
            assert r.status == 200 and r.json()["data"][0]["embedding"] == before, r
            assert s.get("/health").status == 200
        finally:
            os.rmdir(broken)


def test_reload_adds_and_removes_models():
    with Server(workers=1, models=MODELS[:1]) as s:
        assert [m["id"] for m in s.get("/v1/models").json()["data"]] == ["tiny"]
        assert s.post_json("/v1/embeddings", {"input": "x", "model": "tiny-bf16"}).status == 404
        s.models = list(MODELS)                                  # add tiny-bf16
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: s.status()["generation"] == 2 and len(s.worker_pids()) == 1, timeout=30, what="reload 2")
        wait_until(lambda: [m["id"] for m in s.get("/v1/models").json()["data"]] == ["tiny", "tiny-bf16"],
                   what="new model listed")
        r = s.post_json("/v1/embeddings", {"input": "x", "model": "tiny-bf16"})
        assert r.status == 200 and r.json()["model"] == "tiny-bf16", r
        s.models = [dict(MODELS[1], default=True)]               # remove tiny, tiny-bf16 the default
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: s.status()["generation"] == 3 and len(s.worker_pids()) == 1, timeout=30, what="reload 3")
        wait_until(lambda: [m["id"] for m in s.get("/v1/models").json()["data"]] == ["tiny-bf16"],
                   what="model removed")
        r = s.post_json("/v1/embeddings", {"input": "x", "model": "tiny"})
        assert r.status == 404 and r.json()["error"]["code"] == "model_not_found", r
        r = s.post_json("/v1/embeddings", {"input": "x"})
        assert r.status == 200 and r.json()["model"] == "tiny-bf16", r


KEY = "sk-test-aaaaaaaa"


def test_auth_on_every_route():
    with Server(workers=1, models=MODELS[:1], extra={"auth": f'{{ keys = ["{KEY}"]; }}'}) as s:
        body, ct = multipart({}, [("video", "v.mp4", b"\0" * 64, "application/octet-stream")])
        routes = [("GET", "/info", None, {}), ("GET", "/status", None, {}), ("GET", "/metrics", None, {}),
                  ("GET", "/v1/models", None, {}),
                  ("POST", "/v1/embeddings", b'{"input":"x"}', {"Content-Type": "application/json"}),
                  ("POST", "/embed/text", b'{"texts":["x"]}', {"Content-Type": "application/json"}),
                  ("POST", "/embed/image", b'{"images":["AAAA"]}', {"Content-Type": "application/json"}),
                  ("POST", "/embed/multimodal", b'{"text":"x"}', {"Content-Type": "application/json"}),
                  ("POST", "/embed/video", body, {"Content-Type": ct})]
        for method, path, data, h in routes:
            r = s.request(method, path, body=data, headers=h)
            assert r.status == 401 and r.json()["error"]["code"] == "missing_api_key", (path, r)
            r = s.request(method, path, body=data, headers=dict(h, Authorization="Bearer sk-test-zzzzzzzz"))
            assert r.status == 403 and r.json()["error"]["code"] == "invalid_api_key", (path, r)
            r = s.request(method, path, body=data, headers=dict(h, Authorization=f"Bearer {KEY}"))
            assert r.status not in (401, 403), (path, r)
            # the scheme is case-insensitive (RFC 9110 11.1): "bearer" is the same scheme
            r2 = s.request(method, path, body=data, headers=dict(h, Authorization=f"bearer {KEY}"))
            assert r2.status == r.status, (path, "lower-case bearer", r2, r)
        assert s.get("/health").status == 200                   # never authenticated
        # the upload page itself is static (nginx), and its API calls carry no key: they are refused
        assert s.get("/").status == 200
        r = s.post_json("/embed/text", {"texts": ["from the page"]})
        assert r.status == 401, r


def test_api_key_of_128_bytes_is_rejected_by_config():
    import subprocess
    from harness import BIN
    for n, ok in ((8, True), (127, True), (128, False), (400, False), (7, False)):
        with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
            f.write('listen = "/tmp/x-%%d.sock";\nauth = { keys = ["%s"]; };\n' % ("k" * n))
        p = subprocess.run([BIN, "check-config", "-c", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        assert (p.returncode == 0) == ok, (n, p.stdout + p.stderr)
        if not ok:
            assert f"{f.name}:2:" in p.stdout + p.stderr, (n, p.stdout + p.stderr)


def test_health_is_503_until_ready():
    """README: /health is 200 once models are loaded and workers are up, else 503. A model
    big enough to take a moment to load (the ViT-B/32 synthetic folder) keeps the pool
    unready long enough to ask."""
    vit = os.path.join(ROOT, "models", "clip-vit-b32-synthetic")
    if not os.path.exists(os.path.join(vit, "config.json")):
        skip("models/clip-vit-b32-synthetic missing (make default-model)", broken=True)
    s = Server(workers=1, models=[{"name": "vit", "path": vit, "default": True}])
    try:
        s.start(wait=False)
        seen = []
        end = time.time() + 120
        while time.time() < end:
            try:
                r = s.get("/health", timeout=5)
            except OSError:
                time.sleep(0.02)        # nginx not listening yet
                continue
            seen.append(r.status)
            if r.status == 200:
                break
            assert r.headers.get("content-type") == "application/json", r
            time.sleep(0.02)
        assert seen and seen[-1] == 200, seen[-20:]
        before = set(seen[:-1])
        print(f"    /health before ready: {sorted(before)} over {len(seen) - 1} polls")
        if not before:
            skip("the pool was ready before nginx answered once: no window to observe")
        assert before == {503}, f"/health answered {sorted(before)} before the pool was ready (README: 503)"
    finally:
        s.stop()


def test_sigterm_with_a_request_longer_than_stop_timeout():
    s = Server(workers=1, extra={"stop_timeout": "1.0"}).start()
    try:
        res = {}
        t = threading.Thread(target=lambda: res.setdefault(
            "r", s.request("POST", "/__test/sleep?ms=20000", body=b"{}", timeout=60)))
        t.start()
        wait_until(lambda: s.status()["busy_workers"] == 1, what="busy")
        pid = s.worker_pids()[0]
        t0 = time.time()
        s.signal(signal.SIGTERM)
        s.master.wait(30)                                   # generous; stop_timeout is 1 s
        took = time.time() - t0
        t.join(30)
        assert not t.is_alive()
        assert s.master.returncode == 0, s.master.returncode
        # the worker was killed at stop_timeout, not waited for (its request wanted 20 s)
        assert took < 15, took
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
        r = res["r"]
        assert r.status in (502, 503, 504), r
        assert "error" in r.json(), r
        assert "stop_timeout" in s.log() or "kill" in s.log().lower(), s.log()[-2000:]
        print(f"    SIGTERM with a 20 s request, stop_timeout 1 s: master gone in {took:.1f} s, client got {r.status}")
    finally:
        s.stop()


def test_threads_2_through_the_server():
    ref = [r for r in load("text_emb.json") if r["text"]]
    iref = load("image_emb.json")
    out = {}
    for threads in ("1", "2"):
        with Server(workers=1, models=MODELS, extra={"threads": threads}) as s:
            t = s.post_json("/embed/text", {"texts": [x["text"] for x in ref], "cache": False})
            assert t.status == 200, t
            files = [("image", x["file"], img(x["file"]), "application/octet-stream") for x in iref]
            body, ct = multipart({"cache": "false"}, files)
            i = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct})
            assert i.status == 200, i
            out[threads] = ([d["embedding"] for d in t.json()["data"]], [d["embedding"] for d in i.json()["data"]])
    for v, x in zip(out["2"][0], ref):
        assert cos(v, x["embedding"]) >= 0.99999, (x["text"], cos(v, x["embedding"]))
    for v, x in zip(out["2"][1], iref):
        assert cos(v, x["embedding"]) >= 0.99999, (x["file"], cos(v, x["embedding"]))
    # splitting the work over threads changes at most f32 rounding
    worst = max(abs(a - b) for k in (0, 1) for u, w in zip(out["1"][k], out["2"][k]) for a, b in zip(u, w))
    assert worst < 1e-5, worst


def _debug_server():
    s = Server(workers=1, models=MODELS[:1])
    orig = s.write_conf

    def write_conf(settings=None, raw=None):
        orig(settings, raw)
        text = open(s.conf_path).read().replace('level = "info"', 'level = "debug"')
        open(s.conf_path, "w").write(text)
    s.write_conf = write_conf
    s.write_conf()
    return s


def test_request_id_with_spaces_keeps_log_lines_parseable():
    """A client's X-Request-Id reaches the response and the logs; one with spaces or a tab
    must not make the worker's log line ambiguous (req=<id> is followed by method and URI)."""
    with _debug_server() as s:
        for rid in ("has spaces in it", "tab\there"):
            r = s.post_json("/embed/text", {"texts": ["id test"]}, headers={"X-Request-Id": rid})
            assert r.status == 200, (rid, r)
            assert r.headers.get("x-request-id") == rid, r.headers
        lines = lambda: [l for l in s.log().splitlines() if "req=" in l and "/embed/text" in l]  # noqa: E731
        wait_until(lambda: len(lines()) >= 2, what="request lines logged")
        for line in lines():
            # the id in the log is one token (an id with spaces or tabs is replaced by nginx's
            # own id, so a reader can always tell where it ends): method and URI follow it
            rest = line.split("req=", 1)[1].split(" ")
            assert rest[1] == "POST" and rest[2] == "/embed/text", line
            assert "has" not in rest[0] and "\t" not in rest[0], line


def test_request_id_of_10kb_gets_a_json_answer():
    """A 10 KB X-Request-Id: served, or refused by nginx with the API's JSON error shape
    (README: all errors are JSON), and never copied whole into the logs."""
    with _debug_server() as s:
        rid = "x" * 10240
        r = s.post_json("/embed/text", {"texts": ["id test"]}, headers={"X-Request-Id": rid})
        if r.status == 200:
            assert len(r.headers.get("x-request-id", "")) <= 10240
        else:
            assert r.status in (400, 431), r
            assert r.headers.get("content-type") == "application/json", (r, r.headers)
            assert r.json()["error"]["code"], r
        long_lines = [ln for ln in s.log().splitlines() if len(ln) > 2048]
        assert not long_lines, f"{len(long_lines)} log lines over 2 KB (the 10 KB request id copied whole?)"
