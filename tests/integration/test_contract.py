"""What the README promises about text options holds on the default text
model (USE-Lite) too (issue 13): truncate: false refuses long texts with
422, token-id input says which models take it, the tokenize command works."""
import json
import os
import subprocess

from harness import BIN, ROOT, Server

USE = os.path.join(ROOT, "models", "use-lite")
MODELS = [{"name": "use-lite", "path": USE, "default": True}]


def test_truncate_false_on_use_lite():
    long_text = "word " * 400   # far over USE-Lite's 128 tokens
    with Server(workers=1, models=MODELS) as s:
        r = s.post_json("/v1/embeddings", {"input": long_text, "truncate": False})
        assert r.status == 422, r
        assert r.json()["error"]["code"] == "input_too_long", r
        assert "128" in r.json()["error"]["message"]
        assert s.post_json("/v1/embeddings", {"input": long_text}).status == 200   # default: truncate
        assert s.post_json("/v1/embeddings", {"input": "short", "truncate": False}).status == 200
        r = s.post_json("/v1/embeddings", {"input": [1, 2, 3]})
        assert r.status == 400 and "token ids" in r.json()["error"]["message"], r


def test_tokenize_cli_on_use_lite():
    out = subprocess.run([BIN, "tokenize", "--model", USE, "--text", "hello world"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert j["tokens"] == len(j["ids"]) and 1 <= j["tokens"] <= 4, j
