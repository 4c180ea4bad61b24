#!/usr/bin/env bash
# Download, HERE (where PyPI is reachable), the wheels that bench/device_check.sh installs on a GPU
# host that reaches no package registry: the ML libraries at the versions of this machine's .venv
# (the versions the tests pass with), for the GPU image's Python (3.12, x86-64 Linux). The image
# already has torch (CUDA), accelerate, tokenizers, safetensors, huggingface_hub, pyarrow, pandas,
# xxhash, pytest and pytest-timeout; these are what it lacks or has in other versions.
#
#   bash bench/device_wheels.sh        # -> bench/out/wheels (git-ignored; carry it to the device)
#
# The device tool carries at most 64 MiB with the working tree: the wheels are about 60 MB.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEST=${1:-bench/out/wheels}
PYTHON_VERSION=${DEVICE_PYTHON_VERSION:-3.12}
mkdir -p "$DEST"

# name==version of each, read from .venv (fall back to the pins this repo was checked with).
specs=$(.venv/bin/python - <<'PYTHON'
from importlib.metadata import PackageNotFoundError, version
known = {"transformers": "5.24.0", "peft": "0.21.2", "trl": "1.16.0", "bitsandbytes": "0.50.2",
         "datasets": "5.2.0", "dill": "0.4.1", "multiprocess": "0.70.19",
         "regex": "2026.11.19"}  # transformers refuses to import with a regex older than 2025.10.22
# The GPU image's huggingface_hub is 1.33: transformers 5.25 and later need hub >= 2.4, which needs
# httpx2 and more, past the device tool's 64 MiB carry limit; 5.24 runs on hub 1.33.
pinned = {"transformers": "5.24.0"}
for name, fallback in known.items():
    try:
        print(f"{name}=={pinned.get(name) or version(name)}")
    except PackageNotFoundError:
        print(f"{name}=={fallback}")
PYTHON
)

platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
# shellcheck disable=SC2086  # one word per spec
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
    --implementation cp "${platforms[@]}" -d "$DEST" $specs
ls -l "$DEST"
du -sh "$DEST"
