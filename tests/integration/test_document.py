"""POST /embed/document (issue 19): PDFs generated at test time by
tools/mkpdf.py, rendered by each worker's isolated renderer (poppler in a
sandboxed child process per run). Normal documents give one vector per page
(image mode) or per page with text (text mode); hostile ones (HTML, truncated,
encrypted, 10,000 pages, a CPU bomb past limits.render_budget) give a clear
JSON error while the workers keep serving concurrent requests."""
import base64
import json
import os
import shutil
import subprocess
import threading
import time

from harness import ROOT, Server, skip
from test_embed import MODELS, cos, multipart

MKPDF = os.path.join(ROOT, "tools", "mkpdf.py")


def pdf(kind):
    return subprocess.run(["python3", MKPDF, kind], check=True, capture_output=True).stdout


def need_poppler():
    if not shutil.which("pdftoppm"):
        skip("poppler-utils not installed (tools/deps.sh installs it)", broken=True)


def post_doc(s, data, fields=None, timeout=60):
    body, ct = multipart(dict({"cache": "false"}, **(fields or {})), [("file", "doc.pdf", data, "application/pdf")])
    return s.request("POST", "/embed/document", body=body, headers={"Content-Type": ct}, timeout=timeout)


def test_pages_as_images_and_text():
    need_poppler()
    with Server(workers=2, models=MODELS) as s:
        doc = pdf("text3")
        r = post_doc(s, doc)
        assert r.status == 200, r
        j = r.json()
        assert [d["page"] for d in j["data"]] == [1, 2, 3] and j["pages"] == 3, j
        assert all(d["kind"] == "image" and len(d["embedding"]) == j["dim"] for d in j["data"])
        assert "render;dur=" in r.headers.get("server-timing", ""), r.headers
        # pages "1,3", JSON base64, mean pooling
        r = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "pages": "3,1",
                                            "pooling": "mean", "cache": False})
        assert r.status == 200, r
        j2 = r.json()
        assert [d["page"] for d in j2["data"]] == [3, 1], j2
        by_page = {d["page"]: d["embedding"] for d in j["data"]}
        for d in j2["data"]:   # the same page rendered the same way: the same vector
            assert cos(d["embedding"], by_page[d["page"]]) >= 0.99999
        assert len(j2["document"]["embedding"]) == j["dim"]
        # text mode: a vector per page with text, equal to /embed/text of that text
        r = post_doc(s, doc, {"mode": "text", "return_text": "true"})
        assert r.status == 200, r
        t = r.json()["data"]
        assert [d["page"] for d in t] == [1, 2, 3] and "The cat sat on the mat." in t[0]["text"], t
        ref = s.post_json("/embed/text", {"texts": [d["text"] for d in t], "cache": False}).json()["data"]
        for d, e in zip(t, ref):
            assert cos(d["embedding"], e["embedding"]) >= 0.99999
        # both: images then texts
        r = post_doc(s, doc, {"mode": "both", "pages": "2"})
        assert [(d["page"], d["kind"]) for d in r.json()["data"]] == [(2, "image"), (2, "text")], r
        # a PDF without a text layer in text mode
        r = post_doc(s, pdf("notext"), {"mode": "text"})
        assert r.status == 422 and r.json()["error"]["code"] == "no_text_layer", r
        r = post_doc(s, doc, {"pages": "4"})
        assert r.status == 400 and "past the end" in r.json()["error"]["message"], r


def test_hostile_documents():
    need_poppler()
    with Server(workers=2, models=MODELS, limits={"render_budget": "1.5", "max_pages": "16"}) as s:
        pids = sorted(s.worker_pids())
        cases = [("html", 415, "not_a_pdf"), ("truncated", 422, "unreadable_document"),
                 ("encrypted", 422, "encrypted_document"), ("many", 413, "document_too_large"),
                 ("zeropages", 422, "unreadable_document"), ("slow", 422, "render_budget_exceeded")]
        for kind, status, code in cases:
            t0 = time.time()
            r = post_doc(s, pdf(kind))
            assert r.status == status and r.json()["error"]["code"] == code, (kind, r)
            assert time.time() - t0 < 5, (kind, time.time() - t0)
        for kind in ("huge", "nested", "badxref"):   # poppler copes: a vector per page
            r = post_doc(s, pdf(kind))
            assert r.status == 200 and len(r.json()["data"]) == 1, (kind, r)
        r = post_doc(s, pdf("many"), {"pages": "9998-10000"})
        assert r.status == 200 and [d["page"] for d in r.json()["data"]] == [9998, 9999, 10000], r
        st = s.status()
        assert st["crashes"] == 0 and st["restarts"] == 0, st
        assert sorted(s.worker_pids()) == pids


def test_hostile_pdf_does_not_hurt_concurrent_requests():
    need_poppler()
    with Server(workers=2, models=MODELS, limits={"render_budget": "3.0"}) as s:
        slow = pdf("slow")
        results = []

        def bomb():
            results.append(post_doc(s, slow))
        th = [threading.Thread(target=bomb)]
        th[0].start()
        time.sleep(0.3)
        lat = []
        for i in range(10):   # the other worker answers at once meanwhile
            t0 = time.time()
            r = s.post_json("/embed/text", {"texts": ["hello %d" % i], "cache": False})
            lat.append(time.time() - t0)
            assert r.status == 200, r
        th[0].join()
        assert results[0].status == 422 and results[0].json()["error"]["code"] == "render_budget_exceeded", results[0]
        assert max(lat) < 1.0, lat
        # and the worker that took the bomb still renders
        r = post_doc(s, pdf("text3"))
        assert r.status == 200, r
        assert s.status()["crashes"] == 0


def test_text_chunks():
    """mode=text cuts a page longer than the model's 77 tokens into chunks:
    they concatenate to the page text, start/end are code point offsets
    into it, each fits the model untruncated and takes as much as fits, and
    each vector is /embed/text's of the chunk's text."""
    need_poppler()
    with Server(workers=1, models=MODELS) as s:
        r = post_doc(s, pdf("longtext"), {"mode": "text", "return_text": "true"})
        assert r.status == 200, r
        items = r.json()["data"]
        p1 = [d for d in items if d["page"] == 1]
        p2 = [d for d in items if d["page"] == 2]
        assert len(p1) >= 3 and len(p2) == 1, [(d["page"], d["chunk"]) for d in items]
        assert [d["chunk"] for d in p1] == list(range(len(p1))) and p2[0]["chunk"] == 0
        assert all(d["kind"] == "text" for d in items) and [d["index"] for d in items] == list(range(len(items)))
        page = "".join(d["text"] for d in p1)
        assert "caf\u00e9 na\u00efve r\u00e9sum\u00e9 of chapter 35" in page, page[-200:]
        pos = 0
        for d in p1:   # contiguous code point ranges (the text has 2-byte letters, so bytes would differ)
            assert d["start"] == pos and d["end"] == pos + len(d["text"]), (d["start"], d["end"], pos, len(d["text"]))
            assert page[d["start"]:d["end"]] == d["text"]
            pos = d["end"]
        assert p2[0]["start"] == 0 and p2[0]["end"] == len(p2[0]["text"])
        # one pdftotext run over the page gives what the chunks add up to
        whole = post_doc(s, pdf("longtext"), {"mode": "text", "return_text": "true", "pages": "1"}).json()["data"]
        assert "".join(d["text"] for d in whole) == page
        # each chunk fits untruncated; one more word would not
        for a, b in zip(p1, p1[1:]):
            r = s.post_json("/embed/text", {"texts": [a["text"]], "truncate": False, "cache": False})
            assert r.status == 200, (a["text"], r)
            nxt = b["text"].split()[0]
            more = a["text"] + b["text"][:b["text"].index(nxt) + len(nxt)]
            r = s.post_json("/embed/text", {"texts": [more], "truncate": False, "cache": False})
            assert r.status == 422 and r.json()["error"]["code"] == "input_too_long", (more, r)
        ref = s.post_json("/embed/text", {"texts": [d["text"] for d in items], "cache": False}).json()["data"]
        for d, e in zip(items, ref):
            assert cos(d["embedding"], e["embedding"]) >= 0.99999
        # both: the page images, then the chunks; pooling over all of them
        r = post_doc(s, pdf("longtext"), {"mode": "both", "pooling": "mean"})
        assert r.status == 200, r
        kinds = [(d["page"], d["kind"]) for d in r.json()["data"]]
        assert kinds == [(1, "image"), (2, "image")] + [(d["page"], "text") for d in items], kinds
        assert len(r.json()["document"]["embedding"]) == r.json()["dim"]


def png_rgb(data):
    """A PNG (8-bit RGB, not interlaced: what the server writes) -> (w, h, RGB bytes), standard library only."""
    import struct
    import zlib
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, typ = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if typ == b"IHDR":
            w, h, depth, ctype, _, _, lace = struct.unpack(">IIBBBBB", body)
            assert (depth, ctype, lace) == (8, 2, 0), (depth, ctype, lace)
        elif typ == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, out, prev = zlib.decompress(idat), 3 * w, bytearray(), bytearray(3 * w)
    for y in range(h):
        f, row = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = row[i - 3] if i >= 3 else 0
            b, c = prev[i], prev[i - 3] if i >= 3 else 0
            if f == 1:
                row[i] = (row[i] + a) & 255
            elif f == 2:
                row[i] = (row[i] + b) & 255
            elif f == 3:
                row[i] = (row[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            else:
                assert f == 0, f
        out += row
        prev = row
    return w, h, bytes(out)


def ppm_rgb(data):
    """pdftoppm's output, one P6 page -> (w, h, RGB bytes)."""
    parts = data.split(maxsplit=4)
    assert parts[0] == b"P6" and parts[3] == b"255", parts[:4]
    w, h = int(parts[1]), int(parts[2])
    return w, h, parts[4][:w * h * 3]


def check_pages_equal_image_route(s, doc, model, short_side):
    """Each page item's vector equals /embed/image's vector of the page as the
    server rendered it (return_images: a lossless PNG of the pixels the model
    read); that PNG is what poppler's pdftoppm gives for the page at the same
    size, rendered here in the test; the rendered size follows the model."""
    r = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "model": model,
                                        "return_images": True, "cache": False})
    assert r.status == 200, r
    items = r.json()["data"]
    assert [d["page"] for d in items] == [1, 2, 3], items
    sizes, refs = set(), []
    for d in items:
        assert d["image"].startswith("data:image/png;base64,"), d["image"][:40]
        png = base64.b64decode(d["image"].split(",", 1)[1])
        w, h, px = png_rgb(png)
        assert (w, h) == (d["width"], d["height"]), (w, h, d["width"], d["height"])
        sizes.add((w, h))
        if short_side:   # a fixed-size model: the short side at twice its input (pdftoppm rounds by a pixel)
            assert abs(min(w, h) - short_side) <= 1, (w, h, short_side)
        # the same bits from pdftoppm itself, asked for the same long side
        ppm = subprocess.run(["pdftoppm", "-f", str(d["page"]), "-l", str(d["page"]), "-scale-to", str(max(w, h)), "-"],
                             input=doc, capture_output=True, check=True).stdout
        assert ppm_rgb(ppm) == (w, h, px), ("page %d differs from pdftoppm's" % d["page"], ppm_rgb(ppm)[:2], (w, h))
        body, ct = multipart({"model": model, "cache": "false"}, [("image", "page.png", png, "image/png")])
        ref = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct})
        assert ref.status == 200, ref
        refs.append(ref.json()["data"][0]["embedding"])
    assert len(sizes) == 3, sizes   # Letter portrait, A4 landscape, A4 portrait
    for i, (d, v) in enumerate(zip(items, refs)):
        c = [cos(x["embedding"], v) for x in items]
        assert c[i] >= 0.99999, (model, d["page"], c)
        # the random-weight fixtures put pages close together (pages 1 and 3, both mostly
        # white, at 0.99998): each page must still be nearest to its own image
        assert all(c[i] > x for k, x in enumerate(c) if k != i), (model, d["page"], c)
    return sizes


def test_page_vectors_equal_image_route():
    """Issue 19: per-page vectors equal the /embed/image vectors of the same
    page rendered the same way (cosine >= 0.99999), for CLIP (f32 and bf16)
    and for the Qwen2-VL fixture (pages at the model's max_pixels)."""
    import json as _json
    import tempfile
    need_poppler()
    from test_qwen2vl import model_dir
    doc = pdf("text3")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        q = model_dir(d)
        max_pixels = _json.load(open(os.path.join(q, "preprocessor_config.json")))["size"]["longest_edge"]
        models = MODELS + [{"name": "q2vl", "path": q}]
        with Server(workers=1, models=models) as s:
            size = {m["name"]: m["image_size"] for m in s.get("/info").json()["models"]}
            for m in ("tiny", "tiny-bf16"):
                check_pages_equal_image_route(s, doc, m, 2 * size[m])
            for w, h in check_pages_equal_image_route(s, doc, "q2vl", 0):
                # at the model's max_pixels (pdftoppm rounds the short side: a row or column either way)
                assert max_pixels - w - h <= w * h <= max_pixels + w + h, (w, h, max_pixels)


def test_thumbnails_and_image_options():
    """thumbnails=N: a PNG per page item, long side N (never larger than the
    page as rendered), the page's aspect kept, made from the rendered pixels;
    malformed options are 400s that name the field."""
    need_poppler()
    doc = pdf("text3")
    with Server(workers=1, models=MODELS) as s:
        r = post_doc(s, doc, {"thumbnails": "96"})
        assert r.status == 200, r
        items = r.json()["data"]
        for d in items:
            assert "image" not in d, list(d)   # only on request
            w, h, px = png_rgb(base64.b64decode(d["thumbnail"].split(",", 1)[1]))
            assert max(w, h) == 96 and abs(w / h - d["width"] / d["height"]) < 0.03, (w, h, d["width"], d["height"])
            # a thumbnail of the page, not a blank: text pages are mostly white with dark glyphs
            assert min(px) < 230 and sum(px) / len(px) > 180, (d["page"], min(px), sum(px) / len(px))
        # page 2 has a red block and a picture: its thumbnail has red where page 1's has none
        reds = []
        for d in items[:2]:
            _, _, px = png_rgb(base64.b64decode(d["thumbnail"].split(",", 1)[1]))
            reds.append(sum(1 for i in range(0, len(px), 3) if px[i] > 150 and px[i + 1] < 80 and px[i + 2] < 80))
        assert reds[0] == 0 and reds[1] > 50, reds
        # larger than the page as rendered: the page itself, same as return_images
        r = s.post_json("/embed/document", {"document": base64.b64encode(doc).decode(), "pages": "1", "thumbnails": 1024,
                                            "return_images": True, "cache": False})
        d = r.json()["data"][0]
        assert png_rgb(base64.b64decode(d["thumbnail"].split(",", 1)[1])) == \
            png_rgb(base64.b64decode(d["image"].split(",", 1)[1])), "an unscaled thumbnail is the page"
        # text items carry neither
        r = post_doc(s, doc, {"mode": "text", "thumbnails": "64", "return_images": "true"})
        assert r.status == 200 and all("thumbnail" not in d and "image" not in d for d in r.json()["data"]), r
        for bad in ({"thumbnails": 8}, {"thumbnails": 4096}, {"thumbnails": "64"}, {"thumbnails": 64.5},
                    {"return_images": "yes"}):
            r = s.post_json("/embed/document", dict({"document": base64.b64encode(doc).decode()}, **bad))
            assert r.status == 400 and r.json()["error"]["code"] == "invalid_parameter", (bad, r)
            assert list(bad)[0] in r.json()["error"]["message"], r.json()
        for bad in ("-1", "", "12x"):
            r = post_doc(s, doc, {"thumbnails": bad})
            assert r.status == 400 and "thumbnails" in r.json()["error"]["message"], (bad, r)
