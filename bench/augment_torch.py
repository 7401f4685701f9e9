#!/usr/bin/env python3
"""torchvision's view of `infomax bench augment --dataset FOLDER`: the same images decoded from
their files for every batch, the FAIR pipeline (Barlow Twins' and VICReg's: RandomResizedCrop
bicubic 0.08-1, flip 0.5, colour jitter 0.4/0.4/0.2/0.1 with p 0.8, greyscale 0.2, Gaussian blur
σ 0.1-2 and solarisation with the view's probabilities, ToTensor, Normalize) at --size pixels,
PIL for the pixels as the authors' loaders use it, one process on one thread.

Optional: only the benchmark comparison needs torch and torchvision (`PYTHON=venv/bin/python`).

    python bench/augment_torch.py DATA/FOLDER --size 224 --batch 64 --views 2 --batches 5
"""
import argparse
import json
import os
import time

import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision import transforms as T


class Blur:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if torch.rand(1).item() < self.p:
            sigma = 0.1 + torch.rand(1).item() * 1.9
            return img.filter(ImageFilter.GaussianBlur(radius=sigma))
        return img


class Solarize:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if torch.rand(1).item() < self.p else img


def pipeline(size, blur_p, solarize_p):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(0.5),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(0.2),
        Blur(blur_p),
        Solarize(solarize_p),
        T.ToTensor(),
        T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="an ImageFolder: its train/<class>/ images are read")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    train = os.path.join(args.folder, "train")
    files = sorted(
        os.path.join(root, f)
        for root, _, names in os.walk(train)
        for f in names
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    if not files:
        raise SystemExit(f"{train}: no .jpg, .jpeg or .png files")
    files = [files[i % len(files)] for i in range(args.batch)]
    # The FAIR pair: view A blurs always and never solarises, view B blurs with p 0.1 and
    # solarises with p 0.2 (infomax's `fair` preset).
    views = [pipeline(args.size, 1.0, 0.0), pipeline(args.size, 0.1, 0.2)]

    def batch():
        out = []
        for f in files:
            with Image.open(f) as im:
                img = im.convert("RGB")
            out.extend(views[v % 2](img) for v in range(args.views))
        return out

    batch()  # warm-up, as infomax's bench
    started = time.perf_counter()
    for _ in range(args.batches):
        batch()
    seconds = time.perf_counter() - started
    rate = args.batches * args.batch * args.views / seconds
    result = {"framework": "torchvision", "torchvision": __import__("torchvision").__version__,
              "pillow": Image.__version__, "view_side": args.size, "views_per_second": rate, "threads": 1}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"torchvision {result['torchvision']} (Pillow {result['pillow']}), FAIR pipeline, files decoded per "
              f"batch → {args.size} px views, batch {args.batch} × {args.views} views: {rate:.1f} views/s on 1 thread")


if __name__ == "__main__":
    main()
