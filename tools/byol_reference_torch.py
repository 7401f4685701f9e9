#!/usr/bin/env python3
"""BYOL's smoke recipe (experiments/byol.toml, profile smoke) in PyTorch, for comparing what the
method does at that budget: does the reference learn more than infomax in the same 160 steps?

Same recipe as infomax's: ResNet-18 at a width multiplier with the small-image stem (the network
of bench/torch_step.py, torchvision's init), the W-MSE authors' head and predictor (Linear -> BN ->
ReLU -> Linear, 1024 -> 64, biases), their symmetric loss sum over both directions of
2 - 2 cos(p, sg z'), the EMA target with tau = 1 - (1 - 0.99)(cos(pi k/K) + 1)/2 after every
step, Adam 3e-3 with L2 1e-6, warmed up as lr * k / 10 over the first 10 steps (from 0, as
infomax's schedule) then a cosine to 0; the W-MSE augmentations
(ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale 0.1, RandomResizedCrop(32, (0.2, 1), bicubic),
flip); the first 10,240 training images; 200-NN (cosine, votes exp(sim / 0.1)) on frozen
eval-mode features, bank = first 10,000 training images, queries = first 2,000 test images,
before and after training; the collapse diagnostics (effective rank, normalised std) of the
online projections of the first view, averaged over each epoch's steps as infomax records them.

    python3 tools/byol_reference_torch.py --data ../shared/datasets [--epochs 2] [--width 0.25]

With --views FILE.npy it trains on infomax's own augmented views instead of torchvision's: the
array `infomax datasets preview cifar10 --experiment byol --profile smoke --seed S --npy FILE.npy`
writes (epochs, images, views, 3, 32, 32), normalised as infomax feeds them. Everything else (the
order of the images, the network, the optimiser) stays this script's, so comparing the two runs
separates the augmentation pipeline from the training step.

Needs torch, torchvision and numpy; never needed by infomax's build, tests or CI.
"""

import argparse
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2 as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from torch_step import ResNet18  # noqa: E402

# The W-MSE code's CIFAR-10 normalisation (docs/methods.md#normalisation-and-evaluation-images), as infomax's cifar10 dataset uses.
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def load_cifar10(root):
    d = os.path.join(root, "cifar-10-batches-bin")

    def read(names):
        raw = np.concatenate([np.fromfile(os.path.join(d, n), dtype=np.uint8) for n in names]).reshape(-1, 3073)
        return torch.from_numpy(raw[:, 1:].reshape(-1, 3, 32, 32).copy()), torch.from_numpy(raw[:, 0].astype(np.int64))

    return read([f"data_batch_{i}.bin" for i in range(1, 6)]), read(["test_batch.bin"])


def mlp(cin, hidden, out):
    return nn.Sequential(nn.Linear(cin, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def init_torchvision(m):
    for mod in m.modules():
        if isinstance(mod, nn.Conv2d):
            nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(mod.weight)
            nn.init.zeros_(mod.bias)


def norm_mse(p, z):
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)).mean()


@torch.no_grad()
def features(encoder, images):
    encoder.eval()
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    out = [encoder((images[i : i + 500].float() / 255 - mean) / std) for i in range(0, len(images), 500)]
    encoder.train()
    return F.normalize(torch.cat(out), dim=1)


def effective_rank(z):
    """exp of the entropy of the normalised singular values (infomax's diag.effective_rank)."""
    s = torch.linalg.svdvals(z.detach().double())
    p = s / s.sum()
    return torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item()


def normalised_std(z):
    """Mean per-dimension std of the L2-normalised rows (infomax's diag.embedding_std)."""
    return F.normalize(z.detach(), dim=1).std(dim=0).mean().item()


def knn200(bank, bank_labels, queries, query_labels, k=200, t=0.1):
    sims, idx = (queries @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(queries), 10).scatter_add_(1, bank_labels[idx], (sims / t).exp())
    return (votes.argmax(1) == query_labels).float().mean().item() * 100


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("INFOMAX_DATA", "datasets"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-images", type=int, default=10240)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup-steps", type=int, default=10)
    ap.add_argument("--tau-base", type=float, default=0.99)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--views", help="train on these infomax views (.npy: epochs, images, views, 3, H, W)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)

    (train_x, train_y), (test_x, test_y) = load_cifar10(a.data)
    pre = train_x[: a.train_images]
    bank_x, bank_y, query_x, query_y = train_x[:10000], train_y[:10000], test_x[:2000], test_y[:2000]

    encoder = ResNet18(a.width)
    init_torchvision(encoder)
    head = mlp(encoder.output_dim, 1024, 64)
    predictor = mlp(64, 1024, 64)
    target = nn.Sequential(ResNet18(a.width), mlp(encoder.output_dim, 1024, 64))
    target[0].load_state_dict(encoder.state_dict())
    target[1].load_state_dict(head.state_dict())
    for p in target.parameters():
        p.requires_grad_(False)
    online = list(encoder.parameters()) + list(head.parameters()) + list(predictor.parameters())
    opt = torch.optim.Adam(online, lr=a.lr, weight_decay=1e-6)

    augment = T.Compose(
        [
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(0.1),
            T.RandomResizedCrop(32, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.RandomHorizontalFlip(),
        ]
    )
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    given = np.load(a.views, mmap_mode="r") if a.views else None
    if given is not None:
        want = (a.epochs, a.train_images, 2)
        if tuple(given.shape[:3]) != want:
            sys.exit(f"{a.views}: views of shape {given.shape}, expected {want} + (3, H, W)")

    def views(indices, epoch):
        if given is not None:
            rows = np.sort(indices.numpy())
            picked = torch.from_numpy(np.ascontiguousarray(given[epoch - 1, rows]))
            return [picked[:, 0], picked[:, 1]]
        batch = pre[indices]
        return [(torch.stack([augment(img) for img in batch]).float() / 255 - mean) / std for _ in range(2)]

    print(f"epoch 0: 200-NN top-1 {knn200(features(encoder, bank_x), bank_y, features(encoder, query_x), query_y):.2f} %")
    steps_per_epoch = len(pre) // a.batch
    total = a.epochs * steps_per_epoch
    step = 0
    for epoch in range(1, a.epochs + 1):
        order = torch.randperm(len(pre))
        start, loss_sum, rank_sum, std_sum = time.time(), 0.0, 0.0, 0.0
        for s in range(steps_per_epoch):
            lr = a.lr * step / a.warmup_steps if step < a.warmup_steps else (
                a.lr * 0.5 * (1 + math.cos(math.pi * (step - a.warmup_steps) / max(1, total - a.warmup_steps)))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            v = views(order[s * a.batch : (s + 1) * a.batch], epoch)
            z = [head(encoder(x)) for x in v]
            p = [predictor(x) for x in z]
            with torch.no_grad():
                zt = [target(x) for x in v]
            loss = norm_mse(p[0], zt[1]) + norm_mse(p[1], zt[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            tau = 1 - (1 - a.tau_base) * (math.cos(math.pi * step / total) + 1) / 2
            with torch.no_grad():
                for t, o in zip(target.parameters(), list(encoder.parameters()) + list(head.parameters())):
                    t.mul_(tau).add_(o, alpha=1 - tau)
            loss_sum += loss.item()
            rank_sum += effective_rank(z[0])
            std_sum += normalised_std(z[0])
        acc = knn200(features(encoder, bank_x), bank_y, features(encoder, query_x), query_y)
        print(
            f"epoch {epoch}/{a.epochs}: loss {loss_sum / steps_per_epoch:.4f}, "
            f"effective rank {rank_sum / steps_per_epoch:.1f}, std {std_sum / steps_per_epoch:.3f}, "
            f"{steps_per_epoch * a.batch / (time.time() - start):.1f} img/s; 200-NN top-1 {acc:.2f} %",
            flush=True,
        )


if __name__ == "__main__":
    main()
