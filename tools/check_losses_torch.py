#!/usr/bin/env python3
"""Cross-check `infomax loss` against PyTorch on random embeddings: value and gradient of every
method's loss, written from the authors' published formulas with torch's autograd and
torch.linalg (cholesky, solve_triangular) doing the differentiation.

Needs PyTorch and NumPy (never needed by the build, the tests or CI). Usage:

    python3 tools/check_losses_torch.py [--infomax target/release/infomax] [--n 64] [--d 16]

Prints one line per case with the relative errors of the loss and the gradients, and exits
non-zero if a loss differs by more than 1e-9 (both sides compute in float64) or a gradient by
more than 1e-6 (infomax writes gradients as float32).
"""
import argparse
import itertools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def barlow_twins(views, lam=0.0051):
    a, b = views
    n = a.shape[0]
    std = lambda z: (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    c = std(a).T @ std(b) / n
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c ** 2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + lam * off


def vicreg(views, sim=25.0, std_c=25.0, cov_c=1.0):
    a, b = views
    n, d = a.shape
    inv = F.mse_loss(a, b)
    std = lambda z: torch.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()
    var = (std(a) + std(b)) / 2

    def cov(z):
        zc = z - z.mean(0)
        c = zc.T @ zc / (n - 1)
        return ((c ** 2).sum() - (torch.diagonal(c) ** 2).sum()) / d

    return sim * inv + std_c * var + cov_c * (cov(a) + cov(b))


def whiten(v, eps=0.0):
    m = v.mean(0, keepdim=True)
    vc = v - m
    cov = vc.T @ vc / (v.shape[0] - 1)
    eye = torch.eye(v.shape[1], dtype=v.dtype)
    l = torch.linalg.cholesky((1 - eps) * cov + eps * eye)
    w = torch.linalg.solve_triangular(l, eye, upper=False)
    return vc @ w.T


def norm_mse(x, y):
    return 2 - 2 * (F.normalize(x, dim=1) * F.normalize(y, dim=1)).sum(1).mean()


def wmse(views, w_size, perms, eps=0.0):
    total, count = 0.0, 0
    for perm in perms:
        z = [torch.empty_like(v) for v in views]
        for idx in perm.reshape(-1, w_size):
            idx = torch.as_tensor(idx)
            for i, v in enumerate(views):
                z[i][idx] = whiten(v[idx], eps)
        for i, j in itertools.combinations(range(len(views)), 2):
            total = total + norm_mse(z[i], z[j])
            count += 1
    return total / count


def nt_xent(a, b, tau):
    n = a.shape[0]
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    mask = torch.eye(n, dtype=a.dtype) * 1e9
    target = torch.arange(n)
    l_ab, l_ba = a @ b.T / tau, b @ a.T / tau
    l_aa, l_bb = a @ a.T / tau - mask, b @ b.T / tau - mask
    return (F.cross_entropy(torch.cat([l_ab, l_aa], 1), target) + F.cross_entropy(torch.cat([l_ba, l_bb], 1), target)) / 2


def simclr(views, tau=0.5):
    pairs = list(itertools.combinations(range(len(views)), 2))
    return sum(nt_xent(views[i], views[j], tau) for i, j in pairs) / len(pairs)


def byol(views):
    k = len(views) // 2
    p, z = views[:k], [t.detach() for t in views[k:]]
    if k == 1:
        return norm_mse(p[0], z[0])
    pairs = list(itertools.combinations(range(k), 2))
    return sum(norm_mse(p[i], z[j]) + norm_mse(p[j], z[i]) for i, j in pairs) / len(pairs)


def simsiam(views):
    k = len(views) // 2
    p, z = views[:k], [t.detach() for t in views[k:]]
    neg_cos = lambda a, b: -(F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1).mean()
    if k == 1:
        return neg_cos(p[0], z[0])
    pairs = list(itertools.combinations(range(k), 2))
    return sum(neg_cos(p[i], z[j]) + neg_cos(p[j], z[i]) for i, j in pairs) / (2 * len(pairs))


def infomax_loss(binary, method, paths, sets, out):
    args = [binary, "loss", "--method", method, "--views", *map(str, paths), "--json", "--grad-out", str(out)]
    for s in sets:
        args += ["--set", s]
    res = subprocess.run(args, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"infomax failed: {res.stderr}")
    loss = json.loads(res.stdout)["loss"]
    grads = [np.load(out / f"grad_{i}.npy") for i in range(len(paths))]
    return loss, grads


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--infomax", default="target/release/infomax")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--d", type=int, default=16)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, d = args.n, args.d
    w_size = n // 2
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def case(name, method, k, reference, sets=()):
            nonlocal worst
            arrays = [rng.standard_normal((n, d)) for _ in range(k)]
            if method in ("byol", "simsiam"):
                arrays[k // 2:] = [a + 0.3 * rng.standard_normal((n, d)) for a in arrays[: k // 2]]
            folder = tmp / f"case{len(list(tmp.iterdir()))}"
            folder.mkdir()
            paths = []
            for i, a in enumerate(arrays):
                paths.append(folder / f"view_{i}.npy")
                np.save(paths[-1], a)
            ours, our_grads = infomax_loss(args.infomax, method, paths, sets, folder / "grads")
            views = [torch.tensor(a, requires_grad=True) for a in arrays]
            loss = reference(views)
            loss.backward()
            loss_err = abs(ours - loss.item()) / max(1.0, abs(loss.item()))
            grad_err = 0.0
            for v, g in zip(views, our_grads):
                want = v.grad.numpy() if v.grad is not None else np.zeros_like(g)
                # Ours are written in float32: compare at that precision.
                grad_err = max(grad_err, float(np.abs(g - want).max() / max(1e-12, np.abs(want).max(), 1e-3)))
            worst = max(worst, loss_err / 1e-9, grad_err / 1e-6)
            print(f"{name:28s} loss ours {ours:.10f} torch {loss.item():.10f}  rel err {loss_err:.1e}  grad rel err {grad_err:.1e} (float32 files)")

        case("barlow-twins", "barlow-twins", 2, barlow_twins)
        case("vicreg", "vicreg", 2, vicreg)
        case("simclr tau 0.5", "simclr", 2, simclr)
        case("simclr tau 0.2, 3 views", "simclr", 3, lambda v: simclr(v, 0.2), ["tau=0.2"])
        case("byol [p, z]", "byol", 2, byol)
        case("byol [p1, p2, z1, z2]", "byol", 4, byol)
        case("simsiam [p1, p2, z1, z2]", "simsiam", 4, simsiam)
        # W-MSE: `permute=0` makes the sub-batches consecutive rows, which torch can reproduce.
        case("w-mse 2 views, w_size N", "w-mse", 2, lambda v: wmse(v, n, [np.arange(n)]))
        case("w-mse 2 views, w_size N/2", "w-mse", 2, lambda v: wmse(v, w_size, [np.arange(n)]),
             [f"w_size={w_size}", "permute=0"])
        case("w-mse 4 views, N/2, w_iter 2", "w-mse", 4, lambda v: wmse(v, w_size, [np.arange(n)] * 2),
             [f"w_size={w_size}", "w_iter=2", "permute=0"])
        case("w-mse 4 views, w_size N", "w-mse", 4, lambda v: wmse(v, n, [np.arange(n)]))
        case("w-mse eps 0.1, w_size N", "w-mse", 2, lambda v: wmse(v, n, [np.arange(n)], 0.1), ["eps=0.1"])
    print(f"worst error as a fraction of its tolerance: {worst:.2f}")
    sys.exit(0 if worst <= 1.0 else 1)


if __name__ == "__main__":
    main()
