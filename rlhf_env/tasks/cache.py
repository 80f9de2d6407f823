"""Where tasks keep what they build once (a trained judge, a reward model), keyed by settings.

The root is ``$RLHF_ENV_TASK_CACHE``, else ``<asset cache>/tasks`` (``~/.cache/rlhf_env/tasks``).
A cached part lives in ``<root>/<task>/<part>-<key>``, where the key hashes every setting it
was built from (and, for parts learned from a policy's samples, the policy's fingerprint), so
changing a setting builds a new part instead of reading a stale one. A part is written to a
temporary folder and renamed into place when complete: an interrupted build leaves nothing
that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rlhf_env import assets
from rlhf_env.models.tiny import build_tiny_gpt2, build_tiny_tokenizer

#: The backbone name that builds a tiny random GPT-2 (tests and smoke runs).
TINY_BACKBONE = "tiny"


def cache_root() -> Path:
    """The task cache's root folder (read from the environment at each call)."""
    configured = os.environ.get("RLHF_ENV_TASK_CACHE")
    return Path(configured) if configured else assets.CACHE_DIR / "tasks"


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short hash of JSON-serialisable ``settings``."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def policy_fingerprint(policy: torch.nn.Module) -> str:
    """Identifies a policy's weights cheaply: its name, size and a hash of a few tensors'
    values (a fine-tuned or re-seeded model gets another fingerprint)."""
    digest = hashlib.sha256(str(getattr(policy.config, "_name_or_path", "")).encode())
    parameters = list(policy.parameters())
    digest.update(str(sum(p.numel() for p in parameters)).encode())
    for parameter in parameters[:: max(1, len(parameters) // 4)]:
        sample = parameter.detach().flatten()[:4096].float().cpu().numpy()
        digest.update(sample.tobytes())
    return digest.hexdigest()[:12]


def cached_folder(
    task: str, part: str, settings: Mapping[str, Any], build: Callable[[Path], None]
) -> Path:
    """The folder of a cached part, running ``build(folder)`` into a temporary folder first
    when it is missing."""
    folder = cache_root() / task / f"{part}-{settings_key(settings)}"
    if (folder / "settings.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    build(partial)
    (partial / "settings.json").write_text(json.dumps(dict(settings), indent=2, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def backbone_folder(name: str) -> Path | str:
    """A reward-model backbone by name: :data:`TINY_BACKBONE` builds (once) a tiny random
    GPT-2 with its tokenizer; a packaged asset name resolves to its folder; anything else (a
    folder, a hub name) is returned unchanged."""
    if name != TINY_BACKBONE:
        return assets.resolve(name)

    def build(folder: Path) -> None:
        tokenizer = build_tiny_tokenizer()
        build_tiny_gpt2(tokenizer, seed=0).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return cached_folder("backbones", TINY_BACKBONE, {"name": TINY_BACKBONE}, build)
