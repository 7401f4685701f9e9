#!/usr/bin/env python3
"""A stand-in ImageFolder of ImageNet-like JPEGs for `infomax bench augment --dataset FOLDER` and
`bench/augment_torch.py`: the colour photographs scikit-image ships, each cut into --per-class
random crops resized to ImageNet's typical 500×375 (or 375×500) and saved as JPEG quality 90, one
class per photograph, under OUT/train/<photo>/.

    pip install scikit-image pillow && python bench/make_photo_folder.py /tmp/photos --per-class 16
"""
import argparse
import os
import random

import numpy as np
from PIL import Image
import skimage.data as data

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "hubble_deep_field"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=16)
    args = ap.parse_args()
    rng = random.Random(0)
    for name in PHOTOS:
        photo = Image.fromarray(np.asarray(getattr(data, name)())).convert("RGB")
        folder = os.path.join(args.out, "train", name)
        os.makedirs(folder, exist_ok=True)
        w, h = photo.size
        for k in range(args.per_class):
            frac = rng.uniform(0.6, 1.0)
            cw, ch = int(w * frac), int(h * frac)
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            size = (500, 375) if rng.random() < 0.7 else (375, 500)
            img = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img.save(os.path.join(folder, f"{name}_{k:03}.JPEG"), quality=90)
    print(f"{len(PHOTOS) * args.per_class} JPEGs in {len(PHOTOS)} classes under {os.path.join(args.out, 'train')}")


if __name__ == "__main__":
    main()
