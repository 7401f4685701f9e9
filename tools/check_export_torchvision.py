"""Load an `infomax export-encoder` file into torchvision's ResNet, strictly, and run it.

    python tools/check_export_torchvision.py encoder.safetensors

Needs torch, torchvision and safetensors; never needed by the build or the tests. The file's
metadata says the architecture, stem and width; torchvision's models are width 1.0.
"""

import sys

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file


def main(path: str) -> None:
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    arch = meta["infomax.arch"]
    model = getattr(torchvision.models, arch)()
    if meta["infomax.small_stem"] == "true":
        padding = int(meta.get("infomax.stem_padding", "1"))
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, padding, bias=False)
    if meta["infomax.max_pool"] != "true":
        model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    result = model.load_state_dict(load_file(path), strict=True)
    model.eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 32, 32))
    print(f"{path}: {arch}, run {meta['infomax.run_id']} epoch {meta['infomax.epoch']}: {result}; "
          f"features {tuple(features.shape)}, finite: {bool(torch.isfinite(features).all())}")


if __name__ == "__main__":
    main(sys.argv[1])
