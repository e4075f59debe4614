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
