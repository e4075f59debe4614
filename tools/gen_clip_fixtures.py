#!/usr/bin/env python3
"""Generate CLIP reference fixtures with Hugging Face transformers.

Runs on a machine with torch + transformers + Pillow (the device machine).
Input:  the OpenAI CLIP BPE file (bpe_simple_vocab_16e6.txt.gz, MIT).
Output: a directory with
  tokenizer/            vocab.json, merges.txt, tokenizer.json, ... (real CLIP tokenizer)
  clip-tiny/            random-weight CLIPModel, f16 safetensors (values exact in f16 and bf16)
  clip-tiny-bf16/       same weights, bf16, sharded (model.safetensors.index.json)
  tokens.json           [{"text":..., "ids":[...], "ids77":[...]}]  (ids77: truncated to 77)
  text_emb.json         [{"text":..., "ids77":[...], "embedding":[...]}]  f32 reference
  images/<name>         test images in several formats
  pixels/<name>.f16     CLIPImageProcessor pixel_values, 3x224x224 float16 little-endian
  image_emb.json        [{"file":..., "embedding":[...]}] from the reference pixel values
  meta.json             versions and what produced the references

Usage: gen_clip_fixtures.py BPE_GZ OUTDIR
"""
import gzip
import io
import json
import os
import sys

import numpy as np
import torch
import transformers
from PIL import Image, ImageDraw
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

SEED = 1234


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def build_vocab(bpe_gz, outdir):
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(outdir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for m in merges:
            f.write(" ".join(m) + "\n")


def corpus():
    c = [
        "", " ", "   ", "\t", "\n", "a", "A", "a photo of a cat", "A Photo Of A CAT",
        "a photo of a dog", "a diagram", "two dogs playing in the snow",
        "The quick brown fox jumps over the lazy dog.", "Hello, world!", "hello world",
        "don't", "I'm", "you're", "they've", "we'll", "she'd", "it's", "DON'T STOP",
        "rock'n'roll", "o'clock", "'quoted'", "\"double quoted\"", "can't won't shouldn't",
        "café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "A\u030angstro\u0308m", "résumé",
        "façade", "Zoë", "São Paulo", "Ærøskøbing", "straße", "ﬁne ligature", "Ⅻ roman",
        "東京", "東京タワーの写真", "我爱北京天安门", "한국어 문장입니다", "日本語とEnglishの混在",
        "ひらがな カタカナ", "中文，标点。", "Привет, мир", "Γειά σου Κόσμε", "مرحبا بالعالم",
        "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "Tiếng Việt có dấu",
        "😀", "😀😃😄", "👍🏽", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "a cat 🐱 on a mat",
        "🇯🇵 flag", "emoji👍🏿in the middle", "✨sparkles✨",
        "&amp;", "&lt;div&gt;", "&quot;hi&quot;", "AT&amp;T", "&#39;", "&nbsp;space",
        "<b>bold</b>", "<img src=\"x.png\">", "fish &amp; chips",
        "0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "2026-11-22",
        "12:30pm", "$100", "€50", "50%", "#hashtag", "@mention", "+1-555-0100",
        "version 2.0.1", "ipv4 192.168.0.1", "0x1F", "1e10", "-273.15",
        "multiple   spaces   here", "tabs\tand\ttabs", "new\nline", "  leading", "trailing  ",
        "\t\n mixed \r\n whitespace \t", "a\u00a0nbsp", "zero\u200bwidth", "em\u2003space",
        "!!!", "???", "...", "!?!?", "hello!!!", "wait...", "(parens)", "[brackets]",
        "{braces}", "a-b-c", "a_b_c", "a/b\\c", "semi;colon:", "~tilde`", "^caret|pipe",
        "email@example.com", "https://example.com/path?q=1&r=2", "C++ and C#", "foo.bar()",
        "snake_case_name", "camelCaseName", "PascalCaseName", "SCREAMING_CASE",
        "ThisIsAVeryLongCamelCaseIdentifierThatNeedsManyMerges", "antidisestablishmentarianism",
        "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababab", "xyzzy",
        "the the the the", "New York City", "U.S.A.", "e.g. i.e. etc.", "Mr. Smith",
        "a red car", "a blue sky", "a green tree", "an orange", "a bowl of soup",
        "a person riding a bicycle", "a close-up of a flower", "satellite image of a city",
        "black and white photo", "oil painting of a ship at sea", "pixel art",
        "a photo of the number 3", "a tattoo of a rose", "a sketch of a horse",
    ]
    long1 = "a photo of " + " and ".join(["a cat", "a dog", "a bird", "a fish"] * 12)
    long2 = " ".join(str(i) for i in range(200))
    long3 = "supercalifragilistic " * 40
    long4 = "東京 " * 100
    long5 = "😀" * 90
    c += [long1, long2, long3, long4, long5, "word " * 75, "word " * 76, "word " * 77]
    # a few generated ones to pass 200 comfortably
    rng = np.random.default_rng(SEED)
    words = ["photo", "cat", "dog", "Car", "tree", "don't", "東京", "café", "👍", "123",
             "&amp;", "!", "  ", "ROCK", "naïve", "x-ray", "e-mail", "it's", "世界", "ok"]
    for _ in range(60):
        n = int(rng.integers(1, 12))
        c.append(" ".join(words[int(rng.integers(0, len(words)))] for _ in range(n)))
    return c


def round_exact(t):
    # bf16 then f16: the result is exactly representable in f32, f16 and bf16
    return t.to(torch.bfloat16).to(torch.float16).to(torch.float32)


def make_images(imgdir):
    os.makedirs(imgdir, exist_ok=True)
    rng = np.random.default_rng(SEED)

    def base(w, h):
        y, x = np.mgrid[0:h, 0:w]
        r = (x * 255 // max(w - 1, 1)).astype(np.uint8)
        g = (y * 255 // max(h - 1, 1)).astype(np.uint8)
        b = ((x + y) * 3 % 256).astype(np.uint8)
        a = np.stack([r, g, b], -1)
        noise = rng.integers(0, 40, size=a.shape, dtype=np.int16)
        a = np.clip(a.astype(np.int16) + noise - 20, 0, 255).astype(np.uint8)
        im = Image.fromarray(a, "RGB")
        d = ImageDraw.Draw(im)
        d.ellipse([w // 5, h // 5, w // 2, h // 2], fill=(250, 20, 30))
        d.rectangle([w // 2, h // 3, w - w // 8, h - h // 6], fill=(10, 200, 60))
        d.line([0, h - 1, w - 1, 0], fill=(255, 255, 255), width=max(1, w // 60))
        return im

    out = []
    im = base(224, 224); im.save(f"{imgdir}/rgb224.png"); out.append("rgb224.png")
    im = base(640, 480); im.save(f"{imgdir}/photo640x480.jpg", quality=90); out.append("photo640x480.jpg")
    im = base(500, 300); im.save(f"{imgdir}/wide500x300_q75.jpg", quality=75, subsampling=2); out.append("wide500x300_q75.jpg")
    im = base(2000, 1500); im.save(f"{imgdir}/large2000x1500.jpg", quality=92); out.append("large2000x1500.jpg")
    im = base(333, 517); im.save(f"{imgdir}/portrait333x517_444.jpg", quality=95, subsampling=0); out.append("portrait333x517_444.jpg")
    im = base(500, 400).convert("L"); im.save(f"{imgdir}/gray500x400.jpg", quality=90); out.append("gray500x400.jpg")
    im = base(100, 80).convert("L"); im.save(f"{imgdir}/gray100x80.png"); out.append("gray100x80.png")
    im = base(300, 500).convert("RGBA")
    px = np.array(im); px[..., 3] = np.linspace(0, 255, 300, dtype=np.uint8)[None, :]
    Image.fromarray(px, "RGBA").save(f"{imgdir}/rgba300x500.png"); out.append("rgba300x500.png")
    im = base(256, 200).convert("P", palette=Image.ADAPTIVE, colors=64); im.save(f"{imgdir}/palette256x200.png"); out.append("palette256x200.png")
    a = np.array(base(320, 240)).astype(np.uint16) * 257
    a[..., 0] += rng.integers(0, 200, size=a.shape[:2], dtype=np.uint16)
    try:
        import imageio.v3 as iio  # writes real 16-bit RGB PNG
        iio.imwrite(f"{imgdir}/rgb16_320x240.png", a)
        out.append("rgb16_320x240.png")
    except Exception as e:  # pragma: no cover
        print("no 16-bit png:", e)
    im = base(400, 300); im.save(f"{imgdir}/photo400x300.webp", quality=85); out.append("photo400x300.webp")
    frames = [base(200, 150).convert("P", palette=Image.ADAPTIVE), base(200, 150).transpose(Image.FLIP_LEFT_RIGHT).convert("P", palette=Image.ADAPTIVE)]
    frames[0].save(f"{imgdir}/anim200x150.gif", save_all=True, append_images=frames[1:], duration=100, loop=0); out.append("anim200x150.gif")
    im = base(31, 17); im.save(f"{imgdir}/tiny31x17.png"); out.append("tiny31x17.png")
    return out


def main():
    bpe, outdir = sys.argv[1], sys.argv[2]
    torch.manual_seed(SEED)
    os.makedirs(outdir, exist_ok=True)
    tokdir = os.path.join(outdir, "tokenizer")
    build_vocab(bpe, tokdir)
    tok = CLIPTokenizer(os.path.join(tokdir, "vocab.json"), os.path.join(tokdir, "merges.txt"))
    ids = tok("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids
    tok.save_pretrained(tokdir)
    assert os.path.exists(os.path.join(tokdir, "tokenizer.json"))
    from tokenizers import Tokenizer
    fast = Tokenizer.from_file(os.path.join(tokdir, "tokenizer.json"))

    texts = corpus()
    toks = []
    for t in texts:
        full = tok(t)["input_ids"]
        t77 = tok(t, truncation=True, max_length=77)["input_ids"]
        assert fast.encode(t).ids == full, t
        toks.append({"text": t, "ids": full, "ids77": t77})
    with open(os.path.join(outdir, "tokens.json"), "w", encoding="utf-8") as f:
        json.dump(toks, f, ensure_ascii=False, indent=0)

    cfg = CLIPConfig(
        text_config=dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=1, layer_norm_eps=1e-5),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                           image_size=224, patch_size=32, hidden_act="gelu", layer_norm_eps=1e-5),
        projection_dim=24)
    model = CLIPModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.05)
            p.copy_(round_exact(p))
    m16 = os.path.join(outdir, "clip-tiny")
    model.to(torch.float16).save_pretrained(m16, safe_serialization=True)
    mb16 = os.path.join(outdir, "clip-tiny-bf16")
    model.to(torch.bfloat16).save_pretrained(mb16, safe_serialization=True, max_shard_size="2MB")
    model = model.to(torch.float32)
    from transformers import CLIPImageProcessor
    try:
        proc = CLIPImageProcessor(use_fast=False)
    except TypeError:
        proc = CLIPImageProcessor()
    proc.save_pretrained(m16)
    proc.save_pretrained(mb16)
    for d in (m16, mb16):
        tok.save_pretrained(d)

    # text references
    temb = []
    with torch.no_grad():
        for t in texts[:40] + texts[-68:-60]:
            i77 = tok(t, truncation=True, max_length=77)["input_ids"]
            out = model.text_model(input_ids=torch.tensor([i77]))
            e = model.text_projection(out.pooler_output)[0]
            temb.append({"text": t, "ids77": i77, "embedding": e.tolist()})
    with open(os.path.join(outdir, "text_emb.json"), "w", encoding="utf-8") as f:
        json.dump(temb, f, ensure_ascii=False)

    imgdir = os.path.join(outdir, "images")
    names = make_images(imgdir)
    pixdir = os.path.join(outdir, "pixels")
    os.makedirs(pixdir, exist_ok=True)
    iemb = []
    with torch.no_grad():
        for n in names:
            im = Image.open(os.path.join(imgdir, n))
            pv = proc(images=im, return_tensors="pt")["pixel_values"]
            assert tuple(pv.shape) == (1, 3, 224, 224), pv.shape
            pv.numpy().astype("<f2").tofile(os.path.join(pixdir, n + ".f16"))
            out = model.vision_model(pixel_values=pv.float())
            e = model.visual_projection(out.pooler_output)[0]
            iemb.append({"file": n, "mode": im.mode, "size": list(im.size), "embedding": e.tolist()})
    with open(os.path.join(outdir, "image_emb.json"), "w") as f:
        json.dump(iemb, f)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "pillow": Image.__version__, "processor": type(proc).__name__, "seed": SEED,
            "n_texts": len(texts)}
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
