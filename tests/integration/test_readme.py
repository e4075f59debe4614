"""README.md against a running server (real nginx + master): every route of
the endpoint table exists with its documented method (not 404/405) and
answers 405 JSON whose `Allow` names it to another method; the table lists every route
the router has; the documented limits' defaults are what /info reports; the
curl examples run as written (from the repository root, port changed) and
answer in the documented data[] shape; errors, nginx's own included, are
JSON."""
import json
import os
import re
import subprocess

from harness import ROOT, Server
from test_embed import MODELS

README = os.path.join(ROOT, "README.md")
ROUTER = os.path.join(ROOT, "src", "serve", "router.c")
CONF_C = os.path.join(ROOT, "src", "conf.c")


def endpoint_table():
    """[(method, path)] from the rows of the README's endpoint table."""
    rows = re.findall(r"^\| `(GET|POST|PUT|DELETE) (/[^` ]*)` \|", open(README).read(), re.M)
    assert len(rows) >= 10, rows
    return rows


def config_defaults():
    """{key: default} from the README's configuration table."""
    return dict(re.findall(r"^\| `([a-z_.]+)` \| ([^|]+?) \|", open(README).read(), re.M))


def size(v):
    m = re.fullmatch(r'"?(\d+(?:\.\d+)?)([KMG]?)"?', v.strip())
    assert m, v
    return float(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def concrete(path):
    return path.replace("{id}", "tiny")


def is_json_error(r):
    try:
        e = r.json()["error"]
        return all(isinstance(e.get(k), str) for k in ("message", "type", "code"))
    except (ValueError, KeyError, TypeError):
        return False


def test_readme_lists_every_route_of_the_router():
    documented = {(m, p) for m, p in endpoint_table()}
    routes = re.findall(r'\{"(/[^"]+)", MM_ROUTE_\w+, "(GET|POST)"', open(ROUTER).read())
    assert routes, "no route table found in src/serve/router.c"
    # a prefix route ("/v1/models/") is documented by a templated path ("/v1/models/{id}")
    missing = [f"{m} {p}" for p, m in routes
               if (m, p) not in documented
               and not (p.endswith("/") and any(dm == m and dp.startswith(p) and "{" in dp for dm, dp in documented))]
    assert not missing, f"routes the server has but README.md's endpoint table does not: {missing}"


def test_readme_documents_every_config_key():
    """Every key of the config table in src/conf.c is in README.md's
    configuration table (rows like `limits.max_items`, or two keys in one row)."""
    keys = re.findall(r'^\s*(?:K_[A-Z]+\(|\{)"([a-z_]+(?:\.[a-z_]+)?)"', open(CONF_C).read(), re.M)
    assert len(keys) > 20, keys
    rows = [line.split("|")[1] for line in open(README).read().splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"`([a-z_.]+)`", " ".join(rows)))
    missing = [k for k in keys if k not in documented]
    # the keys of one `models` entry, in the `models` row
    models_row = next(line for line in open(README).read().splitlines() if line.startswith("| `models` |"))
    model_keys = re.findall(r'strcmp\(k, "([a-z_]+)"\)', open(CONF_C).read())
    missing += [f"models[].{k}" for k in model_keys if not re.search(rf"\b{k} =", models_row)]
    assert not missing, f"config keys the server reads but README.md does not document: {missing}"


def test_readme_endpoint_table_matches_the_server():
    rows = endpoint_table()
    problems = []
    with Server(workers=2, models=MODELS[:1]) as s:
        for method, path in rows:
            url = concrete(path)
            if method == "GET":
                r = s.get(url)
                if r.status != 200:
                    problems.append(f"{method} {path}: {r.status} {r.body[:200]!r}")
                r = s.request("HEAD", url)
                if r.status != 200 or r.body:
                    problems.append(f"HEAD {path}: {r.status} {r.body[:200]!r}")
            else:
                # an empty JSON object: a 4xx that says what is missing, never 404/405
                r = s.post_json(url, {})
                if r.status in (404, 405) or r.status >= 500 or not is_json_error(r):
                    problems.append(f"{method} {path} {{}}: {r.status} {r.body[:200]!r}")
            if path == "/":
                continue   # the static page: nginx's, no API method rules
            other = "POST" if method == "GET" else "GET"
            r = s.request(other, url, body=b"{}" if other == "POST" else None,
                          headers={"Content-Type": "application/json"} if other == "POST" else {})
            allow = {x.strip() for x in (r.headers.get("allow") or "").split(",")}
            if r.status != 405 or method not in allow or other in allow or not is_json_error(r):
                problems.append(f"{other} {path}: expected 405 JSON with Allow: {method}, got {r.status} "
                                f"Allow={r.headers.get('allow')} {r.body[:200]!r}")
    assert not problems, "\n".join(problems)


def test_readme_limits_are_the_defaults():
    """limits.* defaults in the README's configuration table are what /info
    reports when the config does not set them (the harness sets only
    max_body_bytes)."""
    doc = config_defaults()
    info_key = {"limits.max_items": "max_items", "limits.max_text_bytes": "max_text_bytes",
                "limits.max_pixels": "max_pixels", "limits.max_parts": "max_parts",
                "limits.max_video_seconds": "max_video_seconds", "limits.video_budget": "video_budget_seconds",
                "limits.render_budget": "render_budget"}
    with Server(workers=1, models=MODELS[:1]) as s:
        limits = s.get("/info").json()["limits"]
    wrong = []
    for key, ik in info_key.items():
        assert key in doc, f"{key} is not in README.md's configuration table"
        if size(doc[key]) != limits[ik]:
            wrong.append(f"{key}: README {doc[key]}, server {limits[ik]}")
    m = re.search(r"^\| `limits.max_frames`, `limits.default_frames` \| (\d+), (\d+) \|", open(README).read(), re.M)
    assert m, "limits.max_frames, limits.default_frames are not in README.md's configuration table"
    if (int(m.group(1)), int(m.group(2))) != (limits["max_frames"], limits["default_frames"]):
        wrong.append(f"max_frames/default_frames: README {m.group(1)}/{m.group(2)}, server "
                     f"{limits['max_frames']}/{limits['default_frames']}")
    for a, b in (("max_pages", "max_page_pixels"), ("max_pdf_bytes", "render_memory")):   # two-key rows
        m = re.search(r"^\| `limits.%s`, `limits.%s` \| ([^,|]+), ([^|]+?) \|" % (a, b), open(README).read(), re.M)
        assert m, f"limits.{a}, limits.{b} are not in README.md's configuration table"
        if (size(m.group(1)), size(m.group(2))) != (limits[a], limits[b]):
            wrong.append(f"{a}/{b}: README {m.group(1)}/{m.group(2)}, server {limits[a]}/{limits[b]}")
    assert not wrong, "\n".join(wrong)


def curl_examples():
    text = open(README).read()
    out, cur = [], None
    for line in text.splitlines():
        t = line.strip()
        if cur is not None:
            cur += " " + t.rstrip("\\").strip()
            if not t.endswith("\\"):
                out.append(cur)
                cur = None
        elif line.startswith("    curl "):
            if t.endswith("\\"):
                cur = t.rstrip("\\").strip()
            else:
                out.append(t)
    assert out, "no curl examples in README.md"
    return out


def test_readme_curl_examples_work_as_written():
    examples = curl_examples()
    problems = []
    with Server(workers=2, models=MODELS[:1]) as s:
        for ex in examples:
            for f in re.findall(r"=@([^\s']+)", ex):
                if not os.path.isfile(os.path.join(ROOT, f)):
                    problems.append(f"{ex}: {f} is not in the repository")
            cmd = ex.replace("localhost:8080", f"127.0.0.1:{s.port}")
            p = subprocess.run(["sh", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=60)
            try:
                r = json.loads(p.stdout)
                d = r["data"][0]
                assert isinstance(d["embedding"], list) and len(d["embedding"]) > 0 and d["index"] == 0
            except (ValueError, KeyError, IndexError, TypeError, AssertionError):
                problems.append(f"{ex}\n    -> not the data[] shape: {p.stdout[:300]!r} {p.stderr[:200]!r}")
    assert not problems, "\n".join(problems)


def test_readme_errors_are_json():
    """'All errors have OpenAI's shape': unknown API routes, unknown models,
    unknown static files (nginx's own 404)."""
    problems = []
    with Server(workers=1, models=MODELS[:1]) as s:
        for what, r in (("unknown route", s.get("/v2/nothing")),
                        ("unknown model", s.post_json("/v1/embeddings", {"input": "x", "model": "no-such"})),
                        ("unknown static file", s.get("/static/no-such.js"))):
            if r.status != 404 or not is_json_error(r):
                problems.append(f"{what}: {r.status} {r.headers.get('content-type')} {r.body[:150]!r}")
    assert not problems, "\n".join(problems)
