"""A Qwen2-VL embedder (Ops-MM-embedding-v1 recipe) served through nginx,
against the Hugging Face references of tests/fixtures/qwen2vl: text routes,
/embed/image, /embed/multimodal as ONE sequence, and mixed input items in
/v1/embeddings."""
import base64
import gzip
import json
import os
import shutil
import tempfile

from harness import ROOT, Server
from test_embed import cos, multipart

FX = os.path.join(ROOT, "tests", "fixtures")
QX = os.path.join(FX, "qwen2vl")
MIN_COS = 0.9999   # f32, as the unit test (test_qwen2vl.c)


def model_dir(d, folder="qwen2vl-tiny"):
    """The fixture folder with its gzipped checkpoint and the Qwen tokenizer unpacked."""
    q = os.path.join(d, folder)
    os.makedirs(q)
    for n in os.listdir(os.path.join(QX, folder)):
        src = os.path.join(QX, folder, n)
        if n.endswith(".gz"):
            with gzip.open(src, "rb") as f:
                open(os.path.join(q, n[:-3]), "wb").write(f.read())
        else:
            shutil.copy(src, q)
    with gzip.open(os.path.join(FX, "qwen3", "tokenizer.json.gz"), "rb") as f:
        open(os.path.join(q, "tokenizer.json"), "wb").write(f.read())
    return q


def b64(name):
    return "data:image/png;base64," + base64.b64encode(open(os.path.join(QX, "images", name), "rb").read()).decode()


def test_qwen2vl_routes_match_hf():
    ref = json.load(open(os.path.join(QX, "ref.json"), encoding="utf-8"))
    cases = {c["name"]: c for c in ref["cases"]}
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        models = [{"name": "opsmm", "path": model_dir(d), "default": True}]
        with Server(workers=2, models=models) as s:
            info = {m["name"]: m for m in s.get("/info").json()["models"]}["opsmm"]
            assert info["arch"] == "qwen2vl" and info["image_dynamic"] and info["fusion"] == "sequence", info
            assert info["max_image_tokens"] == ref["max_pixels"] // 784, info
            worst = {}

            def check(kind, vec, case):
                c = cos(vec, cases[case]["vec"])
                worst[kind] = min(worst.get(kind, 1.0), c)
                assert c >= MIN_COS, (kind, case, c)

            # text routes: the default system instruction, then another one
            texts = [cases[f"text{i}"]["text"] for i in range(6) if cases[f"text{i}"]["text"]]
            names = [f"text{i}" for i in range(6) if cases[f"text{i}"]["text"]]
            r = s.post_json("/v1/embeddings", {"input": texts, "cache": False}).json()
            for item, n in zip(r["data"], names):
                check("text", item["embedding"], n)
            r = s.post_json("/embed/text", {"texts": ["hello"], "instruction": cases["instr:text"]["instruction"]}).json()
            check("text", r["data"][0]["embedding"], "instr:text")
            assert r["data"][0]["tokens"] == len(cases["instr:text"]["ids"]), r["data"][0]["tokens"]
            # /embed/image: multipart and JSON
            one = [n for n in cases if n.startswith("image:")]
            files = [("image", n[6:], open(os.path.join(QX, "images", n[6:]), "rb").read(), "application/octet-stream")
                     for n in one]
            body, ct = multipart({}, files)
            r = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct}).json()
            for item, n in zip(r["data"], one):
                check("image", item["embedding"], n)
            r = s.post_json("/embed/image", {"images": [b64("rgb224.png")]}).json()
            check("image", r["data"][0]["embedding"], "image:rgb224.png")
            # /embed/multimodal: text + image(s) in ONE sequence
            c = cases["text+image"]
            r = s.post_json("/embed/multimodal", {"text": c["text"], "image": b64(c["images"][0]),
                                                  "return_parts": True}).json()
            assert r["fusion"] == "sequence", r
            check("text+image", r["data"][0]["embedding"], "text+image")
            check("image", r["data"][0]["image_embedding"], "image:" + c["images"][0])
            c = cases["two_images+text"]
            body, ct = multipart({"text": c["text"]}, [("image", n, open(os.path.join(QX, "images", n), "rb").read(),
                                                        "application/octet-stream") for n in c["images"]])
            r = s.request("POST", "/embed/multimodal", body=body, headers={"Content-Type": ct}).json()
            check("several images", r["data"][0]["embedding"], "two_images+text")
            assert r["usage"]["prompt_tokens"] == len(c["ids"]), (r["usage"], len(c["ids"]))
            # /v1/embeddings with mixed items: one vector per item
            items = [{"text": cases["text1"]["text"]},
                     {"image": b64(cases["instr:image"]["images"][0])},
                     {"text": cases["text+image2"]["text"], "image": b64(cases["text+image2"]["images"][0])},
                     {"images": [b64(n) for n in cases["two_images"]["images"]]},
                     cases["text0"]["text"]]
            r = s.post_json("/v1/embeddings", {"input": items, "cache": False}).json()
            for item, n in zip(r["data"], ["text1", "image:" + cases["instr:image"]["images"][0], "text+image2",
                                           "two_images", "text0"]):
                check("mixed", item["embedding"], n)
            # another instruction moves an image's vector as HF's does
            r = s.post_json("/v1/embeddings", {"input": [{"image": b64(cases["instr:image"]["images"][0])}],
                                               "instruction": cases["instr:image"]["instruction"]}).json()
            check("instruction", r["data"][0]["embedding"], "instr:image")
            # errors: an aspect over 200:1 is a 422 like HF's ValueError
            r = s.post_json("/v1/embeddings", {"input": [{"image": b64("strip2000x12.png")}]})
            assert r.status == 200, r.status
            r = s.post_json("/v1/embeddings", {"input": [{"image": b64("line1000x4.png")}]})
            assert r.status == 422, (r.status, r.body[:200])
            print("    Qwen2-VL through nginx, worst cosine to HF by route: " +
                  ", ".join(f"{k} {v:.7f}" for k, v in worst.items()))


def test_qwen2vl_image_token_cap():
    """max_image_tokens caps the visual tokens per image (the cost lever)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        models = [{"name": "opsmm", "path": model_dir(d, "qwen2vl-tiny-v5"), "default": True, "max_image_tokens": 4}]
        with Server(workers=1, models=models) as s:
            assert s.get("/info").json()["models"][0]["max_image_tokens"] == 4
            r = s.post_json("/embed/multimodal", {"image": b64("rgb224.png"), "text": "x"}).json()
            # 224 x 224 at 4 tokens: 56 x 56; prompt 20 ids + 1 text token + 2 vision marks... counted by the server
            assert r["usage"]["prompt_tokens"] <= 21 + 2 + 4 + 1, r["usage"]


def test_qwen2vl_video_frames_in_one_sequence():
    """/embed/video: the sampled frames are several images of ONE input by
    default (pooling "sequence"); a pooling over per-frame vectors stays."""
    from test_video import colours, post_video
    from harness import need_tool
    need_tool("ffmpeg")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        path = os.path.join(d, "v.mp4")
        colours(path)
        data = open(path, "rb").read()
        models = [{"name": "opsmm", "path": model_dir(d), "default": True}]
        with Server(workers=1, models=models) as s:
            r = post_video(s, data, max_frames=4, return_frames=True)
            assert r.status == 200, r.body[:300]
            seq = r.json()
            assert seq["pooling"] == "sequence" and len(seq["frames"]) == 4, seq["pooling"]
            assert len(seq["frame_embeddings"]) == 4
            mean = post_video(s, data, max_frames=4, pooling="mean").json()
            assert mean["pooling"] == "mean"
            c = cos(seq["data"][0]["embedding"], mean["data"][0]["embedding"])
            assert c < 0.99999, c        # the joint embedding is not the mean of the frames'
            again = post_video(s, data, max_frames=4).json()
            assert cos(again["data"][0]["embedding"], seq["data"][0]["embedding"]) > 0.999999


def test_qwen2vl_document_pages():
    """/embed/document with a model that takes each image at its own size: pages rendered at the
    model's max_pixels (not a CLIP square), each page one prompt; a page alone gives the same vector,
    pages differ, text mode goes through the same system prompt as /embed/text."""
    import subprocess
    from harness import skip
    if not shutil.which("pdftoppm"):
        skip("poppler-utils not installed", broken=True)
    doc = subprocess.run(["python3", os.path.join(ROOT, "tools", "mkpdf.py"), "text3"], check=True,
                         capture_output=True).stdout
    with tempfile.TemporaryDirectory() as d:
        q = model_dir(d)
        with Server(workers=1, models=[{"name": "q2vl", "path": q, "default": True}]) as s:
            r = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "cache": False})
            assert r.status == 200, r
            j = r.json()
            assert [x["page"] for x in j["data"]] == [1, 2, 3], j
            v = [x["embedding"] for x in j["data"]]
            assert all(abs(sum(a * a for a in e) - 1) < 1e-4 for e in v)
            assert cos(v[0], v[1]) < 0.99999 and cos(v[1], v[2]) < 0.99999   # different pages, different vectors
            r2 = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "pages": "2",
                                                 "cache": False})
            assert r2.status == 200, r2
            assert cos(r2.json()["data"][0]["embedding"], v[1]) >= 0.99999
            t = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "mode": "text",
                                                "return_text": True, "cache": False})
            assert t.status == 200, t
            items = t.json()["data"]
            ref = s.post_json("/embed/text", {"texts": [x["text"] for x in items], "cache": False}).json()["data"]
            for a, b in zip(items, ref):
                assert cos(a["embedding"], b["embedding"]) >= 0.99999
