#!/usr/bin/python3
"""export_bert — the model side of tools/bench/bench_text.sh: a random-weight
BERT with the shape of sentence-transformers/all-MiniLM-L6-v2 (vocab 30522,
hidden 384, 6 layers, 12 heads, FFN 1536, 512 positions, 2 token types,
erf GELU, LayerNorm eps 1e-12, mean pooling), written as plain PyTorch
modules (post-LN BertModel, as in Hugging Face modeling_bert.py), saved as

  MODEL_DIR/config.json          BertModel config that src/model/bert.c reads
  MODEL_DIR/model.safetensors    f32, Hugging Face tensor names (no pooler:
                                 the sentence embedding never reads it)
  ONNX_FILE                      input_ids int64 [B, T], attention_mask int64
                                 [B, T] (dynamic B, T) -> pooled f32 [B, 384]:
                                 mean of the last hidden states over the mask

Only torch is needed (Debian bookworm python3-torch 1.13; its exporter does
not need the `onnx` package). The safetensors writer is ours.

  usage: /usr/bin/python3 tools/bench/export_bert.py MODEL_DIR ONNX_FILE [--seed N]
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_io import write_safetensors

CONFIG = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "torch_dtype": "float32",
}


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        H = c["hidden_size"]
        self.word_embeddings = nn.Embedding(c["vocab_size"], H)
        self.position_embeddings = nn.Embedding(c["max_position_embeddings"], H)
        self.token_type_embeddings = nn.Embedding(c["type_vocab_size"], H)
        self.LayerNorm = nn.LayerNorm(H, eps=c["layer_norm_eps"])

    def forward(self, ids):
        T = ids.shape[1]
        pos = torch.arange(T, device=ids.device).unsqueeze(0)
        x = self.word_embeddings(ids) + self.position_embeddings(pos) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class SelfAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        H = c["hidden_size"]
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)


class DenseLN(nn.Module):
    def __init__(self, c, n_in):
        super().__init__()
        H = c["hidden_size"]
        self.dense = nn.Linear(n_in, H)
        self.LayerNorm = nn.LayerNorm(H, eps=c["layer_norm_eps"])

    def forward(self, h, resid):
        return self.LayerNorm(self.dense(h) + resid)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = SelfAttn(c)
        self.output = DenseLN(c, c["hidden_size"])
        self.heads = c["num_attention_heads"]

    def forward(self, x, add_mask):
        B, T, H = x.shape
        nh = self.heads
        hd = H // nh

        def split(t):
            return t.view(B, T, nh, hd).transpose(1, 2)

        q, k, v = split(self.self.query(x)), split(self.self.key(x)), split(self.self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd) + add_mask
        ctx = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B, T, H)
        return self.output(ctx, x)


class Intermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"])

    def forward(self, x):
        return F.gelu(self.dense(x))  # erf GELU ("gelu")


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = DenseLN(c, c["intermediate_size"])

    def forward(self, x, add_mask):
        a = self.attention(x, add_mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])


class Bert(nn.Module):
    """BertModel + sentence-transformers mean pooling over attention_mask."""

    def __init__(self, c):
        super().__init__()
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)

    def forward(self, input_ids, attention_mask):
        m = attention_mask.to(torch.float32)                  # [B, T]
        add_mask = ((1.0 - m) * -10000.0)[:, None, None, :]   # [B, 1, 1, T]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, add_mask)
        s = (x * m.unsqueeze(-1)).sum(dim=1)
        return s / m.sum(dim=1, keepdim=True).clamp(min=1e-9)


def init_random(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("LayerNorm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("LayerNorm.bias") or name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def main():
    args = sys.argv[1:]
    seed = 1234
    if "--seed" in args:
        i = args.index("--seed")
        seed = int(args[i + 1])
        del args[i:i + 2]
    if len(args) != 2:
        sys.stderr.write(__doc__)
        sys.exit(2)
    model_dir, onnx_file = args
    torch.set_grad_enabled(False)
    model = Bert(CONFIG).eval()
    init_random(model, seed)

    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
        f.write("\n")
    write_safetensors(os.path.join(model_dir, "model.safetensors"), dict(model.state_dict()))
    print("export_bert: wrote %s (config.json, model.safetensors)" % model_dir, file=sys.stderr)

    os.makedirs(os.path.dirname(onnx_file) or ".", exist_ok=True)
    ids = torch.randint(1000, 30000, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    tmp = onnx_file + ".tmp"
    # torch >= 2.9 defaults to the dynamo exporter (needs onnxscript); the
    # TorchScript one (torch 1.13's only) is what export_onnx.py uses too
    kw = {"dynamo": False} if int(torch.__version__.split(".")[0]) >= 2 else {}
    torch.onnx.export(model, (ids, mask), tmp, input_names=["input_ids", "attention_mask"],
                      output_names=["pooled"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"},
                                    "pooled": {0: "batch"}},
                      opset_version=17, do_constant_folding=True, **kw)
    os.replace(tmp, onnx_file)
    print("export_bert: wrote %s" % onnx_file, file=sys.stderr)


if __name__ == "__main__":
    main()
