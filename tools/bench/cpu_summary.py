#!/usr/bin/env python3
"""cpu_summary.py — the compact tables of tools/bench/device_cpu.sh's
sections, from their logs (plain Python, no numpy).

  usage: cpu_summary.py A|B|B1|C LOG

Reads the lines of cpu_bench.py, clip_bench, text_bench and qwen2vl_bench:
  RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs> <min> <cpu>
  RESULT L<l>/V<v> <dtype> <case> <threads> <median ms> <runs> <min ms>   (qwen2vl_bench)
  FULL <engine or dtype> <case> <threads> <ms>
  PACK / PACKLOADED / "... (dtype) loaded in ... (pack N MB" / "text_bench: PACK dtype N MB"
  CHECK ...
A later line for the same engine, case and threads replaces an earlier one
(a part run again). Ratios < 1 mean ours is faster."""
import re
import sys

DTYPES = ("f32", "bf16", "q8", "q4")
CLIP = ("image_b1", "image_b8", "text16_b1", "text16_b32", "text77_b1", "text77_b32")
MINI = ("b1", "b32", "minilm_b1", "minilm_b32")


def parse(path):
    res, full, packs, checks, order = {}, {}, {}, {}, []
    for line in open(path, errors="replace"):
        t = line.split()
        if not t:
            continue
        try:
            if t[0] == "RESULT" and len(t) >= 8 and re.match(r"L\d+/V\d+$", t[1]):
                continue  # qwen2vl_bench's per-model line: its FULL line says it
            if t[0] == "RESULT" and len(t) >= 6:
                key = (t[1], t[2], int(t[3]))
                res[key] = float(t[4])
                if t[2] not in order:
                    order.append(t[2])
            elif t[0] == "FULL" and len(t) >= 5:
                eng = "ours-" + t[1] if t[1] in DTYPES else t[1]
                full[(eng, t[2], int(t[3]))] = float(t[4])
                if t[2] not in order:
                    order.append(t[2])
            elif t[0] == "CHECK":
                checks[" ".join(t[1:4])] = line.strip()
            elif t[0] == "PACK" and len(t) >= 5 and t[2] in DTYPES:
                packs[("qwen-header", t[2])] = float(t[3])
            elif t[0] == "PACKLOADED" and t[1] in DTYPES:
                m = re.search(r"full depth ([\d.]+) MB", line)
                if m:
                    packs.setdefault(("qwen-loaded", t[1]), float(m.group(1)))
            elif t[0] == "text_bench:" and len(t) >= 4 and t[1] == "PACK":
                packs[("minilm", t[2])] = float(t[3])
            elif t[0] == "clip_bench:":
                m = re.search(r"\((\w+)\) loaded in .*\(pack ([\d.]+) MB", line)
                if m:
                    packs[("clip", m.group(1))] = float(m.group(2))
            elif t[0] == "qwen2vl_bench:":
                m = re.search(r"qfull \((\w+), runs .* loaded in .* pack ([\d.]+) MB", line)
                if m:
                    packs[("qwen-loaded", m.group(1))] = float(m.group(2))
        except (ValueError, IndexError):
            continue
    return res, full, packs, checks, order


def fmt(v):
    if v is None:
        return "-"
    a = abs(v)
    return "%.0f" % v if a >= 100 else "%.1f" % v if a >= 10 else "%.2f" % v if a >= 1 else "%.3f" % v


def ratio(a, b):
    return "%.2f" % (a / b) if a and b else "-"


def table(head, rows):
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def engines_of(d, case):
    order = ["ours-f32", "ours-bf16", "ours-q8", "ours-q4", "ort-int8", "torch-bf16", "torch-bf16-own"]
    es = sorted({k[0] for k in d if k[1] == case}, key=lambda e: (order.index(e) if e in order else 99, e))
    return es


def section_a(res, full, order):
    ths = sorted({k[2] for k in res})
    print("## Issue 17: thread scaling, ms per item (median; text1024: one forward on the 2-layer cut, "
          "x14 for 28 layers)\n")
    rows = []
    for case in order:
        for e in engines_of(res, case):
            v = [res.get((e, case, th)) for th in ths]
            rows.append([case, e] + [fmt(x) for x in v] +
                        ["%.1fx" % (v[0] / v[-1]) if v[0] and v[-1] and len(ths) > 1 else "-"])
    table(["case", "engine"] + ["%d th" % th for th in ths] + ["%d→%d" % (ths[0], ths[-1]) if ths else "-"], rows)
    print("### ours vs peers (ratio of ms per item; < 1: ours faster)\n")
    rows = []
    for case in order:
        for th in ths:
            g = {e: res.get((e, case, th)) for e in engines_of(res, case)}
            torch = g.get("torch-bf16") or g.get("torch-bf16-own")
            rows.append([case, str(th)] + [fmt(g.get(e)) for e in ("ours-bf16", "ours-q8", "ort-int8")] +
                        [fmt(torch), ratio(g.get("ours-bf16"), torch), ratio(g.get("ours-q8"), g.get("ort-int8")),
                         ratio(g.get("ours-q8"), torch)])
    table(["case", "threads", "ours-bf16", "ours-q8", "ort-int8", "torch-bf16", "bf16/torch", "q8/ort", "q8/torch"],
          rows)


def section_b(full, order):
    ths = sorted({k[2] for k in full})
    print("## Issue 16: Ops-MM-2B shape, ms per input (full shape: measured at >= 8 threads, "
          "extrapolated from 1- and 2-layer cuts below)\n")
    rows = []
    for case in [c for c in order if any(k[1] == c for k in full)]:
        for th in ths:
            g = {e: full.get((e, case, th)) for e in engines_of(full, case)}
            torch = g.get("torch-bf16") or g.get("torch-bf16-own")
            rows.append([case, str(th)] + [fmt(g.get(e)) for e in ("ours-f32", "ours-bf16", "ours-q8")] +
                        [fmt(torch), ratio(g.get("ours-bf16"), torch), ratio(g.get("ours-q8"), torch)])
    table(["case", "threads", "ours-f32", "ours-bf16", "ours-q8", "torch-bf16", "bf16/torch", "q8/torch"], rows)


def section_c(res, full, packs, order):
    ths = sorted({k[2] for k in list(res) + list(full)})
    print("## Issue 20: pack size and ms per item per dtype (ours)\n")
    rows = []
    for model, src, cases in (("ViT-B/32 CLIP", res, [c for c in order if c in CLIP]),
                              ("MiniLM shape", res, [c for c in order if c in MINI]),
                              ("Qwen2-VL-2B", full, [c for c in order if c not in CLIP and c not in MINI])):
        for case in cases:
            for dt in DTYPES:
                e = "ours-" + dt
                v = [src.get((e, case, th)) for th in ths]
                if all(x is None for x in v):
                    continue
                q8 = [src.get(("ours-q8", case, th)) for th in ths]
                rel = [ratio(v[i], q8[i]) if dt == "q4" else "" for i in range(len(ths))]
                rows.append([model, case, dt] + [fmt(x) for x in v] + rel)
    table(["model", "case", "dtype"] + ["%d th" % th for th in ths] + ["q4/q8 %d th" % th for th in ths], rows)
    rows = []
    for label, key in (("ViT-B/32 CLIP", "clip"), ("MiniLM shape", "minilm"),
                       ("Qwen2-VL-2B loaded", "qwen-loaded"), ("Qwen2-VL-2B header estimate", "qwen-header")):
        v = [packs.get((key, dt)) for dt in DTYPES]
        if any(v):
            rows.append([label] + [fmt(x) for x in v] + [ratio(v[3], v[2])])
    print("Pack size, MB (q4/q8: size ratio; goal <= 0.55 at <= 1.2x q8's time)\n")
    table(["model"] + list(DTYPES) + ["q4/q8"], rows)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sec, path = sys.argv[1], sys.argv[2]
    res, full, packs, checks, order = parse(path)
    print()
    if sec == "A":
        section_a(res, full, order)
    elif sec in ("B", "B1"):
        section_b(full, order)
    elif sec == "C":
        section_c(res, full, packs, order)
    else:
        sys.exit("cpu_summary: unknown section %s" % sec)
    for c in checks.values():
        print("    " + c)


if __name__ == "__main__":
    main()
