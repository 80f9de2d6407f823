#!/usr/bin/env bash
# Prepare .gpu/ (git-ignored) for benchmarks/gpu_check.sh. Run it HERE, where pip reaches PyPI;
# the device tool then carries .gpu/ to the lent GPU machine, which reaches nothing.
#   .gpu/wheels/          what the machine's image lacks or has in another version (Python 3.12)
#   .gpu/smollm2-config/  SmolLM2-135M-Instruct's config and tokenizer, no weights (the weights
#                         exceed the 64 MiB transfer limit: the GPU runs use random weights)
# Usage: bash benchmarks/gpu_prepare.sh   (needs `make assets` once, for SmolLM2's files)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
rm -rf .gpu && mkdir -p .gpu/wheels .gpu/smollm2-config
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .gpu/wheels \
    transformers==5.24.0 gymnasium==1.4.0 farama-notifications==0.0.4 \
    stable-baselines3==2.9.2 vaderSentiment==3.3.2
"$python" - <<'PY'
import shutil
from pathlib import Path

from rlhf_env.assets import smollm2_folder

source, target = smollm2_folder(), Path(".gpu/smollm2-config")
for path in source.iterdir():
    if path.is_file() and not path.name.endswith((".safetensors", ".bin", ".gguf")):
        shutil.copy2(path, target / path.name)
print("copied", sorted(p.name for p in target.iterdir()))
PY
du -sh .gpu
