"""BERT-style and Qwen3 text encoders served next to each other, against
Hugging Face reference vectors (tests/fixtures/bert, tests/fixtures/qwen3)."""
import gzip
import json
import os
import shutil
import tempfile

from harness import ROOT, Server
from test_embed import cos

FX = os.path.join(ROOT, "tests", "fixtures")


def qwen3_dir(d):
    """The Qwen3 fixture folder with its tokenizer un-gzipped (11 MB, kept gzipped in git)."""
    q = os.path.join(d, "qwen3-tiny")
    shutil.copytree(os.path.join(FX, "qwen3", "qwen3-tiny"), q)
    with gzip.open(os.path.join(FX, "qwen3", "tokenizer.json.gz"), "rb") as f:
        open(os.path.join(q, "tokenizer.json"), "wb").write(f.read())
    return q


def test_bert_and_qwen3_match_hf():
    bert_ref = json.load(open(os.path.join(FX, "bert", "bert_ref.json"), encoding="utf-8"))
    qwen_ref = json.load(open(os.path.join(FX, "qwen3", "qwen3_ref.json"), encoding="utf-8"))
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        models = [{"name": "bert", "path": os.path.join(FX, "bert", "bert-tiny"), "default": True},
                  {"name": "qwen3", "path": qwen3_dir(d), "instruction": "Instruct: find it\\nQuery: "}]
        with Server(workers=2, models=models) as s:
            info = {m["name"]: m for m in s.get("/info").json()["models"]}
            assert info["bert"]["arch"] == "bert" and info["qwen3"]["arch"] == "qwen3", info
            texts = [r["text"] for r in bert_ref if r["text"]]
            d1 = s.post_json("/embed/text", {"texts": texts[:30], "model": "bert", "normalize": False}).json()
            worst = min(cos(item["embedding"], r["mean"]) for item, r in zip(d1["data"], [r for r in bert_ref if r["text"]]))
            assert worst >= 0.99999, worst                     # mean pooling from 1_Pooling/config.json
            for item, r in zip(d1["data"], [r for r in bert_ref if r["text"]]):
                assert item["tokens"] == len(r["ids"]), (item["tokens"], r)
            qtexts = [r["text"] for r in qwen_ref if r["text"]]
            d2 = s.post_json("/embed/text", {"texts": qtexts, "model": "qwen3", "normalize": False}).json()
            qworst = min(cos(item["embedding"], r["last"]) for item, r in zip(d2["data"], [r for r in qwen_ref if r["text"]]))
            assert qworst >= 0.99999, qworst                   # last token, <|endoftext|> appended
            for item, r in zip(d2["data"], [r for r in qwen_ref if r["text"]]):
                assert item["tokens"] == min(len(r["ids"]), 512), (item["tokens"], len(r["ids"]))
            # the OpenAI route on the same models; uneven batch == singles
            one = s.post_json("/v1/embeddings", {"input": qtexts[3], "model": "qwen3", "cache": False}).json()
            many = s.post_json("/v1/embeddings", {"input": qtexts[:8], "model": "qwen3", "cache": False}).json()
            assert max(abs(a - b) for a, b in zip(one["data"][0]["embedding"], many["data"][3]["embedding"])) < 1e-5
            # a query with the model's instruction differs from the plain text
            qq = s.post_json("/v1/embeddings", {"input": "what is a cat", "model": "qwen3", "input_type": "query"}).json()
            qd = s.post_json("/v1/embeddings", {"input": "what is a cat", "model": "qwen3"}).json()
            assert cos(qq["data"][0]["embedding"], qd["data"][0]["embedding"]) < 0.9999
            print(f"    BERT mean-pooled worst cosine {worst:.7f}; Qwen3 last-token worst cosine {qworst:.7f}")
