#!/usr/bin/env python3
"""Replay the steps of `infomax bench train-step --trace DIR` in PyTorch and compare.

    target/release/infomax bench train-step --method byol --width 0.25 --batch 32 \\
        --warmup 1 --steps 3 --trace /tmp/trace
    python3 tools/step_reference_torch.py /tmp/trace

PyTorch starts from infomax's initial weights (`initial.safetensors`, loaded strictly by name)
and takes the same steps on the same views (`views.safetensors`) with the configuration infomax
wrote (`trace.json`): the ResNet of the run's architecture (torchvision's BasicBlock, or its
Bottleneck for ResNet-50), width and stem, the projector and predictor as the
W-MSE authors build them (Linear -> BN -> ReLU -> Linear), BYOL's symmetric loss
sum_{i<j} [l(p_i, sg z'_j) + l(p_j, sg z'_i)] / (d(d-1)/2) with l = mean(2 - 2 cos), Adam with L2
weight decay (torch.optim.Adam), and the EMA target moved after every step at infomax's tau.
PyTorch runs in f64 (the reference) and in f32 (the yardstick: on the views as they are and on
three copies perturbed at 1e-6; W-MSE's whitening makes later steps that sensitive). It prints the loss of every step,
the largest first-step gradient errors and the error of what the steps changed in the online and
target networks (BatchNorm running statistics included), and exits 1 beyond the limits at the
end of the file.

BYOL, SimCLR (the W-MSE authors' NT-Xent) and W-MSE (whitening of the whole batch: w_size = N,
w_iter 1, since infomax draws its sub-batches with its own generator) are replayed: the Adam methods
of the W-MSE paper's table. The LARS and SGD methods are refused.
Needs torch and safetensors; never needed by infomax's build, tests or CI.
"""

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from torch_step import BasicBlock  # noqa: E402  (torchvision's block and names)
from torchvision.models.resnet import Bottleneck  # noqa: E402


class ResNet(nn.Module):
    """torchvision's ResNet-18/34/50 layout and parameter names, at a width multiplier."""

    def __init__(self, enc):
        super().__init__()
        depth = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3]}[enc["arch"]]
        bottleneck = enc["arch"] == "resnet50"
        widths = [max(1, round(c * enc["width"])) for c in (64, 128, 256, 512)]
        k, stride = (3, 1) if enc["small_stem"] else (7, 2)
        padding = enc.get("stem_padding")
        self.conv1 = nn.Conv2d(3, widths[0], k, stride, k // 2 if padding is None else padding, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1) if enc["max_pool"] else nn.Identity()
        cin = widths[0]
        for s, (cout, n) in enumerate(zip(widths, depth)):
            blocks = []
            for b in range(n):
                stride = 2 if s > 0 and b == 0 else 1
                if bottleneck:
                    down = None
                    if stride != 1 or cin != cout * 4:
                        down = nn.Sequential(nn.Conv2d(cin, cout * 4, 1, stride, bias=False), nn.BatchNorm2d(cout * 4))
                    blocks.append(Bottleneck(cin, cout, stride, down))
                    cin = cout * 4
                else:
                    blocks.append(BasicBlock(cin, cout, stride))
                    cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.output_dim = cin

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x)
        return x.mean(dim=(2, 3))


class Layer(nn.Module):
    def __init__(self, cin, cout, bias, bn, affine=True):
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias=bias)
        self.bn = nn.BatchNorm1d(cout, affine=affine) if bn else None


class Mlp(nn.Module):
    """infomax's head: hidden Linear -> BN -> ReLU layers, then a Linear (and an optional BN)."""

    def __init__(self, head, cin):
        super().__init__()
        layers, n = [], len(head["widths"])
        for i, w in enumerate(head["widths"]):
            last = i == n - 1
            layers.append(
                Layer(cin, w, head["last_bias"] if last else head["hidden_bias"],
                      head["output_bn"] if last else True, head["output_bn_affine"] if last else True)
            )
            cin = w
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer.linear(x)
            if layer.bn is not None:
                x = layer.bn(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class Online(nn.Module):
    def __init__(self, config, with_predictor):
        super().__init__()
        self.encoder = ResNet(config["encoder"])
        self.projector = Mlp(config["projector"], self.encoder.output_dim)
        if with_predictor:
            self.predictor = Mlp(config["predictor"], config["projector"]["widths"][-1])


def load_strict(module, tensors, what):
    state = module.state_dict()
    ours = {k for k in state if not k.endswith("num_batches_tracked")}
    theirs = set(tensors)
    if ours != theirs:
        sys.exit(f"{what}: names differ: only in PyTorch {sorted(ours - theirs)[:5]}, "
                 f"only in infomax {sorted(theirs - ours)[:5]}")
    for k in ours:
        if state[k].shape != tensors[k].shape:
            sys.exit(f"{what}: {k}: PyTorch shape {tuple(state[k].shape)}, infomax {tuple(tensors[k].shape)}")
    module.load_state_dict(tensors, strict=False)


def norm_mse(p, z):
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z, dim=1)).sum(dim=1)).mean()


def embed(branch, config, views):
    """Projector outputs of each view: the encoder sees each view alone (its BatchNorms use that
    view's statistics); the projector too, or all views as one batch when `joint_views`."""
    h = [branch.encoder(x) for x in views]
    if config["projector"]["joint_views"]:
        z = branch.projector(torch.cat(h))
        return list(z.split(len(views[0])))
    return [branch.projector(x) for x in h]


def nt_xent(x0, x1, tau):
    """The W-MSE authors' contrastive loss: each row against the other view and its own view's
    other rows, both directions averaged."""
    n = x0.shape[0]
    target = torch.arange(n)
    eye = torch.eye(n, dtype=x0.dtype) * 1e9
    x0, x1 = F.normalize(x0, dim=1), F.normalize(x1, dim=1)
    l00, l11 = x0 @ x0.t() / tau - eye, x1 @ x1.t() / tau - eye
    l01, l10 = x0 @ x1.t() / tau, x1 @ x0.t() / tau
    return (F.cross_entropy(torch.cat([l01, l00], 1), target) + F.cross_entropy(torch.cat([l10, l11], 1), target)) / 2


def whiten(x, eps):
    """The W-MSE authors' Whitening2d: z = L^-1 (x - mean), L the Cholesky factor of the
    (n - 1)-normalised covariance shrunk towards the identity by eps."""
    xn = x - x.mean(0, keepdim=True)
    cov = xn.t() @ xn / (x.shape[0] - 1)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    chol = torch.linalg.cholesky((1 - eps) * cov + eps * eye)
    return torch.linalg.solve_triangular(chol, xn.t(), upper=False).t()


def pairs_mean(d, f):
    return sum(f(i, j) for i in range(d) for j in range(i + 1, d)) / (d * (d - 1) / 2)


def step_loss(config, online, target, views):
    d = len(views)
    if config["method"] == "byol":
        p = [online.predictor(x) for x in embed(online, config, views)]
        with torch.no_grad():
            zt = embed(target, config, views)
        return pairs_mean(d, lambda i, j: norm_mse(p[i], zt[j]) + norm_mse(p[j], zt[i]))
    if config["method"] == "simclr":
        z = embed(online, config, views)
        return pairs_mean(d, lambda i, j: nt_xent(z[i], z[j], config["simclr"]["tau"]))
    # w-mse with one sub-batch (checked in main): each view whitened with its own statistics.
    z = [whiten(x, config["wmse"]["eps"]) for x in embed(online, config, views)]
    return pairs_mean(d, lambda i, j: norm_mse(z[i], z[j]))


def replay(trace, config, initial, views, dtype):
    """The traced steps in PyTorch at `dtype`: losses, first-step gradients, final states."""
    o = config["optimizer"]
    byol = config["method"] == "byol"
    online = Online(config, config.get("predictor") is not None).to(dtype)
    load_strict(online, {k: v.to(dtype) for k, v in initial.items()}, "initial.safetensors")
    target = None
    if byol:
        target = Online(config, False).to(dtype)
        target.load_state_dict({k: v for k, v in online.state_dict().items() if not k.startswith("predictor.")})
        for p in target.parameters():
            p.requires_grad_(False)
        target.train()
    online.train()
    opt = torch.optim.Adam(online.parameters(), lr=trace["lr"], betas=tuple(o["betas"]), eps=o["adam_eps"],
                           weight_decay=o["weight_decay"])
    tau, views = trace["target_ema_rate"], [v.to(dtype) for v in views]
    losses, grads0 = [], None
    for _ in trace["losses"]:
        loss = step_loss(config, online, target, views)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grads0 is None:
            grads0 = {k: v.grad.detach().clone() for k, v in online.named_parameters()}
        opt.step()
        if byol:
            with torch.no_grad():
                online_params = dict(online.named_parameters())
                for name, t in target.named_parameters():
                    t.mul_(tau).add_(online_params[name], alpha=1 - tau)
        losses.append(loss.item())
    return losses, grads0, online.state_dict(), target.state_dict() if byol else None


def relative(a, ref):
    return ((a.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace", help="the DIR of `infomax bench train-step --trace DIR`")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    with open(os.path.join(a.trace, "trace.json")) as f:
        trace = json.load(f)
    config = trace["config"]
    if config["method"] not in ("byol", "simclr", "w-mse"):
        sys.exit(f"{a.trace}/trace.json: method {config['method']!r}: byol, simclr and w-mse are replayed")
    if config["method"] == "w-mse":
        w = config["wmse"]
        n = config["train"]["batch_size"]
        if w["w_size"] != n or w["w_iter"] != 1:
            sys.exit(f"{a.trace}/trace.json: w-mse with w_size {w['w_size']} and w_iter {w['w_iter']}: only one "
                     f"sub-batch of the whole batch ({n}) is replayed (infomax's sub-batch draw is its own)")
    o = config["optimizer"]
    if o["kind"] != "adam" or o.get("bias_and_norm_lr_factor", 1.0) != 1.0:
        sys.exit(f"{a.trace}/trace.json: optimizer {o['kind']} (bias_and_norm_lr_factor {o.get('bias_and_norm_lr_factor')}): "
                 "only Adam with one learning rate is replayed")
    path = lambda f: os.path.join(a.trace, f)  # noqa: E731
    views = load_file(path("views.safetensors"))
    views = [views[f"view{i}"] for i in range(len(views))]
    initial = load_file(path("initial.safetensors"))

    # f64 is the reference. The yardstick is PyTorch's own f32: one replay on the views as they
    # are and three on views perturbed at 1e-6 relative (about what one f32 layer's round-off
    # does); for the largest of their errors e, infomax may differ by max(limit, 3 e).
    ref = replay(trace, config, initial, views, torch.float64)
    f32 = [replay(trace, config, initial, views, torch.float32)]
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        noisy = [v * (1 + 1e-6 * torch.randn(v.shape, generator=g)) for v in views]
        f32.append(replay(trace, config, initial, noisy, torch.float32))
    failures = []

    def check(what, error, floor, limit):
        limit = max(limit, 3 * floor)
        if error > limit:
            failures.append(f"{what}: {error:.2e} > {limit:.2e}")
        return f"{limit:10.2e}" + ("" if error <= limit else "  <- beyond")

    print("loss            infomax   PyTorch f64   infomax err   PyTorch f32 err   limit")
    for step, ours in enumerate(trace["losses"]):
        r = ref[0][step]
        e = abs(ours - r) / abs(r)
        floor = max(abs(run[0][step] - r) / abs(r) for run in f32)
        base = FIRST_LOSS_LIMIT if step == 0 else LOSS_LIMIT
        flag = check(f"loss of step {step}", e, floor, base)
        print(f"  step {step:2d}  {ours:11.6f}   {r:11.6f}   {e:11.2e}   {floor:15.2e}   {flag}")

    grads = load_file(path("gradients0.safetensors"))
    scale = max(g.double().norm().item() for g in ref[1].values())
    rows = []
    for k, g in grads.items():
        if ref[1][k].double().norm().item() <= 1e-9 * scale:
            # Zero in exact arithmetic (a bias right before a BatchNorm): only round-off may remain.
            e = g.double().norm().item() / scale
            floor = max(run[1][k].double().norm().item() / scale for run in f32)
            rows.append((e, floor, k + " (exactly 0: norm / largest)", check(k, e, floor, ZERO_LIMIT)))
        else:
            e = relative(g, ref[1][k])
            floor = max(relative(run[1][k], ref[1][k]) for run in f32)
            rows.append((e, floor, k, check(f"gradient of {k}", e, floor, GRAD_LIMIT)))
    rows.sort(reverse=True)
    print(f"first-step gradients, {len(rows)} tensors, largest relative L2 errors (infomax, PyTorch f32, limit):")
    for e, floor, k, flag in rows[:4]:
        print(f"  {e:.2e}  {floor:.2e}  {flag}  {k}")

    for file, index in (("final.safetensors", 2), ("final_target.safetensors", 3)):
        if not os.path.exists(path(file)):
            continue
        final = load_file(path(file))
        # BatchNorm's running statistics move far more than the weights in a few steps: apart.
        for part, keys in (("parameters", [k for k in final if "running_" not in k]),
                           ("running statistics", [k for k in final if "running_" in k])):
            keys.sort()
            flat = lambda d: torch.cat([d[k].double().flatten() for k in keys])  # noqa: E731
            start = flat(initial)
            moved = flat(ref[index]) - start
            e = ((flat(final) - start - moved).norm() / moved.norm()).item()
            floor = max(((flat(run[index]) - start - moved).norm() / moved.norm()).item() for run in f32)
            flag = check(f"{file}: what the steps changed in the {part}", e, floor, UPDATE_LIMIT)
            print(f"{file}, what {len(trace['losses'])} steps changed in the {part} ({len(keys)} tensors): "
                  f"relative L2 error {e:.2e}, PyTorch f32 {floor:.2e}, limit {flag}")

    if failures:
        print(f"DIFFER: {len(failures)} checks failed; first: {failures[0]}")
        sys.exit(1)
    print("equal: losses, first-step gradients and what the steps changed agree with PyTorch in f64")


# The first loss is computed before any update: only round-off separates the two frameworks.
# Later, a ReLU whose input lies within f32 round-off of 0 can switch off in one framework and
# not the other; one such unit moves its BatchNorm bias gradient by ~1e-3 and, through Adam's
# sign-like first steps (each coordinate moves by about lr, whatever its gradient's size), the
# later losses by ~1e-4 (W-MSE's whitening of 128 rows in 64 dimensions amplifies it to ~1e-2 by
# the fourth step, as PyTorch's perturbed f32 replays show) and what the steps changed in the
# weights by several percent. A wrong loss term differs in the first loss, a wrong gradient in
# the first-step gradients, a wrong EMA rate (0.98 for 0.99) changes the target's weights by
# ~50 % and fails at the third loss, a wrong learning rate the later losses by percents.
FIRST_LOSS_LIMIT = 1e-5
LOSS_LIMIT = 2e-3
GRAD_LIMIT = 1e-2
ZERO_LIMIT = 1e-6
UPDATE_LIMIT = 0.15


if __name__ == "__main__":
    main()
