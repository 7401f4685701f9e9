#!/usr/bin/env python3
"""Replay the steps of `infomax bench train-step --trace DIR` in PyTorch and compare.

    target/release/infomax bench train-step --method byol --width 0.25 --batch 32 \\
        --warmup 1 --steps 3 --trace /tmp/trace
    python3 tools/step_reference_torch.py /tmp/trace

PyTorch starts from infomax's initial weights (`initial.safetensors`, loaded strictly by name)
and takes the same steps on the same views (`views.safetensors`) with the configuration infomax
wrote (`trace.json`): the ResNet of the run's width and stem, the projector and predictor as the
W-MSE authors build them (Linear -> BN -> ReLU -> Linear), BYOL's symmetric loss
sum_{i<j} [l(p_i, sg z'_j) + l(p_j, sg z'_i)] / (d(d-1)/2) with l = mean(2 - 2 cos), Adam with L2
weight decay (torch.optim.Adam), and the EMA target moved after every step at infomax's tau.
PyTorch runs in f64 (the reference) and in f32 (for scale). It prints the loss of every step,
the largest first-step gradient errors and the error of what the steps changed in the online and
target networks (BatchNorm running statistics included), and exits 1 beyond the limits at the
end of the file.

Only BYOL is replayed (the method this check was written for); other methods are refused.
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


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet-18/34 layout and parameter names, at a width multiplier."""

    def __init__(self, enc):
        super().__init__()
        depth = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}[enc["arch"]]
        widths = [max(1, round(c * enc["width"])) for c in (64, 128, 256, 512)]
        if enc["small_stem"]:
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, 2, 1) if enc["max_pool"] else nn.Identity()
        cin = widths[0]
        for s, (cout, n) in enumerate(zip(widths, depth)):
            blocks = []
            for b in range(n):
                blocks.append(Block(cin, cout, 2 if s > 0 and b == 0 else 1))
                cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))

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
    def __init__(self, spec, with_predictor):
        super().__init__()
        self.encoder = ResNet(spec["encoder"])
        out = max(1, round(512 * spec["encoder"]["width"]))
        self.projector = Mlp(spec["projector"], out)
        if with_predictor:
            self.predictor = Mlp(spec["predictor"], spec["projector"]["widths"][-1])


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


def replay(trace, spec, initial, views, dtype):
    """The traced steps in PyTorch at `dtype`: losses, first-step gradients, final states."""
    o = spec["optimizer"]
    online = Online(spec, True).to(dtype)
    load_strict(online, {k: v.to(dtype) for k, v in initial.items()}, "initial.safetensors")
    target = Online(spec, False).to(dtype)
    target.load_state_dict({k: v for k, v in online.state_dict().items() if not k.startswith("predictor.")})
    for p in target.parameters():
        p.requires_grad_(False)
    online.train()
    target.train()
    opt = torch.optim.Adam(online.parameters(), lr=trace["lr"], betas=tuple(o["betas"]), eps=o["adam_eps"],
                           weight_decay=o["weight_decay"])
    tau, views = trace["byol_tau"], [v.to(dtype) for v in views]
    d, losses, grads0 = len(views), [], None
    for _ in trace["losses"]:
        z = [online.projector(online.encoder(x)) for x in views]
        p = [online.predictor(x) for x in z]
        with torch.no_grad():
            zt = [target.projector(target.encoder(x)) for x in views]
        loss = sum(norm_mse(p[i], zt[j]) + norm_mse(p[j], zt[i]) for i in range(d) for j in range(i + 1, d))
        loss = loss / (d * (d - 1) / 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grads0 is None:
            grads0 = {k: v.grad.detach().clone() for k, v in online.named_parameters()}
        opt.step()
        with torch.no_grad():
            online_params = dict(online.named_parameters())
            for name, t in target.named_parameters():
                t.mul_(tau).add_(online_params[name], alpha=1 - tau)
        losses.append(loss.item())
    return losses, grads0, online.state_dict(), target.state_dict()


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
    spec = trace["spec"]
    if spec["method"] != "byol":
        sys.exit(f"{a.trace}/trace.json: method {spec['method']!r}: only byol is replayed")
    o = spec["optimizer"]
    if o["kind"] != "adam" or o.get("one_d_lr_factor", 1.0) != 1.0:
        sys.exit(f"{a.trace}/trace.json: optimizer {o['kind']} (one_d_lr_factor {o.get('one_d_lr_factor')}): "
                 "only Adam with one learning rate is replayed")
    path = lambda f: os.path.join(a.trace, f)  # noqa: E731
    views = load_file(path("views.safetensors"))
    views = [views[f"view{i}"] for i in range(len(views))]
    initial = load_file(path("initial.safetensors"))

    # f64 is the reference; PyTorch's own f32 replay is printed beside infomax's for scale.
    ref = replay(trace, spec, initial, views, torch.float64)
    f32 = replay(trace, spec, initial, views, torch.float32)
    failures = []

    def check(what, error, limit):
        if error > limit:
            failures.append(f"{what}: {error:.2e} > {limit:g}")
        return "" if error <= limit else "  <- beyond " + f"{limit:g}"

    print(f"loss (limit {LOSS_LIMIT:g} relative)\nstep  infomax        PyTorch f64    infomax err  PyTorch f32 err")
    for step, ours in enumerate(trace["losses"]):
        e = abs(ours - ref[0][step]) / abs(ref[0][step])
        e32 = abs(f32[0][step] - ref[0][step]) / abs(ref[0][step])
        flag = check(f"loss of step {step}", e, LOSS_LIMIT)
        print(f"{step:4d}  {ours:12.6f}   {ref[0][step]:12.6f}   {e:11.2e}  {e32:15.2e}{flag}")

    grads = load_file(path("gradients0.safetensors"))
    scale = max(g.double().norm().item() for g in ref[1].values())
    rows = []
    for k, g in grads.items():
        if ref[1][k].double().norm().item() <= 1e-9 * scale:
            # Zero in exact arithmetic (a bias right before a BatchNorm): only round-off may remain.
            e, e32 = g.double().norm().item() / scale, f32[1][k].double().norm().item() / scale
            rows.append((e, e32, k + " (exactly 0: norm / largest)", check(k, e, ZERO_LIMIT)))
        else:
            e, e32 = relative(g, ref[1][k]), relative(f32[1][k], ref[1][k])
            rows.append((e, e32, k, check(f"gradient of {k}", e, GRAD_LIMIT)))
    rows.sort(reverse=True)
    print(f"first-step gradients: {len(rows)} tensors (limit {GRAD_LIMIT:g} relative L2); largest errors "
          "(infomax, PyTorch f32):")
    for e, e32, k, flag in rows[:4]:
        print(f"  {e:.2e}  {e32:.2e}  {k}{flag}")

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
            e32 = ((flat(f32[index]) - start - moved).norm() / moved.norm()).item()
            flag = check(f"{file}: what the steps changed in the {part}", e, UPDATE_LIMIT)
            print(f"{file}: what {len(trace['losses'])} steps changed in the {part} ({len(keys)} tensors): "
                  f"relative L2 error {e:.2e} (PyTorch f32 {e32:.2e}; limit {UPDATE_LIMIT:g}){flag}")

    if failures:
        print(f"DIFFER: {len(failures)} checks failed; first: {failures[0]}")
        sys.exit(1)
    print("equal: losses, first-step gradients and what the steps changed agree with PyTorch in f64")


# A ReLU whose input lies within f32 round-off of 0 can switch off in one framework and not the
# other; one such unit moves its BatchNorm bias gradient by ~1e-3 and, through Adam's sign-like
# first steps (each coordinate moves by about lr, whatever its gradient's size), the later losses
# by ~1e-4 and what the steps changed in the weights by several percent (PyTorch's own f32
# replay is ~1 % from its f64 one after 4 steps). The limits leave room for that: a wrong loss
# term or gradient differs in the first step's loss or gradients, a wrong EMA rate (0.98 for
# 0.99) changes the target's weights by ~50 %, a wrong learning rate the later losses by percents.
LOSS_LIMIT = 2e-3
GRAD_LIMIT = 1e-2
ZERO_LIMIT = 1e-6
UPDATE_LIMIT = 0.15


if __name__ == "__main__":
    main()
