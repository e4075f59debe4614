"""safetensors_io — the safetensors reader and writer the benchmark exporters
share (tools/bench/export_onnx.py, export_bert.py, export_use.py): plain
struct + json + torch, so Debian's python3-torch is the only dependency."""
import json
import os
import struct

import torch

_DTYPES = {
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "F64": (torch.float64, 8),
}


def read_safetensors(path, out):
    """Adds every tensor of one safetensors file to `out` as f32."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + hlen].decode("utf-8"))
    base = 8 + hlen
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] not in _DTYPES:
            raise ValueError("%s: %s: unsupported dtype %s" % (path, name, meta["dtype"]))
        dtype, size = _DTYPES[meta["dtype"]]
        start, end = meta["data_offsets"]
        shape = meta["shape"]
        numel = 1
        for d in shape:
            numel *= d
        if end - start != numel * size:
            raise ValueError("%s: %s: data_offsets do not match shape" % (path, name))
        if numel == 0:
            t = torch.zeros(shape, dtype=torch.float32)
        else:
            t = torch.frombuffer(bytearray(data[base + start:base + end]), dtype=dtype)
            t = t.to(torch.float32).reshape(shape)
        out[name] = t
    return out


def load_weights(model_dir):
    single = os.path.join(model_dir, "model.safetensors")
    index = os.path.join(model_dir, "model.safetensors.index.json")
    w = {}
    if os.path.exists(single):
        read_safetensors(single, w)
    elif os.path.exists(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        for s in shards:
            read_safetensors(os.path.join(model_dir, s), w)
    else:
        raise FileNotFoundError("%s: no model.safetensors or index" % model_dir)
    return w


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        b = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((8 - len(h) % 8) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
