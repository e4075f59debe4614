#!/usr/bin/env python3
"""cpu_bench.py — our engine beside ONNX Runtime dynamic int8 and PyTorch
bf16 on one CPU, runs alternating so that all engines see the same noise
(issues 16, 17, 20; driven by the run.sh that tools/bench/device_cpu.sh
packs). Three subcommands:

  cpu_bench.py clip MODEL_DIR ONNX_DIR WORK --ours "clip_bench MODEL_DIR WORK --serve --dtypes bf16,q8"
      the ViT-B/32-shaped CLIP folder (tools/mkclip.c) and its ONNX export
      (export_onnx.py); cases image_b8, text16_b32, text77_b1, text77_b32
  cpu_bench.py minilm MODEL_DIR ONNX_FILE WORK --ours "text_bench MODEL_DIR WORK --serve --dtypes bf16,q8"
      the all-MiniLM-L6-v2 shape (export_bert.py); cases b32, b1 (16 tokens)
  cpu_bench.py qwen WORK --models DIR[,DIR2] --ours "qwen2vl_bench {dir} --serve --dtypes bf16,q8" [--ort]
      Qwen2-VL folders (tools/mkqwen2vl.c); cases text32, text1024,
      image256, image1280. One folder: times as measured. Two cut-down
      folders (different --layers): every engine is timed on both and
      extrapolated to the folders' "_full_layers" as qwen2vl_bench.c does
      (text: linear in decoder layers; image: the decoder's share, timed as a
      text as long as the image input, linear in decoder layers, the rest
      linear in vision blocks). --ort adds ONNX Runtime int8 for text cases
      (a Qwen2 decoder written here, exported from the folder's weights).

Common options: --threads 1,2,4,8,16  --variants bf16,q8 (our dtypes)
  --cases LIST  --min-runs 3  --max-runs 15  --secs 1 (per case: rounds go
  on until both min-runs and secs are reached, or max-runs)
  --engines ours,ort,torch (which to time)

Engines: ours-<dtype> (our driver as a child process, the --serve protocol
of tools/bench/clip_bench.c: it warms a case up itself); ort-int8
(onnxruntime.quantization.quantize_dynamic, per_channel=True, QInt8, of the
f32 export; intra_op_num_threads = threads); torch-bf16 (Hugging Face
transformers' model, loaded from the same folder with dtype bfloat16,
torch.set_num_threads; where transformers is missing, the plain PyTorch
modules of export_onnx.py / export_bert.py / this file, engine
"torch-bf16-own"). Each round runs every engine once, in a rotating order,
with a 50 ms gap, after one warm-up run of the in-process engines.

Prints "RESULT <engine> <case> <threads> <ms per item> <ms per batch> <runs>
<min ms per item> <CPU ms per item>" (medians but the min; engine
"<engine>@L<layers>" for a cut-down qwen folder), "FULL <engine> <case>
<threads> <ms>" (qwen: full-shape ms per input, measured or extrapolated),
"CHECK ..." (cosines of each peer to our f32 vectors, or between peers) and
"SKIP ..." when an engine is not available. tools/bench/cpu_summary.py
makes the tables."""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import torch
except ImportError:
    torch = None

GAP = 0.05
CLIP_CASES = {"image_b1": (1, 0), "image_b8": (8, 0), "text16_b1": (1, 16), "text16_b32": (32, 16),
              "text77_b1": (1, 77), "text77_b32": (32, 77)}
MINILM_CASES = {"b1": 1, "b32": 32}
# Qwen2-VL special ids (tools/mkqwen2vl.c's config; the Qwen tokenizer)
IM_START, IM_END, EOT = 151644, 151645, 151643
VSTART, VEND, IMG_PAD = 151652, 151653, 151655
QWEN_IMAGES = {"image256": (448, 448), "image1280": (896, 1120)}
DEFAULT_INSTR = "You are a helpful assistant."


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------ engines


class Ours:
    """Our driver as a child process (--serve protocol)."""

    def __init__(self, cmd):
        self.cmd = cmd
        self.p = subprocess.Popen(shlex.split(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError("%s: no READY line (got %r)" % (cmd, line))
        self.ready = line.split()
        # qwen2vl_bench: "CASE:T" tokens the decoder reads per case
        self.T = {k: int(v) for k, v in (t.split(":", 1) for t in self.ready if ":" in t)}

    def run(self, case, th, dtype):
        self.p.stdin.write("run %s %d 1 %s\n" % (case, th, dtype))
        self.p.stdin.flush()
        t = self.p.stdout.readline().split()
        if not t or t[0] != "TIMES" or len(t) < 4:
            raise RuntimeError("%s: run %s %d %s: %r" % (self.cmd, case, th, dtype, t))
        w, c = t[3].split("/")
        return float(w), float(c)

    def vec(self, case, dtype):
        """qwen2vl_bench: our output vector for case (one thread)"""
        self.p.stdin.write("vec %s %s\n" % (case, dtype))
        self.p.stdin.flush()
        t = self.p.stdout.readline().split()
        if not t or t[0] != "VEC":
            raise RuntimeError("%s: vec %s %s: %r" % (self.cmd, case, dtype, t[:3]))
        return np.array([float(x) for x in t[2:]], np.float32)

    def quit(self):
        try:
            self.p.stdin.write("quit\n")
            self.p.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        self.p.wait()


class OursEngine:
    def __init__(self, proc, dtype, name=None):
        self.proc, self.dtype = proc, dtype
        self.name = name or "ours-" + dtype
        self.th = 1

    def set_threads(self, th):
        self.th = th

    def has(self, case):
        return True

    def warm(self, case):
        pass  # the driver warms a new case up itself

    def run(self, case):
        return self.proc.run(case, self.th, self.dtype)


class FnEngine:
    """An in-process engine: make(th) -> {case: callable}, remade per thread count."""

    def __init__(self, name, make):
        self.name, self.make, self.fns = name, make, {}

    def set_threads(self, th):
        self.fns = {}
        try:
            self.fns = self.make(th)
        except Exception as e:  # noqa: BLE001 (a peer that cannot run is reported, the others go on)
            log("SKIP %s at %d threads: %s: %s" % (self.name, th, type(e).__name__, str(e)[:300]))

    def has(self, case):
        return case in self.fns

    def warm(self, case):
        self.fns[case]()
        return None

    def run(self, case):
        f = self.fns[case]
        c0, t0 = time.process_time(), time.perf_counter()
        f()
        return (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3


def result(engine, case, th, n, runs):
    wall = [r[0] for r in runs]
    med = float(np.median(wall))
    log("RESULT %s %s %d %.3f %.3f %d %.3f %.3f" % (engine, case, th, med / n, med, len(runs), min(wall) / n,
                                                   float(np.median([r[1] for r in runs])) / n))
    return med


def alternate(a, entries, case, label, th, n):
    """entries: [(engine, result name)]; one warm-up of the in-process
    engines, then rounds of one run each (rotating order) until min-runs and
    secs, or max-runs. Returns {result name: median ms per batch}."""
    es = []
    for e, nm in entries:
        if e.has(case) and guarded(e.warm, nm, case):
            es.append((e, nm))
    if not es:
        return {}
    runs = {nm: [] for _, nm in es}
    start, k = time.perf_counter(), 0
    while es:
        for i in range(len(es)):
            e, nm = es[(i + k) % len(es)]
            time.sleep(GAP)
            r = guarded(e.run, nm, case)
            if r is None:
                runs.pop(nm)
            else:
                runs[nm].append(r)
        es = [(e, nm) for e, nm in es if nm in runs]
        k += 1
        if k >= a.max_runs or (k >= a.min_runs and time.perf_counter() - start >= a.secs):
            break
    return {nm: result(nm, label, th, n, runs[nm]) for _, nm in es}


def guarded(fn, name, case):
    """fn(case), or None after a SKIP line when it fails (True for a None result)"""
    try:
        r = fn(case)
        return True if r is None else r
    except Exception as e:  # noqa: BLE001
        log("SKIP %s %s: %s: %s" % (name, case, type(e).__name__, str(e)[:300]))
        return None


# ------------------------------------------------------------ peers


def want(a, engine):
    return engine in a.engines.split(",")


def ort_mod():
    try:
        import onnxruntime
        return onnxruntime
    except ImportError as e:
        log("SKIP ort-int8: %s" % e)
        return None


def ort_session(ort, path, th):
    so = ort.SessionOptions()
    so.intra_op_num_threads = th
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def quantize(src, dst):
    """ONNX Runtime dynamic int8 (per channel, QInt8) of src into dst; dst or None."""
    if os.path.exists(dst):
        return dst
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        t0 = time.perf_counter()
        # MatMul (and fused Attention): ORT has no ConvInteger for int8
        # weights, so the default op list (which has Conv) makes a model
        # that does not load; the one Conv here is CLIP's patch embedding
        quantize_dynamic(src, dst + ".tmp", per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"])
        os.replace(dst + ".tmp", dst)
        log("INFO quantized %s -> %s (%.0f MB) in %.1f s" % (os.path.basename(src), os.path.basename(dst),
                                                            os.path.getsize(dst) / 1e6, time.perf_counter() - t0))
        return dst
    except Exception as e:  # noqa: BLE001 (no onnx package, an op it refuses: say so, time the rest)
        log("SKIP ort-int8: quantize_dynamic(%s): %s: %s" % (os.path.basename(src), type(e).__name__, e))
        return None


def transformers_mod():
    try:
        import transformers
        return transformers
    except ImportError as e:
        log("INFO no transformers (%s): torch-bf16 runs the plain PyTorch modules of tools/bench" % e)
        return None


def hf_load(cls, path, **kw):
    try:
        return cls.from_pretrained(path, dtype=torch.bfloat16, **kw).eval()
    except TypeError:
        return cls.from_pretrained(path, torch_dtype=torch.bfloat16, **kw).eval()


def attempt(what, fn):
    """fn(), or None after a SKIP line when it fails (a peer that cannot load
    must not cost the other engines' numbers)"""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        log("SKIP %s: %s: %s" % (what, type(e).__name__, str(e)[:400]))
        return None


def torch_threads(th):
    torch.set_num_threads(th)


def cosines(got, want_):
    got, want_ = np.asarray(got, np.float64).reshape(len(want_), -1), np.asarray(want_, np.float64)
    return (got * want_).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want_, axis=1)


def check(name, what, got, want_):
    """prints the cosines of got (a list of vectors, or a function giving
    them) to want_; a failure is a line, not the end of the run"""
    try:
        if callable(got):
            got = got()
        c = cosines(got, want_() if callable(want_) else want_)
        log("CHECK %s %s worst cosine %.6f (mean %.6f, %d vectors)" % (name, what, c.min(), c.mean(), len(c)))
    except Exception as e:  # noqa: BLE001
        log("CHECK %s %s failed: %s: %s" % (name, what, type(e).__name__, str(e)[:300]))


def info_versions():
    v = ["numpy %s" % np.__version__]
    if torch is not None:
        v.append("torch %s (%d threads max)" % (torch.__version__, torch.get_num_threads()))
    for m in ("transformers", "onnxruntime"):
        try:
            v.append("%s %s" % (m, __import__(m).__version__))
        except ImportError:
            v.append("%s missing" % m)
    log("INFO " + ", ".join(v))


def run_all(a, engines, cases, per_th=None):
    """cases: [(case key, label, items)]; engines: [(engine, name)]"""
    for th in [int(x) for x in a.threads.split(",")]:
        if torch is not None:
            torch_threads(th)
        for e, _ in engines:
            e.set_threads(th)
        if per_th:
            per_th(th)
        for key, label, n in cases:
            alternate(a, engines, key, label, th, n)


# ------------------------------------------------------------ CLIP


def read_work(work, name, dtype):
    return np.fromfile(os.path.join(work, name), dtype=dtype)


def packed_check(work, name):
    """clip_bench / text_bench check texts: (list of id arrays)"""
    lens, ids = read_work(work, "check_lens.i32", np.int32), read_work(work, name, np.int32)
    out, off = [], 0
    for ln in lens:
        out.append(ids[off:off + ln].astype(np.int64))
        off += ln
    return out


def cmd_clip(a):
    cases = [c for c in a.cases.split(",") if c in CLIP_CASES] if a.cases else \
        ["image_b8", "text16_b32", "text77_b1", "text77_b32"]
    engines = []
    ours = None
    if want(a, "ours"):
        ours = Ours(a.ours)  # writes WORK before READY
        engines += [(OursEngine(ours, v), "ours-" + v) for v in a.variants.split(",") if v]
    meta = dict(line.split() for line in open(os.path.join(a.work, "meta.txt")) if line.strip())
    S, C, D = int(meta["image_size"]), int(meta["channels"]), int(meta["dim"])
    ids = {77: read_work(a.work, "ids77.i32", np.int32).astype(np.int64).reshape(-1, 77),
           16: read_work(a.work, "ids16.i32", np.int32).astype(np.int64).reshape(-1, 16)}
    px = read_work(a.work, "pixels.f32", np.float32).reshape(-1, C, S, S)
    want_img = read_work(a.work, "check_image.f32", np.float32).reshape(-1, D)
    want_txt = read_work(a.work, "check_text.f32", np.float32).reshape(-1, D)
    check_ids = packed_check(a.work, "check_ids.i32")

    ort = ort_mod() if want(a, "ort") else None
    if ort:
        tq = quantize(os.path.join(a.onnx, "text.onnx"), os.path.join(a.work, "text.int8.onnx"))
        vq = quantize(os.path.join(a.onnx, "vision.onnx"), os.path.join(a.work, "vision.int8.onnx"))
        if tq and vq:
            first = [True]

            def make_ort(th):
                ts, vs = ort_session(ort, tq, th), ort_session(ort, vq, th)
                if first[0]:
                    first[0] = False
                    check("ort-int8", "image", lambda: vs.run(None, {"pixel_values": px[:len(want_img)]})[0], want_img)
                    check("ort-int8", "text", lambda: [ts.run(None, {"input_ids": t[None]})[0][0] for t in check_ids],
                          want_txt)
                fns = {}
                for c in cases:
                    n, ln = CLIP_CASES[c]
                    if ln:
                        fns[c] = (lambda s=ts, f={"input_ids": ids[ln][:n]}: s.run(None, f))
                    else:
                        fns[c] = (lambda s=vs, f={"pixel_values": px[:n]}: s.run(None, f))
                return fns
            engines.append((FnEngine("ort-int8", make_ort), "ort-int8"))

    def torch_engine():
        tf = transformers_mod()
        name = "torch-bf16"
        if tf:
            m = hf_load(tf.CLIPModel, a.model)

            def feats(x):
                return x if torch.is_tensor(x) else x.pooler_output
            text_fn = lambda t: feats(m.get_text_features(input_ids=t))  # noqa: E731
            image_fn = lambda p: feats(m.get_image_features(pixel_values=p))  # noqa: E731
        else:
            from export_onnx import load_model
            _, tm, vm = load_model(a.model)
            text_fn, image_fn = autocast_bf16(tm), autocast_bf16(vm)
            name = "torch-bf16-own"
        tids = {k: torch.from_numpy(v) for k, v in ids.items()}
        tpx = torch.from_numpy(px).to(torch.bfloat16)
        with torch.inference_mode():
            check(name, "image", lambda: image_fn(tpx[:len(want_img)]).float().numpy(), want_img)
            check(name, "text", lambda: [text_fn(torch.from_numpy(t)[None]).float().numpy()[0] for t in check_ids],
                  want_txt)

        def make_torch(th):
            fns = {}
            for c in cases:
                n, ln = CLIP_CASES[c]
                if ln:
                    x = tids[ln][:n]
                    fns[c] = (lambda x=x: torch_call(text_fn, x))
                else:
                    x = tpx[:n]
                    fns[c] = (lambda x=x: torch_call(image_fn, x))
            return fns
        return FnEngine(name, make_torch), name

    if torch is not None and want(a, "torch"):
        r = attempt("torch-bf16", torch_engine)
        if r:
            engines.append(r)
    run_all(a, engines, [(c, c, CLIP_CASES[c][0]) for c in cases])
    if ours:
        ours.quit()


def autocast_bf16(mod):
    """the plain modules (f32 weights, f32 masks) under CPU autocast to bf16"""
    def f(*args):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return mod(*args)
    return f


def torch_call(fn, *args):
    with torch.inference_mode():
        return fn(*args)


# ------------------------------------------------------------ MiniLM shape


def cmd_minilm(a):
    cases = [c for c in a.cases.split(",") if c in MINILM_CASES] if a.cases else ["b32", "b1"]
    engines = []
    ours = None
    if want(a, "ours"):
        ours = Ours(a.ours)
        engines += [(OursEngine(ours, v), "ours-" + v) for v in a.variants.split(",") if v]
    D = int(dict(line.split() for line in open(os.path.join(a.work, "meta.txt")) if line.strip())["dim"])
    ids = read_work(a.work, "ids16.i32", np.int32).astype(np.int64).reshape(-1, 16)
    check_ids = packed_check(a.work, "check_ids.i32")
    want_out = read_work(a.work, "check_out.f32", np.float32).reshape(-1, D)

    ort = ort_mod() if want(a, "ort") else None
    if ort:
        q = quantize(a.onnx, os.path.join(a.work, "minilm.int8.onnx"))
        if q:
            first = [True]

            def make_ort(th):
                s = ort_session(ort, q, th)
                if first[0]:
                    first[0] = False
                    check("ort-int8", "text", lambda: [s.run(None, {"input_ids": t[None], "attention_mask":
                                                                    np.ones((1, len(t)), np.int64)})[0][0]
                                                       for t in check_ids], want_out)
                return {c: (lambda f={"input_ids": ids[:MINILM_CASES[c]],
                                      "attention_mask": np.ones((MINILM_CASES[c], 16), np.int64)}: s.run(None, f))
                        for c in cases}
            engines.append((FnEngine("ort-int8", make_ort), "ort-int8"))

    def torch_engine():
        tf = transformers_mod()
        name = "torch-bf16"
        if tf:
            m = hf_load(tf.BertModel, a.model, add_pooling_layer=False)

            def fwd(x, mask):
                h = m(input_ids=x, attention_mask=mask).last_hidden_state
                mf = mask.unsqueeze(-1).to(h.dtype)
                return (h * mf).sum(1) / mf.sum(1)
        else:
            from export_bert import CONFIG, Bert
            from safetensors_io import load_weights
            m = Bert(CONFIG).eval()
            missing = m.load_state_dict(load_weights(a.model), strict=False)
            log("INFO own BERT state: %s" % (missing,))
            fwd = autocast_bf16(m)
            name = "torch-bf16-own"
        with torch.inference_mode():
            check(name, "text", lambda: [fwd(torch.from_numpy(t)[None], torch.ones(1, len(t), dtype=torch.int64))
                                         .float().numpy()[0] for t in check_ids], want_out)
        tids = torch.from_numpy(ids)

        def make_torch(th):
            return {c: (lambda x=tids[:MINILM_CASES[c]], mk=torch.ones(MINILM_CASES[c], 16, dtype=torch.int64):
                        torch_call(fwd, x, mk)) for c in cases}
        return FnEngine(name, make_torch), name

    if torch is not None and want(a, "torch"):
        r = attempt("torch-bf16", torch_engine)
        if r:
            engines.append(r)
    run_all(a, engines, [(c, "minilm_" + c, MINILM_CASES[c]) for c in cases])
    if ours:
        ours.quit()


# ------------------------------------------------------------ Qwen2-VL


def qwen_config(d):
    with open(os.path.join(d, "config.json")) as f:
        return json.load(f)


class QwenDecoder(torch.nn.Module if torch is not None else object):
    """The Qwen2 decoder of a Qwen2-VL folder in plain PyTorch (RMSNorm, GQA
    with q/k/v bias, rotary positions, SwiGLU, causal attention), for the
    ONNX export: x (1, T, hidden) embedded tokens, cos/sin (T, head_dim),
    mask (T, T) additive -> the last token's final hidden state (1, hidden).
    For a text, M-RoPE with the same position on its three axes is this
    1-D rotary embedding."""

    def __init__(self, w, cfg):
        super().__init__()
        self.H, self.nh, self.nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.hd, self.eps = self.H // self.nh, cfg.get("rms_norm_eps", 1e-6)
        P = torch.nn.Parameter
        layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            layer = torch.nn.ParameterDict({k.replace(".", "_"): P(w[p + k], requires_grad=False) for k in (
                "input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
                "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")})
            layers.append(layer)
        self.layers = torch.nn.ModuleList(layers)
        self.norm = P(w["model.norm.weight"], requires_grad=False)

    def rms(self, x, wt):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * wt

    def rope(self, x, cos, sin):
        h = self.hd // 2
        return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin

    def forward(self, x, cos, sin, mask):
        F = torch.nn.functional
        b, t = x.shape[0], x.shape[1]
        rep = self.nh // self.nkv
        for L in self.layers:
            h = self.rms(x, L["input_layernorm_weight"])
            q = F.linear(h, L["self_attn_q_proj_weight"], L["self_attn_q_proj_bias"])
            k = F.linear(h, L["self_attn_k_proj_weight"], L["self_attn_k_proj_bias"])
            v = F.linear(h, L["self_attn_v_proj_weight"], L["self_attn_v_proj_bias"])
            q = self.rope(q.reshape(b, t, self.nh, self.hd).transpose(1, 2), cos, sin)
            k = self.rope(k.reshape(b, t, self.nkv, self.hd).transpose(1, 2), cos, sin)
            v = v.reshape(b, t, self.nkv, self.hd).transpose(1, 2)
            k = k[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            v = v[:, :, None].expand(b, self.nkv, rep, t, self.hd).reshape(b, self.nh, t, self.hd)
            s = torch.matmul(q, k.transpose(2, 3)) * (self.hd ** -0.5) + mask
            o = torch.matmul(torch.softmax(s.float(), dim=-1).to(v.dtype), v)
            x = x + F.linear(o.transpose(1, 2).reshape(b, t, self.H), L["self_attn_o_proj_weight"])
            h = self.rms(x, L["post_attention_layernorm_weight"])
            g = F.linear(h, L["mlp_gate_proj_weight"])
            x = x + F.linear(F.silu(g) * F.linear(h, L["mlp_up_proj_weight"]), L["mlp_down_proj_weight"])
        return self.rms(x[:, -1], self.norm)


def rope_inputs(T, hd, theta):
    inv = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    f = np.outer(np.arange(T, dtype=np.float64), inv)
    emb = np.concatenate([f, f], axis=1)
    mask = np.triu(np.full((T, T), np.finfo(np.float32).min, np.float32), 1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32), mask


_QIDS = []


def qwen_text_ids(T):
    """qwen2vl_bench's texts: the first T ids of its xorshift64 stream"""
    if len(_QIDS) < T:
        s, m = 0x452821e638d01377, (1 << 64) - 1
        _QIDS.clear()
        for _ in range(max(T, 2048)):
            s ^= (s << 13) & m
            s ^= s >> 7
            s ^= (s << 17) & m
            _QIDS.append((s >> 32) % EOT)
    return np.array(_QIDS[:T], np.int64)


def qwen_image_input(d, cfg, vt, h, w, tf):
    """Ops-MM-embedding-v1's prompt for one image and no text (the default
    instruction), the image pad expanded to its vt tokens; ids and the
    image's pixel_values rows (grid t=1, h/14, w/14; uniform [-2, 2))."""
    ids = None
    if tf:
        try:
            tok = tf.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
            s = ("<|im_start|>system\n%s<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
                 "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>" % DEFAULT_INSTR)
            ids = list(tok(s, add_special_tokens=False)["input_ids"])
            assert ids.count(IMG_PAD) == 1, ids
        except Exception as e:  # noqa: BLE001
            log("INFO tokenizer: %s: %s (using a prompt of filler ids)" % (type(e).__name__, e))
            ids = None
    if ids is None:
        ids = [IM_START] + [9] * 18 + [VSTART, IMG_PAD, VEND] + [IM_END, 198, IM_START, 9, 198, EOT]
    i = ids.index(IMG_PAD)
    ids = ids[:i] + [IMG_PAD] * vt + ids[i + 1:]
    g = [1, h // 14, w // 14]
    assert g[1] * g[2] == 4 * vt
    px = np.random.default_rng(vt).uniform(-2, 2, size=(g[1] * g[2], 3 * 2 * 14 * 14)).astype(np.float32)
    return np.array(ids, np.int64), px, g


class QwenTorch:
    """torch-bf16 on one Qwen2-VL folder: transformers' Qwen2VLForConditionalGeneration
    (its .model: no LM head), the last token's final hidden state."""

    def __init__(self, d, cfg, tf, ours_T):
        self.cases, self.T = {}, {}
        self.name = "torch-bf16"
        if tf:
            self.m = hf_load(tf.Qwen2VLForConditionalGeneration, d)
            self.mm_kw = True
        else:
            from safetensors_io import load_weights
            self.m = QwenDecoder(load_weights(d), cfg).to(torch.bfloat16).eval()
            self.name = "torch-bf16-own"
        self.tf, self.d, self.cfg = tf, d, cfg
        for case in ("text32", "text1024"):
            self.text_case(case, int(case[4:]))
        for case, T in ours_T.items():
            if case.startswith("llm-"):
                self.text_case(case, T)
        if tf:
            for case, (h, w) in QWEN_IMAGES.items():
                ids, px, g = qwen_image_input(d, cfg, (h // 28) * (w // 28), h, w, tf)
                x = torch.from_numpy(ids)[None]
                kw = dict(input_ids=x, attention_mask=torch.ones_like(x),
                          pixel_values=torch.from_numpy(px).to(torch.bfloat16), image_grid_thw=torch.tensor([g]))
                if self.mm_kw:
                    kw["mm_token_type_ids"] = (x == IMG_PAD).long()
                self.cases[case], self.T[case] = kw, len(ids)

    def text_case(self, case, T):
        x = torch.from_numpy(qwen_text_ids(T))[None]
        if self.tf:
            self.cases[case] = dict(input_ids=x, attention_mask=torch.ones_like(x))
        else:
            emb = self.emb_table()
            cos, sin, mask = rope_inputs(T, self.m.hd, float(self.cfg.get("rope_theta", 1e6)))
            bf = torch.bfloat16
            self.cases[case] = (emb[x].to(bf), torch.from_numpy(cos).to(bf), torch.from_numpy(sin).to(bf),
                                torch.from_numpy(mask).to(bf))
        self.T[case] = T

    def emb_table(self):
        if not hasattr(self, "_emb"):
            from safetensors_io import load_weights
            self._emb = load_weights(self.d)["model.embed_tokens.weight"]
        return self._emb

    def forward(self, case):
        with torch.inference_mode():
            kw = self.cases[case]
            if not self.tf:
                return self.m(*kw).float()[0]
            try:
                h = self.m.model(use_cache=False, **kw).last_hidden_state[0, -1]
            except TypeError:
                if not self.mm_kw or "mm_token_type_ids" not in kw:
                    raise
                self.mm_kw = False  # a transformers that does not take it
                for c in self.cases.values():
                    c.pop("mm_token_type_ids", None)
                h = self.m.model(use_cache=False, **kw).last_hidden_state[0, -1]
            return h.float()


class QwenOrt:
    """ort-int8 on one Qwen2-VL folder's decoder (text cases only)."""

    def __init__(self, ort, d, cfg, work, ours_T):
        from safetensors_io import load_weights
        tag = os.path.basename(os.path.normpath(d))
        f32, q = os.path.join(work, tag + ".decoder.onnx"), os.path.join(work, tag + ".decoder.int8.onnx")
        w = load_weights(d)
        self.emb = w["model.embed_tokens.weight"].numpy()
        self.hd = cfg["hidden_size"] // cfg["num_attention_heads"]
        self.theta = float(cfg.get("rope_theta", 1e6))
        self.dec = QwenDecoder(w, cfg).eval()
        del w
        if not os.path.exists(q) and not os.path.exists(f32):
            t0 = time.perf_counter()
            cos, sin, mask = rope_inputs(8, self.hd, self.theta)
            x = torch.from_numpy(self.emb[qwen_text_ids(8)][None])
            kw = {"dynamo": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
            with torch.no_grad():
                torch.onnx.export(self.dec, (x, torch.from_numpy(cos), torch.from_numpy(sin), torch.from_numpy(mask)),
                                  f32 + ".tmp", input_names=["x", "cos", "sin", "mask"], output_names=["h"],
                                  dynamic_axes={"x": {1: "seq"}, "cos": {0: "seq"}, "sin": {0: "seq"},
                                                "mask": {0: "seq", 1: "seq"}},
                                  opset_version=17, do_constant_folding=True, **kw)
            os.replace(f32 + ".tmp", f32)
            log("INFO exported %s (%.0f MB) in %.1f s" % (f32, os.path.getsize(f32) / 1e6, time.perf_counter() - t0))
        self.path = quantize(f32, q)
        self.ort, self.feeds = ort, {}
        for case in ("text32", "text1024"):
            self.text_case(case, int(case[4:]))
        for case, T in ours_T.items():
            if case.startswith("llm-"):
                self.text_case(case, T)

    def text_case(self, case, T):
        cos, sin, mask = rope_inputs(T, self.hd, self.theta)
        self.feeds[case] = {"x": self.emb[qwen_text_ids(T)][None], "cos": cos, "sin": sin, "mask": mask}

    def own(self, case):
        """the f32 PyTorch decoder on a case (the export's reference)"""
        f = self.feeds[case]
        with torch.inference_mode():
            return self.dec(*(torch.from_numpy(f[k]) for k in ("x", "cos", "sin", "mask"))).numpy()


def extrapolate(a, ms, cfgs, full, engine, case, th):
    """FULL ms of engine on case from the two cut-down folders' medians ms[(engine, model index, case)]"""
    L = [c["num_hidden_layers"] for c in cfgs]
    V = [c["vision_config"]["depth"] for c in cfgs]
    Lf, Vf = full

    def lin(x0, y0, x1, y1, x):
        return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    t = [ms.get((engine, i, case)) for i in (0, 1)]
    if None in t:
        return None
    if case in QWEN_IMAGES:
        lt = [ms.get((engine, i, "llm-" + case)) for i in (0, 1)]
        if None in lt:
            return None
        llm = lin(L[0], lt[0], L[1], lt[1], Lf)
        vit = lin(V[0], t[0] - lt[0], V[1], t[1] - lt[1], Vf)
        log("FULLPART %s %s %d decoder %.1f vision %.1f" % (engine, case, th, llm, vit))
        return llm + vit
    return lin(L[0], t[0], L[1], t[1], Lf)


def cmd_qwen(a):
    dirs = [d for d in a.models.split(",") if d]
    cfgs = [qwen_config(d) for d in dirs]
    extrap = len(dirs) == 2
    fl = cfgs[0].get("_full_layers", {})
    full = (fl.get("text", cfgs[0]["num_hidden_layers"]), fl.get("vision", cfgs[0]["vision_config"]["depth"]))
    tags = ["L%d" % c["num_hidden_layers"] for c in cfgs]
    if extrap and tags[0] == tags[1]:
        raise SystemExit("cpu_bench: the two folders need different --layers")
    cases = [c for c in (a.cases or "text32,image256,image1280").split(",") if c]
    timed = []  # (key, label)
    for c in cases:
        timed.append(c)
        if extrap and c in QWEN_IMAGES:
            timed.append("llm-" + c)
    oursp, engines = [], []   # engines: (engine, result name, model index, base name)
    for i, d in enumerate(dirs):
        sfx = "@" + tags[i] if extrap else ""
        T, p = {}, None
        if want(a, "ours"):
            p = Ours(a.ours.replace("{dir}", d))
            oursp.append(p)
            T = p.T
            log("INFO ours %s: %s" % (d, " ".join(p.ready[1:])))
            for v in [v for v in a.variants.split(",") if v]:
                engines.append((OursEngine(p, v), "ours-" + v + sfx, i, "ours-" + v))
        qt = None
        if torch is not None and want(a, "torch"):
            tf = transformers_mod()
            t0 = time.perf_counter()
            qt = attempt("torch-bf16 " + d, lambda: QwenTorch(d, cfgs[i], tf, T))
        if qt:
            log("INFO %s %s loaded in %.1f s; tokens per case: %s" % (qt.name, d, time.perf_counter() - t0,
                                                                      " ".join("%s:%d" % kv for kv in qt.T.items())))
            if p:  # the same weights and ids: our vector vs transformers'
                v = [v for v in a.variants.split(",") if v][0]
                check("ours-%s-vs-%s" % (v, qt.name), "text32 " + tags[i], lambda: p.vec("text32", v)[None],
                      lambda: qt.forward("text32").numpy()[None])
            e = FnEngine(qt.name, lambda th, qt=qt: {c: (lambda c=c: qt.forward(c)) for c in qt.cases})
            engines.append((e, qt.name + sfx, i, qt.name))
        if want(a, "ort"):
            ort = ort_mod()
            qo = attempt("ort-int8 " + d, lambda: QwenOrt(ort, d, cfgs[i], a.work, T)) \
                if ort and torch is not None else None
            if qo and qo.path:
                if qt:  # the decoder written here (f32) vs transformers' (bf16), same weights
                    check("ort-export-f32-vs-" + qt.name, "text32 " + tags[i], lambda: qo.own("text32"),
                          lambda: qt.forward("text32").numpy()[None])
                if p:
                    v = [v for v in a.variants.split(",") if v][0]
                    check("ort-export-f32-vs-ours-" + v, "text32 " + tags[i], lambda: qo.own("text32"),
                          lambda: p.vec("text32", v)[None])
                first = [True]

                def make_ort(th, qo=qo, tag=tags[i], first=first):
                    s = ort_session(qo.ort, qo.path, th)
                    if first[0]:
                        first[0] = False
                        check("ort-int8-vs-f32-export", "text32 " + tag, lambda: s.run(None, qo.feeds["text32"])[0],
                              lambda: qo.own("text32"))
                    return {c: (lambda f=f: s.run(None, f)) for c, f in qo.feeds.items()}
                engines.append((FnEngine("ort-int8", make_ort), "ort-int8" + sfx, i, "ort-int8"))
    ms = {}
    for th in [int(x) for x in a.threads.split(",")]:
        if torch is not None:
            torch_threads(th)
        for e, _, _, _ in engines:
            e.set_threads(th)
        for key in timed:
            med = alternate(a, [(e, nm) for e, nm, _, _ in engines], key, key, th, 1)
            for e, nm, i, base in engines:
                if nm in med:
                    ms[(base, i, key)] = med[nm]
        for c in cases:
            for base in dict.fromkeys(b for _, _, _, b in engines):
                v = extrapolate(a, ms, cfgs, full, base, c, th) if extrap else ms.get((base, 0, c))
                if v is not None:
                    log("FULL %s %s %d %.1f%s" % (base, c, th, v, "" if extrap or tags[0] == "L%d" % full[0]
                                                  else " (measured on %s of %d layers)" % (tags[0], full[0])))
    for p in oursp:
        p.quit()


# ------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cmd", choices=["clip", "minilm", "qwen"])
    ap.add_argument("paths", nargs="*", help="clip: MODEL_DIR ONNX_DIR WORK; minilm: MODEL_DIR ONNX_FILE WORK; "
                                             "qwen: WORK")
    ap.add_argument("--ours", default="")
    ap.add_argument("--variants", default="bf16,q8")
    ap.add_argument("--models", default="")
    ap.add_argument("--threads", default="1,2,4,8,16")
    ap.add_argument("--cases", default="")
    ap.add_argument("--engines", default="ours,ort,torch")
    ap.add_argument("--min-runs", type=int, default=3)
    ap.add_argument("--max-runs", type=int, default=15)
    ap.add_argument("--secs", type=float, default=1.0)
    a = ap.parse_args()
    if not a.ours:
        a.engines = ",".join(e for e in a.engines.split(",") if e != "ours")
    if torch is not None:
        torch.set_grad_enabled(False)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    info_versions()
    if a.cmd in ("clip", "minilm"):
        if len(a.paths) != 3:
            ap.error("%s takes MODEL_DIR ONNX WORK" % a.cmd)
        a.model, a.onnx, a.work = a.paths
        (cmd_clip if a.cmd == "clip" else cmd_minilm)(a)
    else:
        if len(a.paths) != 1 or not a.models:
            ap.error("qwen takes WORK and --models DIR[,DIR2]")
        a.work = a.paths[0]
        os.makedirs(a.work, exist_ok=True)
        cmd_qwen(a)


if __name__ == "__main__":
    main()
