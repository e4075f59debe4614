#!/usr/bin/env python3
"""Small self-contained PDF generator for mmembed's document tests.

    tools/mkpdf.py KIND [OUT]      (OUT omitted or "-": stdout)

Kinds (all deterministic, standard library only):
  text3      3 pages: Letter portrait, A4 landscape, A4 portrait; text on
             every page (Helvetica), a coloured rectangle and an RGB image
             on page 2
  doc20      20 pages of text and a figure each (benchmarks)
  notext     2 pages with drawings only (no text layer)
  many       10,000 empty pages (a page-count bomb)
  huge       one page of 200 x 200 inches (14400 pt)
  truncated  text3 cut in the middle
  badxref    text3 with every xref offset wrong
  nested     an object nested 100,000 arrays deep
  encrypted  a Standard-security-handler PDF that needs a user password
  slow       one page whose content stream (Flate, ~100 KB) inflates to
             millions of path operations (a CPU bomb for the renderer)
  zeropages  a page tree with no pages
  html       an HTML file (not a PDF)

The layout is written by hand (objects, then an xref table with real byte
offsets), so every file is a valid PDF 1.4 unless the kind says otherwise.
"""
import sys
import zlib

LETTER = (612, 792)
A4 = (595, 842)


class Pdf:
    def __init__(self):
        self.objs = []          # bytes per object, index = number - 1

    def add(self, body):
        self.objs.append(body if isinstance(body, bytes) else body.encode("latin-1"))
        return len(self.objs)

    def reserve(self):
        self.objs.append(None)
        return len(self.objs)

    def set(self, num, body):
        self.objs[num - 1] = body if isinstance(body, bytes) else body.encode("latin-1")

    def stream(self, data, extra="", flate=False):
        if flate:
            data = zlib.compress(data, 9)
            extra += " /Filter /FlateDecode"
        return self.add(b"<< /Length %d%s >>\nstream\n" % (len(data), extra.encode()) + data + b"\nendstream")

    def build(self, root, trailer_extra=""):
        out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
        offs = []
        for i, body in enumerate(self.objs):
            offs.append(len(out))
            out += b"%d 0 obj\n" % (i + 1) + body + b"\nendobj\n"
        xref = len(out)
        out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(self.objs) + 1)
        for o in offs:
            out += b"%010d 00000 n \n" % o
        out += b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n" % (
            len(self.objs) + 1, root, trailer_extra.encode(), xref)
        return bytes(out), offs


def esc(s):
    return s.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_ops(lines, x, y, size=14):
    ops = ["BT /F1 %d Tf %d %d Td %d TL" % (size, x, y, size + 4)]
    for ln in lines:
        ops.append("(%s) Tj T*" % esc(ln))
    ops.append("ET")
    return "\n".join(ops)


def image_xobject(pdf, w, h, seed):
    px = bytearray()
    for yy in range(h):
        for xx in range(w):
            px += bytes((((xx * 255 // w) ^ seed) & 255, yy * 255 // h, ((xx + yy + seed) * 3) & 255))
    return pdf.stream(bytes(px), " /Type /XObject /Subtype /Image /Width %d /Height %d"
                      " /ColorSpace /DeviceRGB /BitsPerComponent 8" % (w, h), flate=True)


def doc(pages, with_text=True, trailer_extra="", extra_objs=None):
    """pages: list of (size, content string, image or None)."""
    pdf = Pdf()
    font = pdf.add("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    tree = pdf.reserve()
    kids = []
    for (w, h), content, img in pages:
        res = "/Font << /F1 %d 0 R >>" % font if with_text else ""
        if img:
            res += " /XObject << /Im1 %d 0 R >>" % image_xobject(pdf, *img)
        cs = pdf.stream(content.encode("latin-1"), flate=True)
        kids.append(pdf.add("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Resources << %s >> /Contents %d 0 R >>"
                            % (tree, w, h, res, cs)))
    pdf.set(tree, "<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join("%d 0 R" % k for k in kids), len(kids)))
    if extra_objs:
        extra_objs(pdf)
    root = pdf.add("<< /Type /Catalog /Pages %d 0 R >>" % tree)
    return pdf.build(root, trailer_extra)


PAGE_TEXT = [
    ["Quarterly report", "Revenue grew in every region.", "The cat sat on the mat."],
    ["Figure 1: a landscape page", "with a coloured block and a picture."],
    ["Appendix", "A4 portrait page, the last one.", "Contact: nobody@example.com"],
]


def text3():
    pages = [
        (LETTER, text_ops(PAGE_TEXT[0], 72, 700), None),
        (A4[::-1], text_ops(PAGE_TEXT[1], 60, 520) + "\n0.8 0.1 0.1 rg 60 80 300 200 re f\nq 240 0 0 180 420 120 cm /Im1 Do Q",
         (64, 48, 7)),
        (A4, text_ops(PAGE_TEXT[2], 72, 760), None),
    ]
    return doc(pages)[0]


def doc20():
    pages = []
    for i in range(20):
        lines = ["Page %d of the benchmark document" % (i + 1)] + \
                ["Line %d: the quick brown fox jumps over the lazy dog %d times." % (j, i * j) for j in range(30)]
        content = text_ops(lines, 60, 740, 11) + \
            "\n%.2f 0.3 0.6 rg 320 80 200 150 re f\nq 200 0 0 150 60 80 cm /Im1 Do Q" % ((i % 10) / 10)
        pages.append((LETTER if i % 3 else A4, content, (96, 72, i)))
    return doc(pages)[0]


def longtext():
    """Page 1 has far more text than CLIP's 77 tokens (mode=text cuts it
    into chunks), with non-ASCII letters so byte and code point offsets
    differ; page 2 is short."""
    lines = ["Line %d: the caf\xe9 na\xefve r\xe9sum\xe9 of chapter %d, where the quick brown fox jumps." % (j, j)
             for j in range(36)]
    pages = [(LETTER, text_ops(lines, 50, 750, 10), None), (A4, text_ops(["A short second page."], 72, 760), None)]
    return doc(pages)[0]


def notext():
    pages = [(LETTER, "0.2 0.4 0.8 rg 100 100 400 500 re f", None),
             (A4, "0 0 0 RG 10 w 50 50 m 500 700 l S", None)]
    return doc(pages, with_text=False)[0]


def many(n=10000):
    pdf = Pdf()
    tree = pdf.reserve()
    cs = pdf.stream(b"")
    kids = [pdf.add("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>" % (tree, cs))
            for _ in range(n)]
    pdf.set(tree, "<< /Type /Pages /Kids [%s] /Count %d >>" % (" ".join("%d 0 R" % k for k in kids), n))
    root = pdf.add("<< /Type /Catalog /Pages %d 0 R >>" % tree)
    return pdf.build(root)[0]


def huge():
    return doc([((14400, 14400), text_ops(["a page of 200 x 200 inches"], 100, 14000, 200), None)])[0]


def truncated():
    d = text3()
    return d[: len(d) // 2]


def badxref():
    d, offs = doc([(LETTER, text_ops(PAGE_TEXT[0], 72, 700), None)])
    head, _, tail = d.partition(b"xref\n")
    lines = tail.split(b"\n")
    for i in range(3, len(lines)):
        if lines[i].endswith(b" n "):
            lines[i] = b"%010d 00000 n " % (int(lines[i][:10]) + 37)
    return head + b"xref\n" + b"\n".join(lines)


def nested(depth=100000):
    def extra(pdf):
        pdf.add(b"[" * depth + b"]" * depth)
    return doc([(LETTER, text_ops(["nested"], 72, 700), None)], extra_objs=extra)[0]


def encrypted():
    # /U does not match the empty user password, so the file cannot be
    # opened without one (the content need not really be encrypted).
    ident = "<" + "11" * 16 + ">"
    enc = {}

    def extra(pdf):
        enc["n"] = pdf.add("<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -44 >>" % ("ab" * 32, "cd" * 32))
    pages = [(LETTER, text_ops(["secret"], 72, 700), None)]
    pdf = Pdf()
    # build twice: the Encrypt object number must be known for the trailer
    d, _ = doc(pages, extra_objs=extra)
    d, _ = doc(pages, extra_objs=extra, trailer_extra=" /Encrypt %d 0 R /ID [%s %s]" % (enc["n"], ident, ident))
    del pdf
    return d


def slow():
    ops = b"0 0 0 rg\n" + b"".join(b"%d %d 3 3 re f\n" % (i % 600, i % 780) for i in range(500)) * 8000
    pdf = Pdf()
    tree = pdf.reserve()
    cs = pdf.stream(ops, flate=True)
    page = pdf.add("<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R >>" % (tree, cs))
    pdf.set(tree, "<< /Type /Pages /Kids [%d 0 R] /Count 1 >>" % page)
    root = pdf.add("<< /Type /Catalog /Pages %d 0 R >>" % tree)
    return pdf.build(root)[0]


def zeropages():
    pdf = Pdf()
    tree = pdf.add("<< /Type /Pages /Kids [] /Count 0 >>")
    root = pdf.add("<< /Type /Catalog /Pages %d 0 R >>" % tree)
    return pdf.build(root)[0]


def html():
    return b"<!DOCTYPE html>\n<html><head><title>not a pdf</title></head><body>%PDF-1.4 hello</body></html>\n"


KINDS = {k: globals()[k] for k in ("text3", "doc20", "longtext", "notext", "many", "huge", "truncated", "badxref", "nested",
                                    "encrypted", "slow", "zeropages", "html")}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in KINDS:
        sys.exit("usage: mkpdf.py {%s} [OUT]" % "|".join(KINDS))
    data = KINDS[sys.argv[1]]()
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        with open(sys.argv[2], "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


if __name__ == "__main__":
    main()
