"""Image decoding has a budget (issue 12 item 4): a progressive JPEG with its
last scan repeated past MM_IMAGE_MAX_SCANS, or one that outlasts
limits.image_budget, is a quick 422 JSON from the worker that took it, which
keeps serving (no crash, no kill, no retry on another worker); a PNG full of
compressed text chunks (a decompression bomb that max_pixels does not bound)
is decoded without inflating them. The hostile files are built at test time
(tests/fixtures/gen_hostile_jpeg.c)."""
import os
import struct
import subprocess
import tempfile
import zlib

from harness import ROOT, Server
from test_embed import MODELS, multipart

GEN_SRC = os.path.join(ROOT, "tests", "fixtures", "gen_hostile_jpeg.c")


def hostile_jpeg(d, w, h, repeat):
    """A w x h progressive JPEG with its last scan repeated `repeat` times."""
    gen = os.path.join(d, "gen_hostile_jpeg")
    if not os.path.exists(gen):
        subprocess.run(["cc", "-O2", "-o", gen, GEN_SRC, "-ljpeg"], check=True)
    out = os.path.join(d, f"h{w}x{h}r{repeat}.jpg")
    subprocess.run([gen, str(w), str(h), str(repeat), out], check=True)
    return open(out, "rb").read()


def ztxt_bomb(chunks=1000, size=7_900_000):
    """A 1x1 gray PNG preceded by `chunks` zTXt chunks of `size` zero bytes each."""
    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data))
    z = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * size, 9))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + z * chunks
            + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))


def post_image(s, data, name="x.jpg"):
    body, ct = multipart({"cache": "false"}, [("image", name, data, "application/octet-stream")])
    return s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct}, timeout=60)


def image_requests(s):
    """/embed/image requests answered, by status, from /metrics."""
    return {k: v for k, v in s.metrics().items() if k.startswith("mmembed_requests_total{") and "image" in k}


def assert_one_attempt(s, pids, before):
    """No worker died or was replaced, and the workers answered exactly one
    more /embed/image request, a 422 (nginx did not replay it elsewhere)."""
    st = s.status()
    assert st["crashes"] == 0 and st["timeouts"] == 0 and st["restarts"] == 0, st
    assert sorted(s.worker_pids()) == pids, (pids, s.worker_pids())
    after = image_requests(s)
    grew = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    assert list(grew.values()) == [1] and 'status="422"' in list(grew)[0], (before, after)


def test_too_many_scans_is_a_quick_422():
    limits = {"max_body_bytes": '"16M"'}
    with tempfile.TemporaryDirectory() as d, Server(workers=2, models=MODELS[:1], limits=limits) as s:
        ok = hostile_jpeg(d, 320, 240, 90)          # 100 scans: the limit
        bad = hostile_jpeg(d, 320, 240, 400)        # 410 scans
        assert post_image(s, ok).status == 200
        pids, before = sorted(s.worker_pids()), image_requests(s)
        r = post_image(s, bad)
        assert r.status == 422, r
        e = r.json()["error"]
        assert "more than 100 scans" in e["message"] and e["code"] in ("invalid_image", "image_budget_exceeded"), e
        assert r.elapsed < 5, r.elapsed
        assert_one_attempt(s, pids, before)
        assert post_image(s, ok).status == 200      # the worker keeps serving
        print(f"    {len(bad) >> 10} KiB, 410 scans: 422 in {r.elapsed * 1000:.0f} ms")


def test_time_budget_is_a_quick_422():
    limits = {"max_body_bytes": '"16M"', "image_budget": "0.05"}
    with tempfile.TemporaryDirectory() as d, Server(workers=2, models=MODELS[:1], limits=limits) as s:
        slow = hostile_jpeg(d, 640, 480, 90)        # 100 scans of 640x480: ~0.15 s of decoding
        pids, before = sorted(s.worker_pids()), image_requests(s)
        r = post_image(s, slow)
        assert r.status == 422, r
        e = r.json()["error"]
        assert "limits.image_budget" in e["message"] and "0.05 s" in e["message"], e
        assert r.elapsed < 5, r.elapsed
        assert_one_attempt(s, pids, before)
        # the budget is per request: small images in one request are fine
        small = hostile_jpeg(d, 64, 48, 0)
        assert post_image(s, small).status == 200
        print(f"    {len(slow) >> 10} KiB under a 50 ms budget: 422 in {r.elapsed * 1000:.0f} ms")


def test_png_text_chunk_bomb_is_not_inflated():
    bomb = ztxt_bomb()          # 7.7 MB: 1000 chunks that inflate to 7.9 GB (13 s before the fix)
    with Server(workers=1, models=MODELS[:1], limits={"max_body_bytes": '"16M"'}) as s:
        r = post_image(s, bomb, "bomb.png")
        assert r.status == 200, r
        assert r.elapsed < 5, r.elapsed
        print(f"    {len(bomb) >> 10} KiB zTXt bomb: 200 in {r.elapsed * 1000:.0f} ms")
