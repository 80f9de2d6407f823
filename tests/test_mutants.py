"""The suite has teeth: ``scripts/mutants.py`` applies deliberate bugs to a copy of the package,
one at a time, and the fast tier must catch every one (see "Mutation testing" in
tests/README.md)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mutants.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mutants", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mutants"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
def test_every_mutant_is_killed_by_a_fast_test(tmp_path):
    """About a minute on two busy cores: imports, the control run, then a short run per mutant."""
    out = tmp_path / "mutants.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--json", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert len(results) == len(load_script().MUTANTS) >= 8
    for row in results:
        assert row["status"] == "killed" and row["failed"], row


def test_a_mutant_whose_code_moved_is_an_error_not_a_kill(tmp_path):
    """The script refuses a mutant whose text is not found exactly once (the code moved), and
    every mutant's text is in the tree today (a refactor that moves one fails here first)."""
    mutants = load_script()
    root = Path(__file__).resolve().parents[1]
    for mutant in mutants.MUTANTS:
        count = (root / mutant.file).read_text().count(mutant.old)
        assert count == 1, f"{mutant.name}: update its old text in scripts/mutants.py"
    (tmp_path / "module.py").write_text("x = 1\nx = 1\n")
    for old in ("y = 2\n", "x = 1\n"):  # missing, twice
        mutant = mutants.Mutant("m", "a bug", "module.py", old, "x = 2\n", ("tests",))
        with pytest.raises(
            ValueError,
            match=r"old text occurs [02] times.*update the mutant in scripts/mutants\.py",
        ):
            mutants.apply(tmp_path, mutant)
    assert (tmp_path / "module.py").read_text() == "x = 1\nx = 1\n"
