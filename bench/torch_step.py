#!/usr/bin/env python3
"""The training step `infomax bench train-step` times, in PyTorch, for a side-by-side comparison.

ResNet-18 (BasicBlock [2, 2, 2, 2], torchvision's layout) with the small-image stem (3x3 stride-1
conv1, no max-pool) and a width multiplier; a projector Linear -> BN -> ReLU -> Linear per width
(2048-2048 by default); VICReg's loss (25 / 25 / 1, eps 1e-4) on two views; LARS (momentum 0.9,
weight decay 1e-6, eta 0.001, biases and BatchNorm parameters not adapted) as infomax's VICReg
preset uses. Synthetic 32x32 images: pixel values do not change the cost.

    python3 bench/torch_step.py --width 0.25 --batch 128 --threads 2 [--json]
    python3 bench/torch_step.py ... --infomax target/release/infomax   # both, and the ratios
    python3 bench/torch_step.py ... --infomax ... --rounds 3   # alternated 3 times, medians compared

PyTorch is never needed by infomax's build, tests or CI; this script is for anyone who has it.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
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


class ResNet18(nn.Module):
    def __init__(self, width):
        super().__init__()
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for stage, cout in enumerate(widths):
            for b in range(2):
                blocks.append(BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.output_dim = widths[3]

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv1(x))))
        return x.mean(dim=(2, 3))


def projector(dims):
    layers = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1]), nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
    return nn.Sequential(*layers)


def off_diagonal(m):
    n = m.shape[0]
    return m.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg(x, y, sim=25.0, std=25.0, cov=1.0, eps=1e-4):
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(0), y - y.mean(0)
    std_x, std_y = torch.sqrt(x.var(0) + eps), torch.sqrt(y.var(0) + eps)
    std_loss = (F.relu(1 - std_x).mean() + F.relu(1 - std_y).mean()) / 2
    cov_x, cov_y = x.T @ x / (n - 1), y.T @ y / (n - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    return sim * repr_loss + std * std_loss + cov * cov_loss


class LARS(torch.optim.Optimizer):
    """SGD with momentum, weight decay and the layer-wise trust ratio, skipped for 1-d parameters."""

    def __init__(self, params, lr, weight_decay=1e-6, momentum=0.9, eta=0.001):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                dp = p.grad
                if p.ndim > 1:
                    dp = dp.add(p, alpha=g["weight_decay"])
                    pn, un = torch.norm(p), torch.norm(dp)
                    q = torch.where(pn > 0.0, torch.where(un > 0, (g["eta"] * pn / un), 1.0), 1.0)
                    dp = dp.mul(q)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                mu = state["mu"]
                mu.mul_(g["momentum"]).add_(dp)
                p.add_(mu, alpha=-g["lr"])


def torch_step(width, batch, steps, warmup, proj, threads, device="cpu", precision="f32"):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = ResNet18(width).to(device)
    head = projector([net.output_dim] + proj).to(device)
    params = list(net.parameters()) + list(head.parameters())
    opt = LARS(params, lr=0.3 * batch / 256)
    views = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(2)]
    cuda = device.startswith("cuda")

    def one():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = [head(net(v)) for v in views]
        loss = vicreg(z[0].float(), z[1].float())
        loss.backward()
        opt.step()
        return loss.item()  # also waits for the GPU

    for _ in range(warmup):
        one()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    seconds = (time.perf_counter() - start) / steps
    return {
        "images_per_second": batch / seconds,
        "seconds_per_step": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "device": device,
        "precision": precision,
        "width": width,
        "batch": batch,
        "torch": torch.__version__,
        "threads": threads,
    }


def infomax_step(binary, width, batch, steps, warmup, proj, device="cpu", precision="f32"):
    cmd = [binary, "bench", "train-step", "--width", str(width), "--batch", str(batch), "--steps", str(steps),
           "--warmup", str(warmup), "--projector", ",".join(map(str, proj)), "--device", device,
           "--precision", precision, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def cpu_description():
    """The CPU's model and the instruction sets infomax's benchmarks name (its
    `environment::CPU_FEATURES`), from /proc/cpuinfo where there is one."""
    try:
        info = open("/proc/cpuinfo").read().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    field = lambda key: next((l.split(":", 1)[1].strip() for l in info if l.startswith(key)), "")
    flags = field("flags").split()
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"]
    return f"{field('model name') or platform.machine()}; CPU features: {' '.join(f for f in wanted if f in flags)}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--projector", default="2048,2048")
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads (infomax: RAYON_NUM_THREADS)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (both frameworks)")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"], help="bf16: autocast (both frameworks)")
    ap.add_argument("--infomax", help="also time this infomax binary on the same configuration and print ratios")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time both frameworks this many times, alternated, and compare the medians (a shared "
                         "host moves either by 20 %% within minutes)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    proj = [int(p) for p in a.projector.split(",")]
    if a.width <= 0 or a.batch < 2 or a.steps < 1 or not proj or a.rounds < 1:
        sys.exit("torch_step.py: --width > 0, --batch >= 2, --steps >= 1, --rounds >= 1 and a projector are expected")
    rounds = []
    for _ in range(a.rounds):
        ours = infomax_step(a.infomax, a.width, a.batch, a.steps, a.warmup, proj, a.device, a.precision) if a.infomax else None
        theirs = torch_step(a.width, a.batch, a.steps, a.warmup, proj, a.threads, a.device, a.precision)
        rounds.append({"torch": theirs, "infomax": ours})

    def median_run(key):
        runs = sorted((r[key] for r in rounds if r[key]), key=lambda r: r["images_per_second"])
        return runs[(len(runs) - 1) // 2] if runs else None

    theirs, ours = median_run("torch"), median_run("infomax")
    if a.json:
        print(json.dumps({"torch": theirs, "infomax": ours, "rounds": rounds}))
        return
    cpu = cpu_description()
    where = torch.cuda.get_device_name(a.device) if a.device.startswith("cuda") else f"{a.threads} threads ({cpu})"
    print(f"width {a.width}, batch {a.batch}, projector {proj}, {a.precision}, {where}")
    if a.rounds > 1:
        for key, name in (("infomax", "infomax"), ("torch", "PyTorch")):
            speeds = [f"{r[key]['images_per_second']:.1f}" for r in rounds if r[key]]
            if speeds:
                print(f"  {name} over {a.rounds} alternated rounds: {', '.join(speeds)} images/s; the median below")
    if theirs["peak_gpu_bytes"] is not None:
        print(f"  PyTorch peak GPU memory {theirs['peak_gpu_bytes'] / 1e9:.2f} GB")
    print(f"  PyTorch {theirs['torch']}: {theirs['images_per_second']:.1f} images/s, "
          f"peak RSS {theirs['peak_rss_bytes'] / 1e9:.2f} GB")
    if ours:
        print(f"  infomax: {ours['images_per_second']:.1f} images/s, peak RSS {ours['peak_rss_bytes'] / 1e9:.2f} GB")
        print(f"  infomax / PyTorch: {ours['images_per_second'] / theirs['images_per_second']:.2f}x images/s, "
              f"{ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}x peak memory")


if __name__ == "__main__":
    main()
