#!/usr/bin/python3
"""export_onnx — exports a CLIP model folder (config.json + safetensors) to
ONNX: one text tower and one vision tower, each ending in its projection,
for the ONNX Runtime side of tools/bench/bench_clip.sh.

The PyTorch model here is written from scratch to mirror Hugging Face
transformers' modeling_clip.py (pre-LN encoder blocks, causal mask for text,
quick_gelu / gelu, EOS pooling, class embedding, pre_layrnorm,
post_layernorm, projections without bias); the safetensors reader is ours
too, so the only dependency is torch (Debian bookworm: python3-torch 1.13,
whose exporter does not need the `onnx` Python package).

  usage: /usr/bin/python3 tools/bench/export_onnx.py MODEL_DIR OUT_DIR
             -> OUT_DIR/text.onnx   input_ids int64 [batch, seq]  -> text_embeds [batch, dim]
                OUT_DIR/vision.onnx pixel_values f32 [batch, 3, H, W] -> image_embeds [batch, dim]
         /usr/bin/python3 tools/bench/export_onnx.py --check-fixtures FIXTURE_DIR
             compares this PyTorch model with the Hugging Face reference
             embeddings in FIXTURE_DIR (tests/fixtures/clip: clip-tiny,
             text_emb.json, image_emb.json, pixels/*.f16) and exits non-zero
             when any cosine similarity is below 0.9999.

Outputs are the raw projections (not normalized), like mm_model_encode_*.
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

from safetensors_io import load_weights

# ------------------------------------------------------------ model


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTS = {"quick_gelu": quick_gelu, "gelu": F.gelu, "gelu_new": gelu_tanh,
        "gelu_pytorch_tanh": gelu_tanh, "relu": F.relu}


class Linear(torch.nn.Module):
    def __init__(self, w, prefix, bias=True):
        super().__init__()
        self.weight = torch.nn.Parameter(w[prefix + ".weight"], requires_grad=False)
        self.bias = torch.nn.Parameter(w[prefix + ".bias"], requires_grad=False) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class LayerNorm(torch.nn.Module):
    def __init__(self, w, prefix, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(w[prefix + ".weight"], requires_grad=False)
        self.bias = torch.nn.Parameter(w[prefix + ".bias"], requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class EncoderLayer(torch.nn.Module):
    """CLIPEncoderLayer: h += attn(ln1(h)); h += mlp(ln2(h))."""

    def __init__(self, w, prefix, cfg):
        super().__init__()
        self.heads = cfg["num_attention_heads"]
        self.dim = cfg["hidden_size"]
        self.head_dim = self.dim // self.heads
        self.scale = self.head_dim ** -0.5
        eps = cfg.get("layer_norm_eps", 1e-5)
        self.ln1 = LayerNorm(w, prefix + ".layer_norm1", eps)
        self.ln2 = LayerNorm(w, prefix + ".layer_norm2", eps)
        a = prefix + ".self_attn."
        self.q = Linear(w, a + "q_proj")
        self.k = Linear(w, a + "k_proj")
        self.v = Linear(w, a + "v_proj")
        self.o = Linear(w, a + "out_proj")
        self.fc1 = Linear(w, prefix + ".mlp.fc1")
        self.fc2 = Linear(w, prefix + ".mlp.fc2")
        self.act = ACTS[cfg.get("hidden_act", "quick_gelu")]

    def attention(self, x, mask):
        b, s, _ = x.shape
        # (b, s, D) -> (b, heads, s, head_dim)
        q = (self.q(x) * self.scale).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.k(x).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = self.v(x).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(2, 3))
        if mask is not None:
            scores = scores + mask
        p = torch.softmax(scores, dim=-1)
        o = torch.matmul(p, v).transpose(1, 2).reshape(b, s, self.dim)
        return self.o(o)

    def forward(self, x, mask):
        x = x + self.attention(self.ln1(x), mask)
        x = x + self.fc2(self.act(self.fc1(self.ln2(x))))
        return x


class TextModel(torch.nn.Module):
    """CLIPTextModelWithProjection: input_ids (b, s) int64 -> (b, projection_dim)."""

    def __init__(self, w, cfg, proj_dim):
        super().__init__()
        tc = cfg["text_config"]
        p = "text_model"
        self.tok = torch.nn.Parameter(w[p + ".embeddings.token_embedding.weight"], requires_grad=False)
        self.pos = torch.nn.Parameter(w[p + ".embeddings.position_embedding.weight"], requires_grad=False)
        self.layers = torch.nn.ModuleList(
            EncoderLayer(w, "%s.encoder.layers.%d" % (p, i), tc) for i in range(tc["num_hidden_layers"]))
        self.final_ln = LayerNorm(w, p + ".final_layer_norm", tc.get("layer_norm_eps", 1e-5))
        self.proj = Linear(w, "text_projection", bias=False)
        self.eos = tc.get("eos_token_id", 2)
        assert self.proj.weight.shape[0] == proj_dim

    def forward(self, input_ids):
        s = input_ids.shape[1]
        x = F.embedding(input_ids, self.tok) + self.pos[:s].unsqueeze(0)
        # causal mask: position i sees j <= i (modeling_clip uses finfo.min)
        r = torch.arange(s, device=input_ids.device)
        mask = (r.unsqueeze(0) > r.unsqueeze(1)).to(torch.float32) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, mask)
        x = self.final_ln(x)
        # modeling_clip: legacy configs (eos_token_id == 2) pool at argmax(ids),
        # which is EOS in CLIP's vocabulary; others at the first eos_token_id.
        if self.eos == 2:
            idx = torch.argmax(input_ids.to(torch.int32), dim=-1)
        else:
            idx = torch.argmax((input_ids == self.eos).to(torch.int32), dim=-1)
        idx = idx.reshape(-1, 1, 1).expand(-1, 1, x.shape[2])
        pooled = torch.gather(x, 1, idx).squeeze(1)
        return self.proj(pooled)


class VisionModel(torch.nn.Module):
    """CLIPVisionModelWithProjection: pixel_values (b, C, H, W) -> (b, projection_dim)."""

    def __init__(self, w, cfg, proj_dim):
        super().__init__()
        vc = cfg["vision_config"]
        p = "vision_model"
        eps = vc.get("layer_norm_eps", 1e-5)
        self.patch = vc["patch_size"]
        self.cls = torch.nn.Parameter(w[p + ".embeddings.class_embedding"], requires_grad=False)
        self.patch_w = torch.nn.Parameter(w[p + ".embeddings.patch_embedding.weight"], requires_grad=False)
        self.pos = torch.nn.Parameter(w[p + ".embeddings.position_embedding.weight"], requires_grad=False)
        self.pre_ln = LayerNorm(w, p + ".pre_layrnorm", eps)
        self.layers = torch.nn.ModuleList(
            EncoderLayer(w, "%s.encoder.layers.%d" % (p, i), vc) for i in range(vc["num_hidden_layers"]))
        self.post_ln = LayerNorm(w, p + ".post_layernorm", eps)
        self.proj = Linear(w, "visual_projection", bias=False)
        assert self.proj.weight.shape[0] == proj_dim

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        x = F.conv2d(pixel_values, self.patch_w, stride=self.patch)  # (b, D, gh, gw)
        x = x.flatten(2).transpose(1, 2)                              # (b, patches, D)
        cls = self.cls.reshape(1, 1, -1).expand(b, 1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos.unsqueeze(0)
        x = self.pre_ln(x)
        for layer in self.layers:
            x = layer(x, None)
        pooled = self.post_ln(x[:, 0, :])
        return self.proj(pooled)


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if "text_config" not in cfg or "vision_config" not in cfg:
        raise ValueError("%s: only full CLIPModel folders are supported here" % model_dir)
    w = load_weights(model_dir)
    proj = cfg.get("projection_dim", 512)
    text = TextModel(w, cfg, proj).eval()
    vision = VisionModel(w, cfg, proj).eval()
    return cfg, text, vision


# ------------------------------------------------------------ export


def export(model_dir, out_dir):
    cfg, text, vision = load_model(model_dir)
    os.makedirs(out_dir, exist_ok=True)
    vc = cfg["vision_config"]
    size, ch = vc.get("image_size", 224), vc.get("num_channels", 3)
    eos = cfg["text_config"].get("eos_token_id", 2)
    # example inputs: 2 sequences of 7 ids ending in EOS (49407 is also the largest id)
    ids = torch.tensor([[49406, 320, 1125, 539, 320, 2368, 49407]] * 2, dtype=torch.int64)
    px = torch.zeros(2, ch, size, size, dtype=torch.float32)
    opset = 17  # LayerNormalization; torch 1.13 exports up to 17
    # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript); the
    # TorchScript one, torch 1.13's only, is what we want everywhere
    kw = {"dynamo": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
    with torch.no_grad():
        torch.onnx.export(text, (ids,), os.path.join(out_dir, "text.onnx"),
                          input_names=["input_ids"], output_names=["text_embeds"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                        "text_embeds": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, **kw)
        torch.onnx.export(vision, (px,), os.path.join(out_dir, "vision.onnx"),
                          input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                          opset_version=opset, do_constant_folding=True, **kw)
    meta = {"model_dir": os.path.abspath(model_dir), "opset": opset, "torch": torch.__version__,
            "eos_token_id": eos, "image_size": size, "channels": ch,
            "dim": cfg.get("projection_dim", 512),
            "max_tokens": cfg["text_config"].get("max_position_embeddings", 77)}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    for n in ("text.onnx", "vision.onnx"):
        print("export_onnx: %s (%.1f MB, opset %d)" % (
            os.path.join(out_dir, n), os.path.getsize(os.path.join(out_dir, n)) / 1e6, opset))


# ------------------------------------------------------------ fixture check


def cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def check_fixtures(fix):
    _, text, vision = load_model(os.path.join(fix, "clip-tiny"))
    worst = 1.0
    with open(os.path.join(fix, "text_emb.json")) as f:
        texts = json.load(f)
    with torch.no_grad():
        for t in texts:
            got = text(torch.tensor([t["ids77"]], dtype=torch.int64))[0]
            worst = min(worst, cosine(got, torch.tensor(t["embedding"])))
    print("export_onnx: %d texts, worst cosine %.7f" % (len(texts), worst))
    wt = worst
    worst = 1.0
    with open(os.path.join(fix, "image_emb.json")) as f:
        images = json.load(f)
    with torch.no_grad():
        for im in images:
            with open(os.path.join(fix, "pixels", im["file"] + ".f16"), "rb") as f:
                raw = bytearray(f.read())
            px = torch.frombuffer(raw, dtype=torch.float16).to(torch.float32).reshape(1, 3, 224, 224)
            got = vision(px)[0]
            worst = min(worst, cosine(got, torch.tensor(im["embedding"])))
    print("export_onnx: %d images, worst cosine %.7f" % (len(images), worst))
    return 0 if min(wt, worst) >= 0.9999 else 1


def main(argv):
    if len(argv) == 3 and argv[1] == "--check-fixtures":
        return check_fixtures(argv[2])
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    torch.set_num_threads(2)
    export(argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
