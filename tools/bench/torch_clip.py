"""PyTorch peer of gpu_clip's bench (same GPU, same run): Hugging Face
CLIPModel in f16 and bf16, eager, timed the way gpu_clip times ours: f32
pixels from pinned host memory up, forward, vectors down.

    python3 torch_clip.py MODELDIR [--batches 1,8,64,256] [--secs 0.5]
"""
import argparse
import time

import torch
from transformers import CLIPModel


def timed(fn, secs):
    fn()
    torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        torch.cuda.synchronize()
        n += 1
        t = time.perf_counter()
        if n >= 3 and t - t0 >= secs:
            return (t - t0) * 1e3 / n


def feats(x):
    return x if torch.is_tensor(x) else x.pooler_output


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,8,64,256")
    ap.add_argument("--secs", type=float, default=0.5)
    a = ap.parse_args()
    bs = [int(b) for b in a.batches.split(",")]
    for name, dt in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        try:
            m = CLIPModel.from_pretrained(a.model, dtype=dt)
        except TypeError:
            m = CLIPModel.from_pretrained(a.model, torch_dtype=dt)
        m = m.cuda().eval()
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for b in bs + [512]:
                ids = torch.randint(256, 40000, (b, 16), generator=g)
                ids[:, 0], ids[:, -1] = 49406, 49407
                ids = ids.cuda()
                mt = timed(lambda: feats(m.get_text_features(input_ids=ids)).float().cpu(), a.secs)
                if b == 512:
                    print(f"RESULT torch-{name} batch  512: texts16 {mt:8.3f} ms ({512e3 / mt:9.1f}/s)", flush=True)
                    continue
                px = torch.randn(b, 3, 224, 224, generator=g).pin_memory()
                mi = timed(lambda: feats(m.get_image_features(
                    pixel_values=px.cuda(non_blocking=True).to(dt))).float().cpu(), a.secs)
                print(f"RESULT torch-{name} batch {b:4d}: images {mi:8.3f} ms ({b * 1e3 / mi:8.1f}/s)  "
                      f"texts16 {mt:8.3f} ms ({b * 1e3 / mt:9.1f}/s)", flush=True)
        del m
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
