"""The upload page at / (nginx/www) with two models of different spaces: a
text-only model (the default) and a CLIP model flagged synthetic. The page
must compare A and B only within one model (it picks the one that has both
text and image), say that the chosen model's weights are synthetic, fit a
390 px wide phone without sideways scrolling, and have a favicon (no 4xx
for anything it loads). Headless Chromium through playwright-core."""
import json
import math
import os
import subprocess
import tempfile

from harness import ROOT, Server
from test_embed import TINY, multipart
from test_web import make_media

OUT = os.path.join(ROOT, "tests", "out")
BERT = os.path.join(ROOT, "tests", "fixtures", "bert", "bert-tiny")


def synthetic_copy(d):
    """clip-tiny with config.json saying mmembed_synthetic (what /info reports as synthetic)."""
    syn = os.path.join(d, "clip-syn")
    os.makedirs(syn)
    for f in os.listdir(TINY):
        if f != "config.json":
            os.symlink(os.path.join(TINY, f), os.path.join(syn, f))
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    cfg["mmembed_synthetic"] = True
    json.dump(cfg, open(os.path.join(syn, "config.json"), "w"))
    return syn


def test_page_compares_within_one_model_and_fits_a_phone():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        png, _ = make_media(d)
        models = [{"name": "bert", "path": BERT, "default": True}, {"name": "syn", "path": synthetic_copy(d)}]
        with Server(workers=2, models=models) as s:
            info = {m["name"]: m for m in s.get("/info").json()["models"]}
            assert info["syn"]["synthetic"] is True and "image" in info["syn"]["modalities"], info
            assert "image" not in info["bert"]["modalities"], info
            node_dir = os.path.join(ROOT, "tests", "node")
            p = subprocess.run(["node", os.path.join(node_dir, "page_test.mjs"), f"http://127.0.0.1:{s.port}", png, OUT],
                               capture_output=True, text=True, timeout=180, cwd=node_dir)
            assert p.returncode == 0, p.stderr[-3000:]
            out = json.loads(p.stdout)
            # what the page should show: text and image both through 'syn'
            t = s.post_json("/embed/text", {"texts": ["a photo of a cat"], "model": "syn"}).json()["data"][0]["embedding"]
            body, ct = multipart({"model": "syn"}, [("image", "gen.png", open(png, "rb").read(), "image/png")])
            i = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct}).json()["data"][0]["embedding"]
            want = sum(a * b for a, b in zip(t, i)) / math.sqrt(sum(a * a for a in t) * sum(b * b for b in i))
            for width, w in out["widths"].items():
                where = f"at {width} px: "
                assert w["errors"] == [] and w["failed"] == [], where + json.dumps(w)[:2000]
                assert w["scroll"]["scrollWidth"] <= w["scroll"]["clientWidth"], where + f"scrolls sideways {w['scroll']}"
                assert w["scrollAfter"] <= w["scroll"]["clientWidth"], where + f"scrolls sideways with results {w['scrollAfter']}"
                assert w["icon"] and w["icon"]["status"] == 200 and "image/" in (w["icon"]["type"] or ""), where + str(w["icon"])
                assert w["model"] == "syn" and set(w["options"]) >= {"bert", "syn"}, where + str(w)
                assert "synthetic" in w["note"] and "syn" in w["note"], where + w["note"]
                c = w["compare"]
                assert c["modelA"] == "syn" and c["modelB"] == "syn", where + str(c)
                assert abs(c["cosine"] - want) < 1e-4, where + f"page {c['cosine']} vs API {want}"  # f32 vs f64 sums
                assert "syn" in c["text"] and "synthetic" in c["text"], where + c["text"]
                to = w.get("textOnly")
                assert to and to["model"] == "bert" and to["kindB"] == "text", where + str(to)
                # the PDF search too: a text model compares a query with page text only, never page images
                assert set(to["disabled"]) == {"kind-a:image", "kind-a:video", "kind-b:image", "kind-b:video",
                                               "doc-mode:image"}, where + str(to)
                assert to["docMode"] == "text" and "page text" not in to["docNote"] and "text layer" in to["docNote"], \
                    where + str(to)
                assert to["note"] == "", where + to["note"]
            print(f"    page cosine within 'syn' = {want:.4f}; screenshots tests/out/page-390.png, page-1280.png")
