"""POST /embed/video through nginx, with videos generated at test time by the
ffmpeg command line: sampled timestamps, pooling, per-frame vectors equal to
image embeddings of the same frames, containers, rotation, limits, bad input."""
import math
import os
import subprocess
import tempfile

from harness import Server, need_tool
from test_embed import MODELS, cos, multipart, unit


def ff(*args):
    need_tool("ffmpeg")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def colours(path, extra=(), seconds=1, rate=10):
    """red, green, blue, white: `seconds` each."""
    src = []
    for c in ("red", "green", "blue", "white"):
        src += ["-f", "lavfi", "-i", f"color=c={c}:size=160x120:rate={rate}:duration={seconds}"]
    ff(*src, "-filter_complex", "concat=n=4:v=1:a=0", *extra, path)


def post_video(s, data, name="v.mp4", **fields):
    body, ct = multipart({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in fields.items()},
                         [("video", name, data, "application/octet-stream")])
    return s.request("POST", "/embed/video", body=body, headers={"Content-Type": ct}, timeout=60)


def test_video_sampling_pooling_and_containers():
    with tempfile.TemporaryDirectory() as d, Server(workers=1, models=MODELS[:1]) as s:
        mp4 = os.path.join(d, "c.mp4")
        colours(mp4, ["-c:v", "libx264", "-bf", "2", "-pix_fmt", "yuv420p"])
        r = post_video(s, open(mp4, "rb").read(), max_frames=4, return_frames=True)
        assert r.status == 200, r
        j = r.json()
        times = [f["time"] for f in j["frames"]]
        # targets are D*(i+0.5)/n = 0.5, 1.5, 2.5, 3.5 s: the frame on screen then
        assert len(times) == 4 and all(abs(t - w) <= 0.1 for t, w in zip(times, (0.5, 1.5, 2.5, 3.5))), times
        assert abs(j["video"]["duration"] - 4.0) < 0.15, j["video"]
        fv = j["frame_embeddings"]
        # red, green, blue, white frames are four different vectors
        assert all(cos(fv[i], fv[k]) < 0.9999 for i in range(4) for k in range(i + 1, 4))
        mean = unit([sum(v[k] for v in fv) / 4 for k in range(len(fv[0]))])
        assert max(abs(a - b) for a, b in zip(j["data"][0]["embedding"], mean)) < 1e-5
        for pooling, want in (("max", unit([max(v[k] for v in fv) for k in range(len(fv[0]))])), ("first", fv[0])):
            p = post_video(s, open(mp4, "rb").read(), max_frames=4, pooling=pooling).json()
            assert max(abs(a - b) for a, b in zip(p["data"][0]["embedding"], want)) < 1e-5, pooling
        raw = post_video(s, open(mp4, "rb").read(), max_frames=4, normalize=False, return_frames=True).json()
        assert abs(math.sqrt(sum(x * x for x in raw["data"][0]["embedding"])) - 1) > 1e-3   # not normalized
        # the same content in other containers/codecs gives the same frame times and near-same vectors
        variants = {
            "c.webm": ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "30", "-deadline", "realtime"],
            "c.mkv": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
            "c.mov": ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
            "c.gif": [],
        }
        for name, args in variants.items():
            path = os.path.join(d, name)
            colours(path, args)
            r = post_video(s, open(path, "rb").read(), name=name, max_frames=4, return_frames=True)
            assert r.status == 200, (name, r)
            v = r.json()
            assert [round(f["time"], 1) for f in v["frames"]] == [0.5, 1.5, 2.5, 3.5], (name, v["frames"])
            for a, b in zip(v["frame_embeddings"], fv):
                assert cos(a, b) > 0.99, name
        # a stream without a duration in its header (Matroska written to a pipe)
        piped = os.path.join(d, "piped.mkv")
        with open(piped, "wb") as out:
            src = []
            for c in ("red", "green", "blue", "white"):
                src += ["-f", "lavfi", "-i", f"color=c={c}:size=160x120:rate=10:duration=1"]
            subprocess.run(["ffmpeg", "-v", "error", *src, "-filter_complex", "concat=n=4:v=1:a=0", "-c:v", "libx264",
                            "-pix_fmt", "yuv420p", "-f", "matroska", "pipe:1"], stdout=out, check=True)
        v = post_video(s, open(piped, "rb").read(), max_frames=4).json()
        assert [round(f["time"], 1) for f in v["frames"]] == [0.5, 1.5, 2.5, 3.5], v


def test_per_frame_vectors_match_image_embeddings():
    with tempfile.TemporaryDirectory() as d, Server(workers=1, models=MODELS[:1]) as s:
        mp4 = os.path.join(d, "t.mp4")
        ff("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=3", "-c:v", "libx264", "-bf", "2",
           "-pix_fmt", "yuv420p", mp4)
        j = post_video(s, open(mp4, "rb").read(), max_frames=6, return_frames=True).json()
        assert len(j["frames"]) == 6
        worst = 1.0
        images = []
        for f in j["frames"]:
            png = os.path.join(d, f"f{f['index']}.png")
            ff("-i", mp4, "-vf", f"select=eq(n\\,{f['index']})", "-fps_mode", "passthrough", "-frames:v", "1", png)
            body, ct = multipart({}, [("image", "f.png", open(png, "rb").read(), "image/png")])
            images.append(s.request("POST", "/embed/image", body=body,
                                    headers={"Content-Type": ct}).json()["data"][0]["embedding"])
        for k, (f, vec) in enumerate(zip(j["frames"], j["frame_embeddings"])):
            c = cos(vec, images[k])
            worst = min(worst, c)
            # our YUV->RGB (swscale) vs the ffmpeg CLI's PNG: ~1 - 6e-5; and the right frame:
            # closer to its own image than to any other sampled frame's
            assert c >= 0.9999, (f, c)
            others = [cos(vec, images[o]) for o in range(len(images)) if o != k]
            assert all(c > o for o in others), (f, c, others)
        print(f"    per-frame vs image-of-frame min cosine {worst:.6f}; decode {j['timing_ms']}")


def test_rotation_and_odd_sizes():
    with tempfile.TemporaryDirectory() as d, Server(workers=1, models=MODELS[:1]) as s:
        base = os.path.join(d, "base.mp4")
        ff("-f", "lavfi", "-i", "testsrc=size=321x179:rate=10:duration=1", "-c:v", "libx264", "-pix_fmt", "yuv444p", base)
        v = post_video(s, open(base, "rb").read(), max_frames=2).json()
        assert v["video"]["width"] == 321 and v["video"]["height"] == 179, v["video"]
        rot = os.path.join(d, "rot.mp4")
        ff("-i", base, "-c", "copy", "-metadata:s:v", "rotate=90", rot)
        r = post_video(s, open(rot, "rb").read(), max_frames=2)
        assert r.status == 200, r
        assert r.json()["video"]["rotation"] in (90, 270), r.json()["video"]


def test_video_limits_and_bad_input():
    with tempfile.TemporaryDirectory() as d, Server(workers=1, models=MODELS[:1], limits={
            "max_video_seconds": "5.0", "max_frames": "8", "max_pixels": "1000000", "max_body_bytes": '"8M"'}) as s:
        ok = os.path.join(d, "ok.mp4")
        colours(ok, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        okb = open(ok, "rb").read()
        long_ = os.path.join(d, "long.mp4")
        ff("-f", "lavfi", "-i", "color=c=red:size=64x64:rate=5:duration=20", "-c:v", "libx264", long_)
        big = os.path.join(d, "big.mp4")
        ff("-f", "lavfi", "-i", "color=c=red:size=1600x1200:rate=5:duration=1", "-c:v", "libx264", big)
        ten_hours = os.path.join(d, "ten_hours.mkv")   # a 1.4 kB file whose second frame is at 10 h
        ff("-f", "lavfi", "-i", "color=c=red:size=64x64:rate=1:duration=2", "-vf", "setpts='if(eq(N,1),36000/TB,PTS)'",
           "-fps_mode", "passthrough", "-c:v", "libx264", "-f", "matroska", ten_hours)
        audio = os.path.join(d, "a.m4a")
        ff("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", audio)
        cases = [
            ("too many frames", post_video(s, okb, max_frames=9), 422),
            ("too long", post_video(s, open(long_, "rb").read()), 422),
            ("declares ten hours", post_video(s, open(ten_hours, "rb").read(), name="t.mkv"), 422),
            ("too many pixels", post_video(s, open(big, "rb").read()), 413),
            ("audio only", post_video(s, open(audio, "rb").read(), name="a.m4a"), 422),
            ("random bytes", post_video(s, os.urandom(5000)), 415),
            ("truncated", post_video(s, okb[: len(okb) // 2]), 400),
            ("empty", post_video(s, b""), 400),
            ("bad pooling", post_video(s, okb, pooling="median"), 400),
            ("json", s.post_json("/embed/video", {"video": "x"}), 415),
        ]
        for name, r, status in cases:
            assert r.status == status, (name, r)
            assert "error" in r.json(), (name, r)
            assert post_video(s, okb, max_frames=2).status == 200, name   # the worker keeps serving
        assert "limits.max_frames" in cases[0][1].json()["error"]["message"]
    with tempfile.TemporaryDirectory() as d, Server(workers=1, models=MODELS[:1], limits={"video_budget": "0.001"}) as s:
        v = os.path.join(d, "v.mp4")
        ff("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=4", "-c:v", "libx264", v)
        r = post_video(s, open(v, "rb").read())
        assert r.status == 422 and r.json()["error"]["code"] == "video_budget_exceeded", r
        assert s.status()["crashes"] == 0
