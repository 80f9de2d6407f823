"""The package as a user installs it: the wheel holds the three packages under their own
names, and a fresh virtual environment with the core requirements alone steps an env."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.long  # builds a wheel and a virtual environment: tens of seconds


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The wheel, and what its build printed."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    (path,) = out.glob("rlhf_env-*.whl")
    return path, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(built) -> Path:
    return built[0]


def test_the_wheel_holds_every_package_and_builds_quietly(built):
    """Every package folder of the source tree is in the wheel (a new subpackage not listed in
    setup.cfg would be left out), and setuptools has nothing to warn about."""
    wheel_path, output = built
    names = set(zipfile.ZipFile(wheel_path).namelist())
    for folder, installed in (("rlhf_env", "rlhf_env"), ("agents", "rlhf_agents"),
                              ("rlhf_pipeline", "rlhf_pipeline")):  # fmt: skip
        for init in (ROOT / folder).rglob("__init__.py"):
            assert f"{installed}/{init.relative_to(ROOT / folder).as_posix()}" in names
    assert "Warning" not in output, output[-3000:]


def test_the_wheel_installs_the_agents_under_their_own_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("rlhf_env/engine/static.py", "rlhf_agents/ppo.py", "rlhf_pipeline/cli/train.py"):
        assert module in names
    for data in ("pairs.jsonl.gz", "LICENSE"):  # the Harmless task's data ship with the core
        assert f"rlhf_env/data/hh_rlhf_harmless/{data}" in names
    # The folder agents/ must not install as a top-level ``agents`` (the OpenAI Agents SDK's
    # import name).
    assert not [name for name in names if name.startswith("agents/")]
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "rlhf_pipeline.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_a_core_install_steps_an_env_and_names_missing_extras(wheel, tmp_path):
    """Only install_requires (torch from this interpreter's build, the rest from the index):
    the env steps on both engines and the agents import; SB3 names its extra."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    import torch

    torch_spec = f"torch=={torch.__version__.split('+')[0]}"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", torch_spec, str(wheel)],
        check=True, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    script = textwrap.dedent(
        """
        import numpy as np
        from rlhf_env import TextGenerationVectorEnv
        from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
        import rlhf_agents

        tokenizer = build_tiny_tokenizer()
        for engine in ("static", "dynamic"):
            env = TextGenerationVectorEnv(
                build_tiny_gpt2(tokenizer), tokenizer, lambda p, r: [1.0] * len(r),
                ["This movie was"], num_envs=2, max_new_tokens=3, engine=engine,
            )
            env.reset(seed=0)
            for _ in range(3):
                env.step(np.array([30, 31]))
            print(engine, "stepped", type(env.engine).__name__)
        try:
            import rlhf_env.sb3_vec_env
        except ImportError as error:
            print("missing:", error)
        """
    )
    result = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "static stepped StaticEngine" in result.stdout
    assert "dynamic stepped DynamicEngine" in result.stdout
    assert "from the 'sb3' extra: pip install 'rlhf_env[sb3]'" in result.stdout


def test_the_makefiles_editable_install_prints_no_warning(tmp_path):
    """`make test`'s install of the package, as the Makefile runs it (its environment, pip
    upgraded, build isolation), into a fresh virtual environment: no warning from the build."""
    makefile = (ROOT / "Makefile").read_text()
    setting = re.search(r'^QUIET_EDITABLE := (\w+)="([^"]*)"$', makefile, re.MULTILINE)
    assert setting, "the Makefile's QUIET_EDITABLE setting moved; update this test"
    assert '$(QUIET_EDITABLE) $(BIN)/python -m pip install -q -e ".[dev]"' in makefile
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    result = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, setting.group(1): setting.group(2)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not [line for line in output.splitlines() if "Warning" in line], output[-3000:]
