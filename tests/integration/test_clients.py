"""Unmodified third-party OpenAI-API clients through real nginx + master
(tests/node/clients.mjs): npm `openai` with its defaults (base64 encoding),
LangChain.js `OpenAIEmbeddings.embedDocuments` of 1,000 texts (default batch
size 512) and the Vercel AI SDK `embedMany` of 2,048 texts. Only baseURL and
the model are set; the model is the alias `text-embedding-3-small` of the
configured model (config key `aliases`). Every vector a client returns must
equal what the server answers for the same text directly.

Expects of the server: `aliases` per model, `GET /v1/models/{id}` (404 JSON
for an unknown id), `limits.max_items` 2048 by default (the config here sets
no max_items)."""
import json
import math
import os
import subprocess

from harness import ROOT, Server
from test_embed import MODELS

NODE_DIR = os.path.join(ROOT, "tests", "node")
ALIAS = "text-embedding-3-small"
N_LANGCHAIN, N_AI = 1000, 2048


def aliased_server():
    """The harness server with one text-capable model ('tiny', the CLIP
    fixture) that also answers to ALIAS; no limits.max_items (the default)."""
    s = Server(workers=2, models=MODELS[:1])
    conf = open(s.conf_path).read()
    assert 'name = "tiny";' in conf
    s.write_conf(raw=conf.replace('name = "tiny";', f'name = "tiny"; aliases = ["{ALIAS}"];'))
    return s


def direct(s, texts, chunk=64):
    """The server's own vectors for texts: /v1/embeddings with the model's
    real name, floats, the cache bypassed so they are computed afresh."""
    out = []
    for i in range(0, len(texts), chunk):
        r = s.post_json("/v1/embeddings", {"model": "tiny", "input": texts[i:i + chunk], "cache": False})
        assert r.status == 200, r
        out += [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]
    return out


def assert_same(got, want, what):
    # float32 through base64 or JSON vs JSON floats computed in another batch
    # composition: equal to 1e-5 per component (batching changes kernel
    # blocking, not the math), cosine to 1e-6
    assert len(got) == len(want), (what, len(got), len(want))
    for i, (a, b) in enumerate(zip(got, want)):
        assert len(a) == len(b), (what, i, len(a), len(b))
        diff = max(abs(x - y) for x, y in zip(a, b))
        dot = sum(x * y for x, y in zip(a, b))
        na = math.sqrt(sum(x * x for x in a))
        nb = math.sqrt(sum(y * y for y in b))
        assert diff < 1e-5 and dot / (na * nb) > 1 - 1e-6, f"{what}[{i}]: max diff {diff}"


def check_openai(s, out):
    # its default request is encoding_format=base64, decoded by the library
    o = out["openai"]
    assert o["isArray"] and o["model"] in (ALIAS, "tiny"), {k: o[k] for k in ("model", "usage")}
    assert o["usage"]["prompt_tokens"] > 0 and o["index"] == [0, 1], o["usage"]
    assert_same([o["single"]] + o["batch"], direct(s, ["a photo of a cat", "a photo of a cat", "a diagram"]), "openai")


def check_openai_models(s, out):
    # GET /v1/models/{id} in OpenAI's shape, by alias; 404 for an unknown id
    m = out["openai_models"]
    assert m["retrieve"]["object"] == "model" and m["retrieve"]["id"] in (ALIAS, "tiny"), m
    assert isinstance(m["retrieve"]["created"], int) and isinstance(m["retrieve"]["owned_by"], str), m
    assert "tiny" in m["ids"], m
    assert m["missing"]["status"] == 404, m


def check_langchain(s, out):
    # default batch size: 1,000 documents in two requests, vectors in order
    lc = out["langchain"]
    assert lc["batchSize"] == 512, lc["batchSize"]
    want = direct(s, out["texts"]["langchain"])
    assert_same(lc["vectors"], want, "langchain")
    assert_same([lc["query"]], want[:1], "langchain query")


def check_ai(s, out):
    # embedMany: 2,048 values in one request (OpenAI's per-request limit)
    a = out["ai"]
    assert_same(a["vectors"], direct(s, out["texts"]["ai"]), "ai")
    assert a["usage"]["tokens"] > 0, a["usage"]


def test_third_party_clients_with_defaults():
    with aliased_server() as s:
        p = subprocess.run(["node", os.path.join(NODE_DIR, "clients.mjs"), f"http://127.0.0.1:{s.port}/v1", ALIAS,
                            str(N_LANGCHAIN), str(N_AI)], capture_output=True, text=True, timeout=300, cwd=NODE_DIR)
        assert p.returncode == 0, p.stderr[-3000:]
        out = json.loads(p.stdout)
        # what reached nginx before the direct requests below: openai 2, LangChain
        # 512 + 488 documents + 1 query, AI SDK 2,048 in one request
        log = open(os.path.join(s.dir, "nginx-access.log")).read().splitlines()
        calls = [line for line in log if '"POST /v1/embeddings' in line]
        problems = []
        if len(calls) != 6 or not all('" 200 ' in c for c in calls):
            problems.append("requests: expected 6 x 200 (openai 2, langchain 2 + 1, ai 1), got:\n  " + "\n  ".join(calls))
        for name, check in (("openai", check_openai), ("openai_models", check_openai_models),
                            ("langchain", check_langchain), ("ai", check_ai)):
            if "error" in out[name]:
                problems.append(f"{name}: the client failed: {out[name]['error']}")
                continue
            try:
                check(s, out)
                print(f"    {name}: ok ({out[name]['ms']} ms)")
            except AssertionError as e:
                problems.append(f"{name}: {str(e)[:1000]}")
        assert not problems, "\n".join(problems)
