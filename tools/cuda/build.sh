#!/usr/bin/env bash
# Builds infomax with `--features cuda` (candle's CUDA backend) on any Linux x86-64 machine, a GPU
# or a CUDA install not needed: the CUDA 13.0 toolkit comes from NVIDIA's wheels on PyPI into a
# virtual environment, where it lies as a CUDA tree under site-packages/nvidia/cu13.
#
#   tools/cuda/build.sh            # or: just build-cuda
#   → target/cuda/release/infomax  (the CPU build in target/release is left alone)
#
# Environment: INFOMAX_CUDA_VENV (default ~/.cache/infomax/cuda-venv), CUDA_COMPUTE_CAP (default
# 90: Hopper, H100/H200; 80 for A100, 89 for L4/L40/RTX 40xx).
#
# The binary links against the CUDA 13 runtime libraries by their sonames (libcudart.so.13,
# libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13) and the driver's
# libcuda.so.1: the GPU machine needs the NVIDIA driver (CUDA 13 capable) and those libraries on its
# library path, e.g. LD_LIBRARY_PATH=<this venv>/lib/python3.*/site-packages/nvidia/cu13/lib.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${INFOMAX_CUDA_VENV:-$HOME/.cache/infomax/cuda-venv}"
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
echo "== CUDA 13.0 toolkit from PyPI into $venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
    "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*"
cu="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')"
[ -x "$cu/bin/nvcc" ] || { echo "build-cuda: no nvcc under $cu" >&2; exit 1; }

# The linker looks for unversioned names; the wheels ship only the versioned ones.
for lib in cudart cublas cublasLt nvrtc; do
    ln -sf "lib$lib.so.13" "$cu/lib/lib$lib.so"
done
ln -sf libcurand.so.10 "$cu/lib/libcurand.so"

# libcuda.so belongs to the driver, which a build machine need not have: a stand-in that only
# names the driver API's functions (as cuda.h declares them) lets the link resolve, and records
# libcuda.so.1 as needed, which the driver provides at run time.
stubs="$cu/lib/stubs"
mkdir -p "$stubs"
grep -ohE '\bcu[A-Z][A-Za-z0-9_]*' "$cu/include/cuda.h" | sort -u | sed 's/.*/void &(void) {}/' >"$stubs/libcuda.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda.c"

export CUDA_HOME="$cu" CUDA_ROOT="$cu" CUDA_PATH="$cu"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export PATH="$cu/bin:$PATH"
export LIBRARY_PATH="$cu/lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
echo "== cargo build --release --features cuda (sm_$CUDA_COMPUTE_CAP) into target/cuda"
cargo build --release --locked --features cuda -p infomax-cli --target-dir target/cuda
echo "built target/cuda/release/infomax; run it with LD_LIBRARY_PATH=$cu/lib"
