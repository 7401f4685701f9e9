#!/usr/bin/env python3
"""A stand-in ImageFolder of ImageNet-like JPEGs for `infomax bench augment --dataset FOLDER` and
`bench/augment_torch.py`: the colour photographs scikit-image ships, each cut into --per-class
random crops resized to ImageNet's typical 500×375 (or 375×500) and saved as JPEG quality 90, one
class per photograph, under OUT/train/<photo>/.

    pip install scikit-image pillow && python bench/make_photo_folder.py /tmp/photos --per-class 16

With --imagenet100 it writes an ImageNet-100 stand-in instead: OUT/imagenet/ in ILSVRC-2012's
layout with solo-learn's 100 class names (train/<wnid>/*.JPEG, the photographs taken in turn),
and a flat val/ of --val-per-class images per class labelled by a devkit-style
ILSVRC2012_validation_ground_truth.txt, so that `INFOMAX_DATA=OUT infomax … imagenet100` runs.
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
    ap.add_argument("--imagenet100", action="store_true", help="an ImageNet-100 stand-in (see above)")
    ap.add_argument("--val-per-class", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(0)
    photos = [Image.fromarray(np.asarray(getattr(data, n)())).convert("RGB") for n in PHOTOS]

    def shot(photo, path):
        w, h = photo.size
        frac = rng.uniform(0.6, 1.0)
        cw, ch = int(w * frac), int(h * frac)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        size = (500, 375) if rng.random() < 0.7 else (375, 500)
        img = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.BICUBIC)
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img.save(path, quality=90)

    if not args.imagenet100:
        for name, photo in zip(PHOTOS, photos):
            folder = os.path.join(args.out, "train", name)
            os.makedirs(folder, exist_ok=True)
            for k in range(args.per_class):
                shot(photo, os.path.join(folder, f"{name}_{k:03}.JPEG"))
        print(f"{len(PHOTOS) * args.per_class} JPEGs in {len(PHOTOS)} classes under {os.path.join(args.out, 'train')}")
        return
    lists = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "data", "src", "imagenet")
    wnids = sorted(open(os.path.join(lists, "imagenet100_classes.txt")).read().split())
    devkit = open(os.path.join(lists, "devkit_classes.txt")).read().split()
    root = os.path.join(args.out, "imagenet")
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    truth, k = [], 0
    for c, wnid in enumerate(wnids):
        folder = os.path.join(root, "train", wnid)
        os.makedirs(folder, exist_ok=True)
        for i in range(args.per_class):
            shot(photos[c % len(photos)], os.path.join(folder, f"{wnid}_{i}.JPEG"))
        for _ in range(args.val_per_class):
            k += 1
            shot(photos[c % len(photos)], os.path.join(root, "val", f"ILSVRC2012_val_{k:08}.JPEG"))
            truth.append(str(devkit.index(wnid) + 1))
    with open(os.path.join(root, "ILSVRC2012_validation_ground_truth.txt"), "w") as f:
        f.write("\n".join(truth) + "\n")
    print(f"ImageNet-100 stand-in: {len(wnids) * args.per_class} training and {k} validation JPEGs under {root}")


if __name__ == "__main__":
    main()
