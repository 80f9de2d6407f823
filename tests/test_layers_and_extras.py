"""The package's shape: imports point one way (core <- agents <- pipeline), every optional
dependency is behind a named extra, and a missing extra is named in the error."""

from __future__ import annotations

import ast
import configparser
import importlib
import sys
from pathlib import Path

import pytest

from rlhf_env.extras import MissingExtraError

ROOT = Path(__file__).resolve().parents[1]
#: Package -> its folder, and the packages it must never import (the layers above it).
LAYERS = {
    "rlhf_env": (ROOT / "rlhf_env", ("rlhf_agents", "rlhf_pipeline")),
    "rlhf_agents": (ROOT / "agents", ("rlhf_pipeline",)),
}
#: What the core installs (setup.cfg's install_requires), by import name; the standard
#: library and the package's own modules aside, nothing else may be imported at module level.
CORE = {"gymnasium", "torch", "transformers", "numpy", "safetensors", "tokenizers", "tqdm"}


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_imports_point_down_only(package):
    folder, above = LAYERS[package]
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted(folder.rglob("*.py"))
        for name, line in _imports(path)
        if name.split(".")[0] in above
    ]
    assert not offences, "a layer imports one above it:\n" + "\n".join(offences)


def test_the_core_imports_only_its_requirements_at_module_level():
    """Optional packages are imported where they are used, through rlhf_env.extras (or in a
    try that names the extra), so ``import rlhf_env`` and the envs work on the core alone."""
    standard = set(sys.stdlib_module_names) | {"__future__"}
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "rlhf_env").rglob("*.py"))
        for name, line in _imports(path, top_level_only=True)
        if name.split(".")[0] not in standard | CORE | {"rlhf_env"}
    ]
    assert not offences, "\n".join(offences)


def test_core_requirements_match_setup_cfg():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    required = {
        line.split(">")[0].split("<")[0].split("=")[0].strip()
        for line in config["options"]["install_requires"].strip().splitlines()
    }
    assert {name.replace("-", "_") for name in required} == CORE


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("rlhf_env.sb3_vec_env", "stable_baselines3", "sb3"),
        ("rlhf_agents.sb3_policy", "stable_baselines3", "sb3"),
        ("rlhf_agents.sb3_agent", "stable_baselines3", "sb3"),
    ],
)
def test_a_module_of_a_missing_extra_names_it(monkeypatch, module, blocked, extra):
    monkeypatch.setitem(sys.modules, blocked, None)  # as if not installed
    for name in [name for name in sys.modules if name.startswith(f"{blocked}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtraError, match=rf"from the '{extra}' extra: pip install"):
        importlib.import_module(module)


def test_a_feature_of_a_missing_extra_names_it(monkeypatch, tokenizer):
    from rlhf_env.models import build_tiny_gpt2
    from rlhf_env.models.efficient import add_lora
    from rlhf_env.rewards import VaderSentiment

    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingExtraError, match=r"LoRA.*'peft'.*'train' extra"):
        add_lora(build_tiny_gpt2(tokenizer))
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    monkeypatch.setitem(sys.modules, "vaderSentiment.vaderSentiment", None)
    with pytest.raises(MissingExtraError, match="'metrics' extra"):
        VaderSentiment()


def test_every_extra_named_in_an_error_exists():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = set(config["options.extras_require"])
    named = set()
    for folder in (ROOT / "rlhf_env", ROOT / "agents", ROOT / "rlhf_pipeline"):
        for path in folder.rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", None) in ("require", "missing_extra")
                    and len(node.args) >= 2
                    and isinstance(node.args[1], ast.Constant)
                ):
                    named.add(node.args[1].value)
    assert named and named <= extras, f"unknown extras named: {sorted(named - extras)}"
