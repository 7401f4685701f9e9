#!/usr/bin/env bash
# The GPU figures of bench/README.md, on a machine with an NVIDIA GPU, building nothing there.
# Carry a stripped, compressed CUDA build and this repository: `just build-cuda`, then
# `strip -o infomax-cuda target/cuda/release/infomax && xz -6 infomax-cuda` (measured: 508 MB →
# 99 MiB stripped → 14.7 MiB as .xz, under a device machine's 64 MiB carry). The machine needs the
# driver, a python3 with PyTorch (CUDA) and NVIDIA's cu13 runtime/cuBLAS/cuRAND/NVRTC wheels
# (PyTorch's cu130 build brings them).
#
#   tools/cuda/gpu_check.sh ./infomax-cuda.xz [OUT_DIR]
#
# Prints and writes OUT_DIR/gpu.txt: infomax's and PyTorch's training step (ResNet-18 width 1.0,
# 2048-2048 projector, VICReg, LARS) at batch 256 and 512 in f32 and bf16, images/s and memory;
# then, if CIFAR-10 is under INFOMAX_DATA, a short run of the smoke experiment's paper profile.
set -euo pipefail
bin="${1:?usage: tools/cuda/gpu_check.sh INFOMAX_CUDA_BINARY [OUT_DIR]}"
out="${2:-${OUT:-.}}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
case "$bin" in
    *.xz) xz -dc "$bin" >/tmp/infomax-cuda && chmod +x /tmp/infomax-cuda && bin=/tmp/infomax-cuda ;;
    *) bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")" ;;
esac
cd "$(dirname "$0")/../.."
cu="$(python3 -c 'import nvidia, os; print(next(os.path.join(p, "cu13", "lib") for p in nvidia.__path__ if os.path.isdir(os.path.join(p, "cu13", "lib"))))')"
export LD_LIBRARY_PATH="$cu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    for batch in 256 512; do
        for precision in f32 bf16; do
            python3 bench/torch_step.py --width 1.0 --batch "$batch" --steps 10 --warmup 3 --device cuda \
                --precision "$precision" --infomax "$bin"
        done
    done
    if [ -d "${INFOMAX_DATA:-datasets}/cifar-10-batches-bin" ]; then
        "$bin" reproduce smoke --profile paper --device cuda --no-progress --db "$out/paper.sqlite" \
            --out "$out/report" --set train.epochs=2 --set eval.bank_images=10000 --set eval.test_images=2000
    else
        echo "no CIFAR-10 under ${INFOMAX_DATA:-datasets}: paper-profile run skipped"
    fi
} 2>&1 | tee "$out/gpu.txt"
