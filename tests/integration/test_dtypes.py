"""Per-model dtypes through nginx and the master: the same CLIP and BERT
fixtures served in f32, bf16, q8 and auto side by side (each packed once by
the master, shared by the workers), against the Hugging Face f32
references; and the CPU fallback forced with MMEMBED_CPU=avx2, where the
bf16/q8 models must run (and say they run) f32."""
import json
import os
import subprocess
import tempfile

from harness import BIN, ROOT, Server, cpuinfo_isa, cpuinfo_native
from test_embed import FX, TINY, cos, img, load, multipart

BERT = os.path.join(ROOT, "tests", "fixtures", "bert", "bert-tiny")
BOUND = {"f32": 0.99999, "bf16": 0.999, "q8": 0.995, "q4": 0.99}


def models():
    m = [{"name": f"clip-{d}", "path": TINY, "dtype": d} for d in ("f32", "bf16", "q8", "auto")]
    m[0]["default"] = True
    m += [{"name": f"bert-{d}", "path": BERT, "dtype": d} for d in ("bf16", "q8")]
    return m


def embed_all(s, model, texts, files):
    t = s.post_json("/embed/text", {"texts": texts, "model": model, "normalize": False, "cache": False})
    assert t.status == 200, t
    body, ct = multipart({"model": model, "cache": "false"}, files)
    i = s.request("POST", "/embed/image", body=body, headers={"Content-Type": ct})
    assert i.status == 200, i
    return [x["embedding"] for x in t.json()["data"]], [x["embedding"] for x in i.json()["data"]]


def test_dtypes_served_side_by_side():
    tref = [r for r in load("text_emb.json") if r["text"]][:24]
    iref = load("image_emb.json")
    bref = [r for r in json.load(open(os.path.join(ROOT, "tests", "fixtures", "bert", "bert_ref.json"))) if r["text"]]
    files = [("image", x["file"], img(x["file"]), "application/octet-stream") for x in iref]
    with Server(workers=2, models=models()) as s:
        info = {m["name"]: m for m in s.get("/info").json()["models"]}
        # what should run comes from /proc/cpuinfo, not from the server's own CPU report
        assert info["clip-f32"]["cpu"] == cpuinfo_isa(), (info["clip-f32"]["cpu"], cpuinfo_isa())
        native = cpuinfo_native("bf16")
        for d in ("bf16", "q8"):
            assert info[f"clip-{d}"]["dtype"] == (d if cpuinfo_native(d) else "f32"), info[f"clip-{d}"]
            assert info[f"clip-{d}"]["dtype_requested"] == d and info[f"clip-{d}"]["dtype_reason"]
        assert info["clip-auto"]["dtype"] == ("bf16" if native else "f32"), info["clip-auto"]
        assert info["clip-auto"]["dtype_reason"].startswith("auto:"), info["clip-auto"]
        # packs: bf16 and q8 are smaller than f32 (dense layers in 2 and 1 bytes per weight)
        if native and cpuinfo_native("q8"):
            assert info["clip-q8"]["weight_bytes"] < info["clip-bf16"]["weight_bytes"] < info["clip-f32"]["weight_bytes"]
        texts = [r["text"] for r in tref]
        for d in ("f32", "bf16", "q8", "auto"):
            tv, iv = embed_all(s, f"clip-{d}", texts, files)
            b = BOUND[info[f"clip-{d}"]["dtype"]]
            tw = min(cos(a, r["embedding"]) for a, r in zip(tv, tref))
            iw = min(cos(a, r["embedding"]) for a, r in zip(iv, iref))
            # images end to end (our decode) vs HF from PIL pixels: PIL-identical preprocessing,
            # so the same bound as text (0.99999 at f32)
            assert tw >= b and iw >= b, (d, tw, iw)
            print(f"    clip-{d} ({info[f'clip-{d}']['dtype']}): worst cosine to HF text {tw:.6f}, image {iw:.6f}")
        for d in ("bf16", "q8"):
            r = s.post_json("/embed/text", {"texts": [x["text"] for x in bref], "model": f"bert-{d}",
                                             "normalize": False, "cache": False})
            assert r.status == 200, r
            w = min(cos(a["embedding"], x["mean"]) for a, x in zip(r.json()["data"], bref))
            assert w >= BOUND[info[f"bert-{d}"]["dtype"]], (d, w)
            print(f"    bert-{d}: worst cosine to HF {w:.6f}")
    # unknown dtype: refused by check-config
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write('models = ({ name = "x"; path = "%s"; dtype = "f16"; });\n' % TINY)
        f.flush()
        p = subprocess.run([BIN, "check-config", "-c", f.name], capture_output=True, text=True)
        assert p.returncode != 0 and "dtype 'f16' is not supported" in p.stdout + p.stderr, p


def test_forced_cpu_fallback():
    """MMEMBED_CPU=avx2: no AVX512-BF16 / VNNI as far as mmembed and oneDNN know."""
    tref = [r for r in load("text_emb.json") if r["text"]][:16]
    with Server(workers=1, models=models(), env={"MMEMBED_CPU": "avx2"}) as s:
        info = {m["name"]: m for m in s.get("/info").json()["models"]}
        assert info["clip-f32"]["cpu"] == "avx2", info["clip-f32"]
        for name in ("clip-bf16", "clip-q8", "clip-auto", "bert-bf16", "bert-q8"):
            assert info[name]["dtype"] == "f32", info[name]
            assert "MMEMBED_CPU" in info[name]["dtype_reason"], info[name]
        texts = [r["text"] for r in tref]
        base = s.post_json("/embed/text", {"texts": texts, "model": "clip-f32", "cache": False}).json()["data"]
        for name in ("clip-bf16", "clip-q8"):
            got = s.post_json("/embed/text", {"texts": texts, "model": name, "cache": False}).json()["data"]
            assert max(abs(x - y) for a, b in zip(got, base) for x, y in zip(a["embedding"], b["embedding"])) < 1e-6
        worst = min(cos(a["embedding"], r["embedding"]) for a, r in zip(base, tref))
        assert worst >= 0.99999, worst
        print(f"    forced avx2: bf16/q8 models run f32; worst cosine to HF {worst:.7f}")


def test_forced_cpu_avx512():
    """MMEMBED_CPU=avx512: AVX-512 kernels without VNNI/BF16, so bf16 and q8 fall back to f32."""
    env = {"MMEMBED_CPU": "avx512"}
    tref = [r for r in load("text_emb.json") if r["text"]][:16]
    with Server(workers=1, models=models(), env=env) as s:
        info = {m["name"]: m for m in s.get("/info").json()["models"]}
        assert info["clip-f32"]["cpu"] == cpuinfo_isa(env), (info["clip-f32"], cpuinfo_isa(env))
        for name in ("clip-bf16", "clip-q8", "clip-auto", "bert-bf16", "bert-q8"):
            want = "f32"
            if name.endswith(("bf16", "q8")) and cpuinfo_native(name.split("-")[1], env):
                want = name.split("-")[1]
            assert info[name]["dtype"] == want, info[name]
            if want == "f32":
                assert "MMEMBED_CPU" in info[name]["dtype_reason"], info[name]
        texts = [r["text"] for r in tref]
        base = s.post_json("/embed/text", {"texts": texts, "model": "clip-f32", "cache": False}).json()["data"]
        worst = min(cos(a["embedding"], r["embedding"]) for a, r in zip(base, tref))
        assert worst >= 0.99999, worst
        print(f"    forced avx512 ({info['clip-f32']['cpu']}): worst cosine to HF {worst:.7f}")


def test_pack_cache_reused_across_restarts():
    """pack_cache: the first master writes each model's converted pack, the next one maps it
    (same vectors, bit for bit); a changed checkpoint gets a new cache file."""
    import shutil
    texts = [r["text"] for r in load("text_emb.json") if r["text"]][:8]
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        clip = os.path.join(d, "clip-tiny")
        shutil.copytree(TINY, clip)
        cache = os.path.join(d, "packs")
        models = [{"name": "clip", "path": clip, "dtype": "bf16", "default": True},
                  {"name": "bert", "path": BERT, "dtype": "q8"}]
        runs = []
        for _ in range(2):
            with Server(workers=2, models=models, extra={"pack_cache": f'"{cache}"'}) as s:
                info = {m["name"]: m for m in s.get("/info").json()["models"]}
                v = [s.post_json("/embed/text", {"texts": texts, "model": m, "cache": False}).json()["data"]
                     for m in ("clip", "bert")]
                runs.append((info, v))
        assert [runs[0][0][m]["pack_cache"] for m in ("clip", "bert")] == ["stored", "stored"], runs[0][0]
        assert [runs[1][0][m]["pack_cache"] for m in ("clip", "bert")] == ["mapped", "mapped"], runs[1][0]
        assert runs[0][1] == runs[1][1]                  # identical vectors from the mapped packs
        files = sorted(os.listdir(cache))
        assert len(files) == 2 and all(f.endswith(".pack") for f in files), files
        os.utime(os.path.join(clip, "model.safetensors"))   # "changed" checkpoint: a new key
        with Server(workers=1, models=models, extra={"pack_cache": f'"{cache}"'}) as s:
            info = {m["name"]: m for m in s.get("/info").json()["models"]}
            assert info["clip"]["pack_cache"] == "stored" and info["bert"]["pack_cache"] == "mapped", info
        assert len(os.listdir(cache)) == 2                  # the superseded clip pack was removed
        assert not os.path.exists(os.path.join(cache, [f for f in files if f.startswith("clip-tiny")][0]))
        print(f"    pack cache: clip bf16 prepared in {runs[0][0]['clip']['load_ms']:.0f} ms, "
              f"mapped in {runs[1][0]['clip']['load_ms']:.0f} ms")


def test_q4_and_memory_aware_auto():
    """q4 served beside f32 (CLIP and BERT), and auto following the memory that
    MMEMBED_MEM_AVAILABLE pretends: plenty -> the best native dtype; room for
    the q4 pack only -> q4, with the reason in /info; not even that -> the
    master refuses to start and names the sizes."""
    tref = [r for r in load("text_emb.json") if r["text"]][:24]
    iref = load("image_emb.json")
    bref = [r for r in json.load(open(os.path.join(ROOT, "tests", "fixtures", "bert", "bert_ref.json"))) if r["text"]]
    files = [("image", x["file"], img(x["file"]), "application/octet-stream") for x in iref]
    ms = [{"name": "clip-f32", "path": TINY, "dtype": "f32", "default": True},
          {"name": "clip-q4", "path": TINY, "dtype": "q4"},
          {"name": "clip-auto", "path": TINY, "dtype": "auto"},
          {"name": "bert-q4", "path": BERT, "dtype": "q4"}]
    with Server(workers=1, models=ms, env={"MMEMBED_MEM_AVAILABLE": "64G"}) as s:
        info = {m["name"]: m for m in s.get("/info").json()["models"]}
        assert info["clip-q4"]["dtype"] == "q4" and info["bert-q4"]["dtype"] == "q4", info
        assert info["clip-auto"]["dtype"] == ("bf16" if cpuinfo_native("bf16") else "f32"), info["clip-auto"]
        assert "fit" in info["clip-auto"]["dtype_reason"], info["clip-auto"]
        assert info["clip-q4"]["weight_bytes"] < info["clip-f32"]["weight_bytes"], info
        tv, iv = embed_all(s, "clip-q4", [r["text"] for r in tref], files)
        tw = min(cos(a, r["embedding"]) for a, r in zip(tv, tref))
        iw = min(cos(a, r["embedding"]) for a, r in zip(iv, iref))
        assert tw >= BOUND["q4"] and iw >= BOUND["q4"], (tw, iw)
        r = s.post_json("/embed/text", {"texts": [x["text"] for x in bref], "model": "bert-q4",
                                         "normalize": False, "cache": False})
        assert r.status == 200, r
        bw = min(cos(a["embedding"], x["mean"]) for a, x in zip(r.json()["data"], bref))
        assert bw >= BOUND["q4"], bw
        print(f"    clip-q4: worst cosine to HF text {tw:.6f}, image {iw:.6f}; bert-q4 {bw:.6f}")
    # clip-tiny's estimated packs: bf16 6939456 bytes, q8 6683072, q4 1971008: 13180000 available at share 0.5 fits q4 only
    with Server(workers=1, models=[{"name": "clip-auto", "path": TINY, "dtype": "auto", "default": True}],
                env={"MMEMBED_MEM_AVAILABLE": "13180000"}) as s:
        m = s.get("/info").json()["models"][0]
        assert m["dtype"] == "q4" and "over the budget" in m["dtype_reason"], m
        print(f"    auto with 12.6 MiB available: {m['dtype']}: {m['dtype_reason']}")
    s = Server(workers=1, models=[{"name": "clip-auto", "path": TINY, "dtype": "auto", "default": True}],
               env={"MMEMBED_MEM_AVAILABLE": "1M"})
    try:
        s.start()
        raise AssertionError("started with 1 MiB available")
    except RuntimeError as e:
        assert "do not fit" in str(e) and "MiB" in str(e), e
        print("    1 MiB available: refused:", str(e).split("do not fit")[1][:160])
    finally:
        s.stop()
