#!/usr/bin/python3
"""export_use — the ONNX side of tools/bench/bench_use.sh: Universal Sentence
Encoder Lite rebuilt in plain PyTorch from the converted weights in
models/use-lite (config.json + model.safetensors, read by our own small
safetensors parser), op by op as the comment at the top of src/model/use.c
describes it, exported to ONNX:

  input_ids int64 [B, T], attention_mask int64 [B, T] (dynamic B, T; dense
  padded form, 1 = real token) -> embedding f32 [B, 512] (L2-normalized)

  x0   = e + (e + [sin(p * inv_ts), cos(p * inv_ts)])   e = Embeddings[id]
  per layer (pre-LN, eps inside the sqrt, ReLU FFN, 4 heads):
    h = LN(x); q, k, v = split(h Wqkv + b); q *= query_scale
    s = q k^T + (-1e9 * !mask); o = softmax(s) v; y = o Wout + b
    x1 = y + (layer 0: x Wres + b; else x)
    x  = x1 + relu(LN(x1) Wup + b) Wdown + b
  pooled = sum(x * mask) / max(len, 1); z = tanh(pooled Wp + b)
  out = z * rsqrt(max(sum(z^2), l2_eps))

Only torch is needed (Debian python3-torch 1.13; no `onnx` package).

  usage: /usr/bin/python3 tools/bench/export_use.py MODEL_DIR ONNX_FILE
"""
import json
import os
import sys

import torch
import torch.nn as nn

from safetensors_io import load_weights


class Layer(nn.Module):
    def __init__(self, lc, w, prefix, eps):
        super().__init__()
        self.d_in, self.heads, self.hd = lc["d_in"], lc["heads"], lc["head_dim"]
        self.q_scale = float(lc["query_scale"])
        self.res_proj = bool(lc["residual_projection"])
        self.eps = eps
        P = lambda s: nn.Parameter(w[prefix + s], requires_grad=False)
        self.an_w, self.an_b = P("attn_norm.weight"), P("attn_norm.bias")
        self.qkv_w, self.qkv_b = P("qkv.weight"), P("qkv.bias")
        self.out_w, self.out_b = P("attn_out.weight"), P("attn_out.bias")
        if self.res_proj:
            self.res_w, self.res_b = P("residual.weight"), P("residual.bias")
        self.fn_w, self.fn_b = P("ffn_norm.weight"), P("ffn_norm.bias")
        self.up_w, self.up_b = P("ffn_up.weight"), P("ffn_up.bias")
        self.down_w, self.down_b = P("ffn_down.weight"), P("ffn_down.bias")

    def ln(self, x, w, b):
        mu = x.mean(dim=-1, keepdim=True)
        d = x - mu
        var = (d * d).mean(dim=-1, keepdim=True)
        return d * torch.rsqrt(var + self.eps) * w + b

    def forward(self, x, add_mask):
        B, T, _ = x.shape
        D, nh, hd = self.d_in, self.heads, self.hd
        h = self.ln(x, self.an_w, self.an_b)
        qkv = torch.matmul(h, self.qkv_w.t()) + self.qkv_b
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        split = lambda t: t.reshape(B, T, nh, hd).transpose(1, 2)
        q, k, v = split(q) * self.q_scale, split(k), split(v)
        s = torch.matmul(q, k.transpose(-1, -2)) + add_mask
        o = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B, T, D)
        y = torch.matmul(o, self.out_w.t()) + self.out_b
        r = torch.matmul(x, self.res_w.t()) + self.res_b if self.res_proj else x
        x1 = y + r
        h2 = self.ln(x1, self.fn_w, self.fn_b)
        f = torch.relu(torch.matmul(h2, self.up_w.t()) + self.up_b)
        f = torch.matmul(f, self.down_w.t()) + self.down_b
        return f + x1


class USELite(nn.Module):
    def __init__(self, cfg, w):
        super().__init__()
        self.emb = nn.Parameter(w["embeddings.weight"], requires_grad=False)
        self.inv_ts = nn.Parameter(w["timing.inv_timescales"], requires_grad=False)
        eps = float(cfg["layer_norm_eps"])
        self.layers = nn.ModuleList([Layer(lc, w, "layers.%d." % i, eps) for i, lc in enumerate(cfg["layers"])])
        self.pool_w = nn.Parameter(w["pooler.weight"], requires_grad=False)
        self.pool_b = nn.Parameter(w["pooler.bias"], requires_grad=False)
        self.mask_bias = float(cfg["attention_mask_bias"])
        self.l2_eps = float(cfg["l2_normalize_eps"])

    def forward(self, input_ids, attention_mask):
        T = input_ids.shape[1]
        m = attention_mask.to(torch.float32)                     # [B, T]
        e = self.emb[input_ids] * m.unsqueeze(-1)                # [B, T, 256], 0 on padding
        p = torch.arange(T, device=input_ids.device).to(torch.float32)
        a = p[:, None] * self.inv_ts[None, :]                    # [T, 128]
        t = torch.cat([torch.sin(a), torch.cos(a)], dim=1)       # [T, 256]
        x = e + (e + t.unsqueeze(0)) * m.unsqueeze(-1)
        add_mask = ((1.0 - m) * self.mask_bias)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, add_mask)
        n = m.sum(dim=1, keepdim=True)
        pooled = (x * m.unsqueeze(-1)).sum(dim=1) / torch.clamp(n, min=1.0)
        z = torch.tanh(torch.matmul(pooled, self.pool_w.t()) + self.pool_b)
        return z * torch.rsqrt(torch.clamp((z * z).sum(dim=-1, keepdim=True), min=self.l2_eps))


def main():
    if len(sys.argv) != 3:
        sys.stderr.write(__doc__)
        sys.exit(2)
    model_dir, onnx_file = sys.argv[1:]
    torch.set_grad_enabled(False)
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("architecture") != "USELite":
        raise SystemExit("export_use: %s is not a USELite config" % model_dir)
    w = load_weights(model_dir)
    model = USELite(cfg, w).eval()

    os.makedirs(os.path.dirname(onnx_file) or ".", exist_ok=True)
    ids = torch.randint(10, 8000, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[1, 10:] = 0
    tmp = onnx_file + ".tmp"
    torch.onnx.export(model, (ids, mask), tmp, input_names=["input_ids", "attention_mask"],
                      output_names=["embedding"],
                      dynamic_axes={"input_ids": {0: "batch", 1: "seq"},
                                    "attention_mask": {0: "batch", 1: "seq"},
                                    "embedding": {0: "batch"}},
                      opset_version=17, do_constant_folding=True)
    os.replace(tmp, onnx_file)
    print("export_use: wrote %s" % onnx_file, file=sys.stderr)


if __name__ == "__main__":
    main()
