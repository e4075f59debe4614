#!/usr/bin/env python3
"""Reference fixtures for the text model families and extra CLIP image
references, made with Hugging Face transformers (run on the device machine).

Usage: gen_text_fixtures.py QWEN3_TOKENIZER_DIR CLIP_FIXTURE_DIR OUTDIR
       gen_text_fixtures.py --hf-extra FIXTURES_DIR OUTDIR
Output (OUTDIR):
  bert-tiny/          random-weight BertModel (f32) + WordPiece tokenizer.json +
                      sentence-transformers modules.json / 1_Pooling (mean)
  bert_ref.json       [{"text", "ids", "type_ids", "mean", "cls"}] (f32, mean/cls pooled, not normalized)
  qwen3-tiny/         random-weight Qwen3Model (bf16 safetensors, values exact in bf16), config
  qwen3_ref.json      [{"text", "ids", "last"}]  ids include the appended <|endoftext|>; last = last hidden state
  qwen3_tokens.json   [{"text", "ids"}] for the real Qwen3 tokenizer (no special tokens added)
  clip_extra/         rgb16_320x240.png + pixels (torchvision backend: CLIPImageProcessor) and
                      pixels_pil/<img>.f16 for every CLIP fixture image (PIL resize BICUBIC + crop)

--hf-extra loads the committed checkpoints (FIXTURES_DIR/bert/bert-tiny,
FIXTURES_DIR/qwen3/qwen3-tiny) with from_pretrained(dtype=float32), the way a
user's f32 load does, and writes the tight references tests/unit/test_textmodel.c
reads (instead of vectors pasted into the test):
  bert_hf_extra.json  [{"ids", "mean", "cls"}]  token ids spread over the whole
                      vocabulary (bert_ref.json's words are mostly [UNK])
  qwen3_hf_extra.json [{"name", "ids", "last"}]  qwen3_ref.json's text 30 and 64
                      random ids ending in <|endoftext|>; f32 rotary inv_freq
"""
import json
import os
import sys
import zlib
import struct

import numpy as np
import torch
import transformers
from PIL import Image

SEED = 4321


def noise_(model, scale=0.05, bf16=False):
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(torch.randn_like(p) * scale)
            if bf16:
                p.copy_(p.to(torch.bfloat16).to(torch.float32))


BERT_WORDS = """the a an of to and in is it you that he was for on are as with his they at be this have from
or one had by word but not what all were we when your can said there use each which she do how their if will up
other about out many then them these so some her would make like him into time has look two more write go see
number no way could people my than first water been call who oil its now find long down day did get come made may
part cat dog sat mat sits rests feline carpet loyal animals weather sunny today photo picture quick brown fox jumps
over lazy hello world cafe naive resume city new york tokyo paris deep learning model embedding vector search
query document passage sentence""".split()
SUFFIXES = ["s", "ing", "ed", "ly", "er", "est", "ion", "al", "y", "es"]


def bert_vocab():
    v = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    v += chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    v += sorted(set(BERT_WORDS)) + ["##" + s for s in SUFFIXES]
    v += list("東京日本中文字")
    out, seen = [], set()
    for t in v:
        if t not in seen:
            out.append(t)
            seen.add(t)
    return out


BERT_TEXTS = [
    "The cat sits on the mat", "A feline rests on the carpet", "Dogs are loyal animals",
    "The weather is sunny today", "hello world", "Hello, World!", "HELLO WORLD", "café naïve résumé",
    "Cafe\u0301 and Zoë", "東京 and 日本", "中文字", "quick brown fox jumps over the lazy dog",
    "writing", "writes", "quickly", "unknownword xyzzy", "don't stop", "a-b c.d e/f", "  spaces   inside  ",
    "tab\tseparated\nlines", "numbers 123 4567", "$100 & 50%", "", "a", "deep learning embedding models",
    "search query: where is the document?", "ÀÉÎÕÜ accents", "\u00a0nbsp", "emoji 😀 here",
    " ".join(["word"] * 80), "the " * 70,
]

QWEN_TEXTS = [
    "", "hello", "Hello world!", "The cat sits on the mat", "你好，世界", "我爱北京天安门", "こんにちは世界",
    "안녕하세요", "Привет мир", "مرحبا", "😀👍🏽👩‍💻", "def f(x):\n    return x * 2\n", "  leading spaces",
    "trailing spaces   ", "multiple\n\nnewlines\n", "tabs\tand\ttabs", "numbers 1234567890 3.14159",
    "don't won't I'm they're", "https://example.com/a?b=c&d=e", "<|endoftext|> inside", "<|im_start|>user",
    "Instruct: Given a web search query, retrieve relevant passages\nQuery: what is a cat?",
    "café naïve résumé", "ÀÉÎÕÜ", "a" * 300, "的的的的的", "Hello     world", "\u00a0nbsp", "x" * 5,
    "Qwen3 embedding model", "The quick brown fox jumps over the lazy dog. " * 5,
]


def gen_bert(outdir):
    from transformers import BertConfig, BertModel, BertTokenizerFast
    d = os.path.join(outdir, "bert-tiny")
    os.makedirs(d, exist_ok=True)
    vocab = bert_vocab()
    vf = os.path.join(outdir, "bert_vocab.txt")
    open(vf, "w", encoding="utf-8").write("\n".join(vocab) + "\n")
    # transformers 5 ignores BertTokenizerFast(vocab_file=...): build the
    # WordPiece pipeline with `tokenizers` and wrap it
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                    max_input_chars_per_word=100))
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                               lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tk.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                  pad_token="[PAD]", mask_token="[MASK]", model_max_length=64,
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    assert tok.convert_tokens_to_ids("[CLS]") == 2, tok.convert_tokens_to_ids("[CLS]")
    probe = tok("The cat sits on the mat")["input_ids"]
    assert probe[0] == 2 and probe[-1] == 3 and 1 not in probe, probe   # real words, no [UNK]
    tok.save_pretrained(d)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
                     layer_norm_eps=1e-12, pad_token_id=0)
    torch.manual_seed(SEED)
    m = BertModel(cfg, add_pooling_layer=True).eval()
    noise_(m)
    m.save_pretrained(d, safe_serialization=True)
    json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
              open(os.path.join(d, "modules.json"), "w"), indent=1)
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
               "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False},
              open(os.path.join(d, "1_Pooling", "config.json"), "w"), indent=1)
    json.dump({"max_seq_length": 64, "do_lower_case": False},
              open(os.path.join(d, "sentence_bert_config.json"), "w"), indent=1)
    refs = []
    with torch.no_grad():
        for t in BERT_TEXTS:
            enc = tok(t, truncation=True, max_length=64, return_tensors="pt")
            out = m(**enc).last_hidden_state[0]
            mask = enc["attention_mask"][0].float()[:, None]
            mean = (out * mask).sum(0) / mask.sum()
            refs.append({"text": t, "ids": enc["input_ids"][0].tolist(), "type_ids": enc["token_type_ids"][0].tolist(),
                         "mean": mean.tolist(), "cls": out[0].tolist()})
        # padded batch equals singles (HF side check)
        enc = tok(BERT_TEXTS[:6], padding=True, truncation=True, max_length=64, return_tensors="pt")
        out = m(**enc).last_hidden_state
        for i in range(6):
            mask = enc["attention_mask"][i].float()[:, None]
            mean = (out[i] * mask).sum(0) / mask.sum()
            assert torch.allclose(mean, torch.tensor(refs[i]["mean"]), atol=1e-5)
    st_ok = None
    try:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(d, device="cpu")
        e = st.encode(BERT_TEXTS[:4], normalize_embeddings=False, convert_to_numpy=True)
        st_ok = float(max(abs(e[i] - np.array(refs[i]["mean"])).max() for i in range(4)))
    except Exception as ex:  # pragma: no cover
        st_ok = f"sentence-transformers check skipped: {ex}"
    json.dump(refs, open(os.path.join(outdir, "bert_ref.json"), "w", encoding="utf-8"), ensure_ascii=False)
    return st_ok


def gen_qwen3(qtok_dir, outdir):
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3Model
    d = os.path.join(outdir, "qwen3-tiny")
    os.makedirs(d, exist_ok=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(qtok_dir, "tokenizer.json"))
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    assert eos == 151643, eos
    toks = []
    for t in QWEN_TEXTS:
        toks.append({"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]})
    json.dump(toks, open(os.path.join(outdir, "qwen3_tokens.json"), "w", encoding="utf-8"), ensure_ascii=False)
    cfg = Qwen3Config(vocab_size=151669, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=512,
                      rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act="silu",
                      attention_bias=False, bos_token_id=151643, eos_token_id=151643)
    torch.manual_seed(SEED + 1)
    m = Qwen3Model(cfg).eval()
    noise_(m, 0.05, bf16=True)
    m.to(torch.bfloat16).save_pretrained(d, safe_serialization=True)
    # reference from a fresh float32 load (an in-place .to() would also round
    # rope's inv_freq buffer to bf16)
    m = Qwen3Model.from_pretrained(d, dtype=torch.float32).eval()
    refs = []
    with torch.no_grad():
        for t in QWEN_TEXTS:
            ids = tok(t, add_special_tokens=False)["input_ids"][:200] + [eos]
            out = m(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            refs.append({"text": t, "ids": ids, "last": out.tolist()})
        # left-padded batch equals singles
        batch = [r["ids"] for r in refs[:5]]
        L = max(len(b) for b in batch)
        ids = torch.tensor([[eos] * (L - len(b)) + b for b in batch])
        att = torch.tensor([[0] * (L - len(b)) + [1] * len(b) for b in batch])
        out = m(input_ids=ids, attention_mask=att).last_hidden_state[:, -1]
        for i in range(5):
            assert torch.allclose(out[i], torch.tensor(refs[i]["last"]), atol=1e-4), i
    json.dump(refs, open(os.path.join(outdir, "qwen3_ref.json"), "w", encoding="utf-8"), ensure_ascii=False)


def png16(path, a):
    """Write an RGB 16-bit PNG (PIL cannot)."""
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    open(path, "wb").write(data)


def gen_clip_extra(clip_dir, outdir):
    from transformers import CLIPImageProcessor, CLIPModel
    d = os.path.join(outdir, "clip_extra")
    os.makedirs(os.path.join(d, "pixels_pil"), exist_ok=True)
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:240, 0:320]
    a = np.stack([x * 200, y * 270, (x + y) * 97 % 65536], -1).astype(np.uint16)
    a[..., 0] += rng.integers(0, 3000, size=a.shape[:2], dtype=np.uint16)
    png16(os.path.join(d, "rgb16_320x240.png"), a)
    proc = CLIPImageProcessor.from_pretrained(os.path.join(clip_dir, "clip-tiny"))
    model = CLIPModel.from_pretrained(os.path.join(clip_dir, "clip-tiny"), torch_dtype=torch.float32).eval()
    im = Image.open(os.path.join(d, "rgb16_320x240.png"))
    pv = proc(images=im, return_tensors="pt")["pixel_values"]
    pv.numpy().astype("<f2").tofile(os.path.join(d, "rgb16_320x240.png.f16"))
    with torch.no_grad():
        e = model.visual_projection(model.vision_model(pixel_values=pv.float()).pooler_output)[0]
    meta = {"rgb16_320x240.png": {"mode": im.mode, "embedding": e.tolist()}}
    mean = np.array(proc.image_mean, dtype=np.float32)[:, None, None]
    std = np.array(proc.image_std, dtype=np.float32)[:, None, None]
    names = sorted(os.listdir(os.path.join(clip_dir, "images"))) + ["rgb16_320x240.png"]
    for n in names:
        p = os.path.join(clip_dir, "images", n) if n != "rgb16_320x240.png" else os.path.join(d, n)
        im = Image.open(p).convert("RGB")
        w, h = im.size
        s = 224
        if w <= h:
            nw, nh = s, int(s * h / w)
        else:
            nw, nh = int(s * w / h), s
        r = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - 224) // 2, (nh - 224) // 2
        r = r.crop((left, top, left + 224, top + 224))
        arr = np.asarray(r, dtype=np.float32).transpose(2, 0, 1) / 255.0
        arr = (arr - mean) / std
        arr.astype("<f2").tofile(os.path.join(d, "pixels_pil", n + ".f16"))
    json.dump(meta, open(os.path.join(d, "extra.json"), "w"))


def gen_hf_extra(fixtures, outdir):
    os.makedirs(outdir, exist_ok=True)
    rng = np.random.RandomState(SEED + 7)
    bdir = os.path.join(fixtures, "bert", "bert-tiny")
    bert = transformers.BertModel.from_pretrained(bdir, dtype=torch.float32).eval()
    vocab, cls_id, sep_id = bert.config.vocab_size, 2, 3
    out = []
    for n in (13, 64):   # [CLS] words [SEP], ids over the whole vocabulary but the 5 specials
        ids = [cls_id] + [int(x) for x in rng.randint(5, vocab, size=n - 2)] + [sep_id]
        with torch.no_grad():
            h = bert(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, n, dtype=torch.long),
                     token_type_ids=torch.zeros(1, n, dtype=torch.long)).last_hidden_state[0]
        out.append({"ids": ids, "mean": h.mean(0).tolist(), "cls": h[0].tolist()})
    json.dump(out, open(os.path.join(outdir, "bert_hf_extra.json"), "w"))
    qdir = os.path.join(fixtures, "qwen3", "qwen3-tiny")
    qwen = transformers.Qwen3Model.from_pretrained(qdir, dtype=torch.float32).eval()
    ref = json.load(open(os.path.join(fixtures, "qwen3", "qwen3_ref.json"), encoding="utf-8"))
    eos = qwen.config.eos_token_id if isinstance(qwen.config.eos_token_id, int) else 151643
    cases = [("text30", ref[30]["ids"]),
             ("rand64", [int(x) for x in rng.randint(0, qwen.config.vocab_size - 300, size=63)] + [eos])]
    out = []
    for name, ids in cases:
        with torch.no_grad():
            h = qwen(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        out.append({"name": name, "ids": ids, "last": h.tolist()})
    json.dump(out, open(os.path.join(outdir, "qwen3_hf_extra.json"), "w"))
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                      "bert": [len(x["ids"]) for x in json.load(open(os.path.join(outdir, "bert_hf_extra.json")))],
                      "qwen3": [c[0] for c in cases]}))


def main():
    if sys.argv[1] == "--hf-extra":
        gen_hf_extra(sys.argv[2], sys.argv[3])
        return
    qtok, clip_dir, outdir = sys.argv[1:4]
    os.makedirs(outdir, exist_ok=True)
    st = gen_bert(outdir)
    gen_qwen3(qtok, outdir)
    if "--text-only" not in sys.argv:
        gen_clip_extra(clip_dir, outdir)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__, "seed": SEED,
            "sentence_transformers_check": st}
    json.dump(meta, open(os.path.join(outdir, "meta.json"), "w"), indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
