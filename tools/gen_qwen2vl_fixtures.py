#!/usr/bin/env python3
"""Reference fixtures for the Qwen2-VL embedder (Ops-MM-embedding-v1 style),
made with Hugging Face transformers (run on the device machine, one call).

Usage: gen_qwen2vl_fixtures.py TOKENIZER_DIR IMAGES_DIR... OUTDIR
  TOKENIZER_DIR  the Qwen tokenizer (tokenizer.json; special tokens at the
                 Qwen2-VL ids)
  IMAGES_DIR     folders of input images (every .png/.jpg/.gif/.webp in them)
Output (OUTDIR):
  qwen2vl-tiny/      random-weight Qwen2VLForConditionalGeneration, bf16,
                     Hub key names (model.layers.*, visual.*), a Hub-style
                     flat config.json (rope_scaling mrope), preprocessor
                     config in transformers 5's form (size.shortest_edge /
                     longest_edge)
  qwen2vl-tiny-v5/   the same weights under transformers 5's internal names
                     (model.language_model.*, model.visual.*), the config.json
                     transformers 5 writes, preprocessor config in the legacy
                     form (min_pixels / max_pixels)
  images/            the input images
  pixels.f16         every image's pixel_values (rows of 1176), f16, back to back
  ref.json           {"images": {name: {grid_thw, offset, rows, sum, abs_sum, wsum, first}},
                      "cases": [{name, instruction, text, images, ids, vec}],
                      "checks": {...}}  vec: last token's final hidden state,
                      L2-normalized (f32 model), as Ops-MM-embedding-v1 does
  meta.json          versions and cross-checks
Tiny widths keep it fast; rows of embed_tokens that no fixture reads are zero
so the bf16 table (the whole vocabulary must exist: the special ids are
above 151643) compresses to almost nothing in git.
"""
import json
import os
import shutil
import sys
import traceback

import numpy as np
import torch
import transformers
from PIL import Image

SEED = 1616
VOCAB = 151936
IM_START, IM_END, EOT = 151644, 151645, 151643
VSTART, VEND, IMG_PAD, VID_PAD = 151652, 151653, 151655, 151656
MIN_PIXELS = 28 * 28 * 4      # 56 x 56: at least 4 visual tokens
MAX_PIXELS = 28 * 28 * 20     # at most 20 visual tokens per image
DEFAULT_INSTR = "You are a helpful assistant."
OTHER_INSTR = "Represent the user's input for retrieval."
MROPE = [2, 3, 3]             # sums to head_dim / 2 = 8

TEXT_CFG = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=True,
                bos_token_id=EOT, eos_token_id=IM_END)
ROPE_THETA = 1000000.0
VISION_CFG = dict(depth=2, embed_dim=32, hidden_size=32, hidden_act="quick_gelu", mlp_ratio=2, num_heads=2,
                  in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)


def log(*a):
    print(*a, flush=True)


def prompt(text, n_images, instruction):
    """Ops-MM-embedding-v1's prompt, built by hand (not the chat template)."""
    s = f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n"
    s += "<|vision_start|><|image_pad|><|vision_end|>" * n_images
    return s + f"{text}<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"


def expand(ids, grids):
    """Each <|image_pad|> becomes t*h*w/4 of them, in order (the processor's job)."""
    out, k = [], 0
    for i in ids:
        if i == IMG_PAD:
            t, h, w = grids[k]
            out += [IMG_PAD] * (t * h * w // 4)
            k += 1
        else:
            out.append(i)
    assert k == len(grids), (k, len(grids))
    return out


def make_config():
    from transformers import Qwen2VLConfig
    forms = [{"rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE}},
             {"rope_theta": ROPE_THETA, "rope_scaling": {"type": "mrope", "mrope_section": MROPE}}]
    for f in forms:
        tc = dict(TEXT_CFG, **f)
        cfg = Qwen2VLConfig(text_config=tc, vision_config=dict(VISION_CFG), image_token_id=IMG_PAD,
                            video_token_id=VID_PAD, vision_start_token_id=VSTART, vision_end_token_id=VEND,
                            tie_word_embeddings=True)
        rp = getattr(cfg.text_config, "rope_parameters", None) or getattr(cfg.text_config, "rope_scaling", None)
        log("rope config", rp)
        if rp and list(rp.get("mrope_section", [])) == MROPE and float(rp.get("rope_theta", ROPE_THETA)) == ROPE_THETA:
            return cfg
    raise SystemExit("could not make a config with mrope_section %s" % MROPE)


def hub_config():
    """A flat config.json like the Hub's Qwen2-VL / Ops-MM ones (transformers 4 era)."""
    c = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl", **TEXT_CFG,
         "rope_theta": ROPE_THETA, "rope_scaling": {"type": "mrope", "mrope_section": MROPE},
         "image_token_id": IMG_PAD, "video_token_id": VID_PAD, "vision_start_token_id": VSTART,
         "vision_end_token_id": VEND, "vision_token_id": 151654, "torch_dtype": "bfloat16",
         "attention_dropout": 0.0, "use_sliding_window": False, "sliding_window": 32768,
         "max_window_layers": 2, "initializer_range": 0.02, "use_cache": True}
    v = dict(VISION_CFG)
    v["in_chans"] = v.pop("in_channels")   # the Hub's Qwen2-VL configs spell it so
    v["spatial_patch_size"] = 14
    c["vision_config"] = v
    return c


def load_images(dirs):
    names, ims = [], []
    for d in dirs:
        for n in sorted(os.listdir(d)):
            if n.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".webp")):
                names.append(n)
                ims.append(os.path.join(d, n))
    return names, ims


def main():
    tok_dir, img_dirs, outdir = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
    os.makedirs(outdir, exist_ok=True)
    from safetensors.torch import save_file
    from transformers import PreTrainedTokenizerFast, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    checks = {}
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tok_dir, "tokenizer.json"))
    for s, i in [("<|im_start|>", IM_START), ("<|im_end|>", IM_END), ("<|endoftext|>", EOT),
                 ("<|vision_start|>", VSTART), ("<|vision_end|>", VEND), ("<|image_pad|>", IMG_PAD),
                 ("<|video_pad|>", VID_PAD)]:
        assert tok.convert_tokens_to_ids(s) == i, (s, tok.convert_tokens_to_ids(s))

    # ---------------------------------------------------------------- images
    proc = Qwen2VLImageProcessor(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    log("processor", type(proc).__name__, proc.size)
    names, paths = load_images(img_dirs)
    os.makedirs(os.path.join(outdir, "images"), exist_ok=True)
    pix = {}
    img_meta = {}
    blob = []
    off = 0
    for n, p in zip(names, paths):
        shutil.copy(p, os.path.join(outdir, "images", n))
        im = Image.open(p)
        try:
            b = proc(images=[im], return_tensors="pt")
        except Exception as e:   # smart_resize refuses (extreme aspect)
            img_meta[n] = {"mode": im.mode, "size": list(im.size), "error": str(e)}
            log("image", n, "refused:", e)
            continue
        pv, g = b["pixel_values"].float(), b["image_grid_thw"][0].tolist()
        assert pv.shape == (g[0] * g[1] * g[2], 1176), (pv.shape, g)
        pix[n] = (pv, g)
        a = pv.double().numpy().ravel()
        w = (np.arange(a.size) % 1009 + 1) / 1009.0
        img_meta[n] = {"mode": im.mode, "size": list(im.size), "grid_thw": g, "offset": off, "rows": int(pv.shape[0]),
                       "sum": float(a.sum()), "abs_sum": float(np.abs(a).sum()), "wsum": float((a * w).sum()),
                       "first": [float(x) for x in a[:8]]}
        blob.append(pv.numpy().astype("<f2").tobytes())
        off += int(pv.shape[0])
        log("image", n, im.mode, im.size, "grid", g)
    open(os.path.join(outdir, "pixels.f16"), "wb").write(b"".join(blob))
    # several images in one call equal the single calls, in order
    two = [n for n in names if n in pix][:2]
    b = proc(images=[Image.open(paths[names.index(n)]) for n in two], return_tensors="pt")
    checks["batch_pixels_equal"] = bool(torch.equal(b["pixel_values"].float(),
                                                    torch.cat([pix[n][0] for n in two])))

    # ---------------------------------------------------------------- cases
    by_grid = sorted([n for n in pix], key=lambda n: (pix[n][1][1] * pix[n][1][2], n))
    cases = []

    def case(name, text, imgs, instr=DEFAULT_INSTR):
        cases.append({"name": name, "instruction": instr, "text": text, "images": imgs})

    for i, t in enumerate(["hello", "A cat sitting on a mat.", "你好，世界", "", "  leading space and\ttab",
                           "The quick brown fox jumps over the lazy dog. " * 6]):
        case(f"text{i}", t, [])
    for n in by_grid:
        case("image:" + n, "", [n])
    case("text+image", "a photo of a cat", [by_grid[0]])
    case("text+image2", "What is shown here?", [by_grid[-1]])
    case("two_images", "", [by_grid[1], by_grid[2]])
    case("two_images+text", "compare these two pictures", [by_grid[2], by_grid[0]])
    case("three_frames", "a short clip", [by_grid[0]] * 3)
    case("instr:text", "hello", [], OTHER_INSTR)
    case("instr:image", "", [by_grid[0]], OTHER_INSTR)
    case("instr:text+image", "a photo of a cat", [by_grid[0]], OTHER_INSTR)

    for c in cases:
        ids = tok(prompt(c["text"], len(c["images"]), c["instruction"]), add_special_tokens=False)["input_ids"]
        c["ids"] = expand(ids, [pix[n][1] for n in c["images"]])
    used = sorted({i for c in cases for i in c["ids"]})

    # ---------------------------------------------------------------- model
    cfg = make_config()
    torch.manual_seed(SEED)
    m = Qwen2VLForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for _, p in m.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
        emb = m.get_input_embeddings().weight
        keep = torch.zeros(emb.shape[0], dtype=torch.bool)
        keep[used] = True
        emb[~keep] = 0
        for _, p in m.named_parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    sd = {k: v.detach().to(torch.bfloat16).contiguous().clone() for k, v in m.state_dict().items()}
    if cfg.tie_word_embeddings or getattr(cfg.text_config, "tie_word_embeddings", False):
        sd.pop("lm_head.weight", None)
    log("state_dict keys (sample)", sorted(sd)[:3], len(sd))
    assert any(k.startswith("model.language_model.") for k in sd) and any(k.startswith("model.visual.") for k in sd)

    d5 = os.path.join(outdir, "qwen2vl-tiny-v5")
    m.config.save_pretrained(d5)
    save_file(sd, os.path.join(d5, "model.safetensors"), metadata={"format": "pt"})
    dh = os.path.join(outdir, "qwen2vl-tiny")
    os.makedirs(dh, exist_ok=True)

    def hub_name(k):
        if k.startswith("model.visual."):
            return k[len("model."):]
        if k.startswith("model.language_model."):
            return "model." + k[len("model.language_model."):]
        return k
    save_file({hub_name(k): v for k, v in sd.items()}, os.path.join(dh, "model.safetensors"),
              metadata={"format": "pt"})
    json.dump(hub_config(), open(os.path.join(dh, "config.json"), "w"), indent=2)
    proc.save_pretrained(dh)   # transformers 5's form: size {shortest_edge, longest_edge}
    legacy = {"image_processor_type": "Qwen2VLImageProcessor", "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS,
              "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "do_resize": True, "resample": 3,
              "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
              "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    json.dump(legacy, open(os.path.join(d5, "preprocessor_config.json"), "w"), indent=2)
    for d in (dh, d5):
        shutil.copy(os.path.join(tok_dir, "tokenizer.json"), os.path.join(d, "tokenizer.json"))
        for extra in ("tokenizer_config.json", "LICENSE"):
            if os.path.exists(os.path.join(tok_dir, extra)):
                shutil.copy(os.path.join(tok_dir, extra), os.path.join(d, extra))
    try:
        p2 = Qwen2VLImageProcessor.from_pretrained(d5)
        checks["legacy_preproc_same_grids"] = all(
            p2(images=[Image.open(paths[names.index(n)])], return_tensors="pt")["image_grid_thw"][0].tolist()
            == pix[n][1] for n in pix)
        p3 = Qwen2VLImageProcessor.from_pretrained(dh)
        checks["v5_preproc_reload_size"] = dict(p3.size)
    except Exception:
        checks["legacy_preproc"] = traceback.format_exc()[-600:]

    # ---------------------------------------------------------------- references
    ref = Qwen2VLForConditionalGeneration.from_pretrained(d5, dtype=torch.float32).eval()

    def sd_diff(model, names):
        """max |loaded - saved| over every saved tensor (a key left at its
        random init would make a reference of the wrong model)"""
        got = model.state_dict()
        miss = [k for k in names if names[k] not in got]
        if miss:
            return "missing " + ", ".join(miss[:5])
        return max(float((got[names[k]].float() - sd[k].float()).abs().max()) for k in names)
    checks["v5_names_state_diff"] = sd_diff(ref, {k: k for k in sd})
    assert checks["v5_names_state_diff"] == 0.0, checks["v5_names_state_diff"]

    def run(model, c):
        ids = torch.tensor([c["ids"]])
        kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids))
        if c["images"]:
            kw["pixel_values"] = torch.cat([pix[n][0] for n in c["images"]])
            kw["image_grid_thw"] = torch.tensor([pix[n][1] for n in c["images"]])
            kw["mm_token_type_ids"] = (ids == IMG_PAD).long()
        with torch.no_grad():
            out = model.model(**kw)
        h = out.last_hidden_state[0, -1]
        return torch.nn.functional.normalize(h, dim=-1)

    for c in cases:
        c["vec"] = [float(x) for x in run(ref, c)]
        log("case", c["name"], len(c["ids"]), "tokens")
    # the other naming and the Hub-style config load to the same vectors
    for tag, d in (("hub_names", dh),):
        try:
            m2 = Qwen2VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32).eval()
            checks[tag + "_state_diff"] = sd_diff(m2, {k: k for k in sd})
            checks[tag + "_max_diff"] = max(float((run(m2, c) - torch.tensor(c["vec"])).abs().max())
                                            for c in cases[:8] + cases[-5:])
        except Exception:
            checks[tag] = traceback.format_exc()[-800:]
    # the HF processor's own expansion agrees with ours
    try:
        from transformers import Qwen2VLProcessor
        pr = Qwen2VLProcessor(image_processor=proc, tokenizer=tok)
        c = next(c for c in cases if c["name"] == "two_images+text")
        b = pr(text=[prompt(c["text"], 2, c["instruction"])],
               images=[Image.open(paths[names.index(n)]) for n in c["images"]], return_tensors="pt")
        checks["processor_ids_equal"] = b["input_ids"][0].tolist() == c["ids"]
        if "mm_token_type_ids" in b:
            checks["processor_mm_token_type_ids"] = b["mm_token_type_ids"][0].tolist() == \
                [int(i == IMG_PAD) for i in c["ids"]]
    except Exception:
        checks["processor"] = traceback.format_exc()[-800:]
    # rope index as HF computes it, for one mixed case (the C test checks its own against this)
    try:
        c = next(c for c in cases if c["name"] == "two_images+text")
        ids = torch.tensor([c["ids"]])
        kw = dict(input_ids=ids, image_grid_thw=torch.tensor([pix[n][1] for n in c["images"]]),
                  attention_mask=torch.ones_like(ids))
        try:
            pos, _ = ref.model.get_rope_index(mm_token_type_ids=(ids == IMG_PAD).long(), **kw)
        except TypeError:
            pos, _ = ref.model.get_rope_index(**kw)
        c["rope_pos"] = pos[:, 0].tolist()
    except Exception:
        checks["rope_index"] = traceback.format_exc()[-800:]

    json.dump({"images": img_meta, "cases": cases, "checks": checks,
               "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS},
              open(os.path.join(outdir, "ref.json"), "w", encoding="utf-8"), ensure_ascii=False)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
            "n_cases": len(cases), "n_images": len(pix), "checks": checks}
    json.dump(meta, open(os.path.join(outdir, "meta.json"), "w"), indent=1)
    log(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
