# infomax tasks. `just --list` shows them.

data := env_var_or_default("INFOMAX_DATA", "datasets")
# The release binary wherever cargo builds it (CARGO_TARGET_DIR, else ./target).
bin := env_var_or_default("CARGO_TARGET_DIR", "target") + "/release/infomax"

# Train, evaluate, store and report an experiment: just reproduce smoke --profile smoke
reproduce NAME *ARGS:
    INFOMAX_DATA={{data}} cargo run --release -p infomax-cli -- reproduce {{NAME}} {{ARGS}}

# Every test, with the real CIFAR-10 from INFOMAX_DATA (default ../shared/datasets).
test:
    INFOMAX_DATA="${INFOMAX_DATA:-$PWD/../shared/datasets}" cargo test --release --workspace

# Training-step throughput and peak memory (ResNet-18 + 2048-2048 projector, VICReg, LARS) at the
# issue's widths and batches in f32 and bf16, each convolution pass's GFLOP/s per width, and augmented views/s at 32 px (CIFAR) and 64 px (STL-10 from 96 px, Tiny-ImageNet) for both presets.
bench:
    cargo build --release -p infomax-cli
    for d in cifar10 stl10 tiny-imagenet; do for p in wmse fair; do {{bin}} bench augment --dataset $d --preset $p; done; done
    for p in f32 bf16; do for wb in "1.0 128" "1.0 256" "0.5 128" "0.5 256" "0.25 128" "0.25 256"; do set -- $wb; {{bin}} bench train-step --width $1 --batch $2 --steps 3 --projector 2048,2048 --precision $p; done; done
    for w in 1.0 0.5 0.25; do {{bin}} bench conv --width $w --batch 128; done
    for w in 1.0 0.25; do {{bin}} bench eval --width $w; done

# The same training step in PyTorch (bench/torch_step.py) beside infomax's, on this machine, in
# f32 and in bf16 (PyTorch's CPU autocast), with the ratios of the medians of three alternated rounds. Needs a Python with torch (never needed
# otherwise): PYTHON=venv/bin/python just bench-torch
bench-torch:
    cargo build --release -p infomax-cli
    for p in f32 bf16; do for wb in "1.0 128" "1.0 256" "0.5 128" "0.5 256" "0.25 128" "0.25 256"; do set -- $wb; "${PYTHON:-python3}" bench/torch_step.py --width $1 --batch $2 --steps 3 --rounds 3 --precision $p --infomax {{bin}}; done; done

# infomax with candle's CUDA backend, into target/cuda/release/infomax: CUDA 13.0 from NVIDIA's PyPI
# wheels into ~/.cache/infomax/cuda-venv, no GPU needed to build (CUDA_COMPUTE_CAP, default 90).
build-cuda:
    tools/cuda/build.sh

# Re-render reports/*.html (index, a page per experiment and per run) from reports/results.sqlite.
report *ARGS:
    cargo run --release -p infomax-cli -- report {{ARGS}}

# The README's results section, regenerated from the committed reports/reference.sqlite (a test
# fails when the two differ). Add runs to it with --db reports/reference.sqlite, e.g.
# just reproduce smoke --seeds 3 --db reports/reference.sqlite
results:
    cargo run --release -p infomax-cli -- report --markdown --db reports/reference.sqlite --into README.md

# Methods × datasets on one metric from every finished run: just compare --methods simclr,byol --metric linear
compare *ARGS:
    cargo run --release -p infomax-cli -- compare {{ARGS}}

# Formatting and clippy, as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --all-targets -- -D warnings

# Views per second per thread of the 224-px FAIR pipeline on JPEG files decoded for every batch:
# infomax's (one thread) and torchvision's PIL pipeline (bench/augment_torch.py, one thread), on
# the same folder (default: a stand-in of ImageNet-like JPEGs from bench/make_photo_folder.py).
# Needs a Python with torch, torchvision and scikit-image: PYTHON=venv/bin/python just bench-augment-torch
bench-augment-torch FOLDER="/tmp/infomax-photos":
    cargo build --release -p infomax-cli
    test -d {{FOLDER}}/train || "${PYTHON:-python3}" bench/make_photo_folder.py {{FOLDER}}
    for round in 1 2 3; do RAYON_NUM_THREADS=1 {{bin}} bench augment --dataset {{FOLDER}} --image-size 224 --preset fair --batch 64 --batches 3; "${PYTHON:-python3}" bench/augment_torch.py {{FOLDER}} --size 224 --batch 64 --batches 3; done
