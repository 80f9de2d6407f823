"""Mutation testing: the fast test tier must catch deliberate bugs.

Each mutant is one exact text replacement (``old`` -> ``new``) in one file of the package: a
bug of the kind the suite exists to catch (a KL sign, a position off by one, a bootstrap past
the end of an episode, ...). The script copies the packages and the tests into a temporary
folder (the working tree is never touched), runs the selected tests on the unmutated copy (the
control: they must pass, importing the copy's code), then, one mutant at a time, applies the
replacement to the copy, runs the mutant's fast tests there (``-x``: the first failure kills
it), and restores the file. It prints each failure's first lines (to check that a mutant died
for the right reason) and a table::

    | mutant | file | tests run | killed | failed test(s) | seconds |

It exits with 1 if a mutant survives and 2 on an error: a mutant's ``old`` text not found
exactly once in its file (the code moved: update the mutant rather than count it as killed),
the control failing, a run that erred (collection error, timeout) or did not import the copy.

Usage::

    python scripts/mutants.py                  # every mutant: about 50 s on 2 busy cores
    python scripts/mutants.py --list           # the mutants, their files and tests
    python scripts/mutants.py --only k3_sign   # one mutant (repeatable)
    python scripts/mutants.py --json out.json  # the results as JSON too
    python scripts/mutants.py --python .venv/bin/python  # a new interpreter per run (slower)

By default each run is a fork of this process, which imports torch and transformers once
(:data:`PRELOAD`) and never the packages under test. Add a mutant by appending a
:class:`Mutant` to :data:`MUTANTS` with the fast tests that should kill it (node ids or
files, the killer first). ``tests/README.md`` ("Mutation testing") has the table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What the copy holds: the three packages, the tests and the files pytest and setuptools read.
COPIED = (
    "rlhf_env",
    "agents",
    "rlhf_pipeline",
    "tests",
    "pyproject.toml",
    "setup.cfg",
    "README.md",
)
#: The import names of the packages, and the folder each is in (``rlhf_agents`` is ``agents/``).
PACKAGES = {"rlhf_env": "rlhf_env", "rlhf_agents": "agents", "rlhf_pipeline": "rlhf_pipeline"}


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``old`` replaced by ``new`` in ``file`` (found exactly once)."""

    #: Short name, for ``--only``.
    name: str
    #: What the bug is, in a line.
    bug: str
    #: The file, relative to the repository root.
    file: str
    #: The exact text replaced (it must occur exactly once in ``file``).
    old: str
    #: Its replacement.
    new: str
    #: Fast-tier tests that must catch it: pytest node ids or files, the killer first.
    tests: tuple[str, ...]


#: Where a dialogue step hands the engine the user turns it inserts (both envs' step).
_APPEND = "        if plan.inserted:\n            self._append_to_engine(plan.inserted)\n"
_DIALOGUE_KL_TEST = (
    "tests/test_dialogue_env.py::test_each_steps_kl_is_its_actions_alone_from_uncached_forwards"
)
_STATIC_ENGINE_TEST = (
    "tests/test_engines.py::test_engine_matches_full_recomputation[static-gpt2-cpu]"
)
_VECTOR_ENV_TEST = (
    "tests/test_vector_env.py::test_vector_env_matches_single_envs"
    "[AutoresetMode.NEXT_STEP-2-static]"
)
_LEFT = '        reward_model.tokenizer.truncation_side = "left"\n'
_TRUNCATION_TEST = (
    "tests/test_task_dialogue.py::"
    "test_the_reward_model_reads_the_latest_turns_of_a_transcript_over_its_length"
)

MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        name="minibatch_per_sequence",
        bug="micro-batches weighted by their share of the sequences, not of the tokens",
        file="agents/minibatch.py",
        old="        weight = float(batch.action_mask.sum()) / global_tokens\n",
        new=(
            "        sequences = sum(len(b.action_mask) for b, _ in micro_batches) * processes\n"
            "        weight = len(batch.action_mask) / sequences\n"
        ),
        tests=("tests/test_minibatch.py",),
    ),
    Mutant(
        name="kl_on_inserted_token",
        bug="dialogue: the inserted user turns stepped like actions, their KL charged",
        file="rlhf_env/episodes.py",
        old=_APPEND,
        new=(
            "        turns = plan.inserted\n"
            "        for j in range(max(map(len, turns.values()), default=0)):\n"
            "            live = np.array([j < len(turns.get(r, ())) for r in range(n)])\n"
            "            ids = np.array([turns[r][j] if live[r] else 0 for r in range(n)])\n"
            "            kl = kl + np.where(live, self.engine.step(ids, live)[0], 0.0)\n"
        ),
        tests=(f"{_DIALOGUE_KL_TEST}[chatml-False]", f"{_DIALOGUE_KL_TEST}[chatml-True]"),
    ),
    Mutant(
        name="static_prefill_position",
        bug="static engine: the prompt's positions off by one in the prefill",
        file="rlhf_env/engine/static.py",
        old="        positions = positions_from_mask(attention_mask)  # (k, P)\n",
        new="        positions = positions_from_mask(attention_mask) + 1  # (k, P)\n",
        tests=(_STATIC_ENGINE_TEST,),
    ),
    Mutant(
        name="k3_sign",
        bug="the k3 KL estimator with its log-ratio's sign flipped",
        file="rlhf_env/kl.py",
        old="    log_ratio = ref_logprob - policy_logprob\n",
        new="    log_ratio = policy_logprob - ref_logprob\n",
        tests=("tests/test_kl.py",),
    ),
    Mutant(
        name="gae_bootstrap_past_end",
        bug="GAE bootstraps an episode's last action from a value (the last column's), not 0",
        file="agents/losses.py",
        old="    next_value = torch.zeros_like(rewards[:, 0])  # (E,)\n",
        new="    next_value = values[:, -1].clone()  # (E,)\n",
        tests=("tests/test_agent_losses.py",),
    ),
    Mutant(
        name="obs_pad_id",
        bug="observations left-padded with id 0, not the pad id",
        file="rlhf_env/episodes.py",
        old="        self.input_ids[rows] = self.core.pad_token_id\n",
        new="        self.input_ids[rows] = 0\n",
        tests=("tests/test_env.py::test_spaces_follow_the_spec", _VECTOR_ENV_TEST),
    ),
    Mutant(
        name="reference_other_row",
        bug="static engine: the reference's cache row of each sub-env holds another sub-env's",
        file="rlhf_env/engine/static.py",
        old="                cache = prefill_cache(model.storage, row_index, slots)\n",
        new=(
            "                index = torch.as_tensor(np.roll(rows, 1), device=self.device)\n"
            "                if model is self._policy:\n"
            "                    index = row_index\n"
            "                cache = prefill_cache(model.storage, index, slots)\n"
        ),
        tests=(_STATIC_ENGINE_TEST,),
    ),
    Mutant(
        name="reward_truncation_side",
        bug="Harmless and Dialogue tasks (keep_latest_turns): the reward model cuts a long "
        "transcript's end, not its start",
        file="rlhf_env/tasks/harmless.py",
        old=_LEFT,
        new=_LEFT.replace('"left"', '"right"'),
        tests=(_TRUNCATION_TEST,),
    ),
)


@dataclass
class Run:
    """What pytest gave on some tests of the copy."""

    #: pytest's exit status (1: a test failed), None when the run was stopped at its timeout.
    status: int | None
    #: Tests that ran (passed, failed or erred).
    count: int
    #: ``(node id, first line of the failure)`` of each failed or erred test.
    failures: list[tuple[str, str]]
    #: pytest's output.
    output: str
    #: The modules of the three packages that the tests imported, and their files.
    imported: dict[str, str | None]


@dataclass
class Result:
    """A mutant's row of the table."""

    mutant: str
    file: str
    #: "killed", "survived" or "error: why".
    status: str
    tests_run: int
    failed: list[str]
    #: Each failure's message (the first failure's: the "E" lines of its traceback).
    reasons: list[str]
    seconds: float


#: A pytest plugin written into the copy: after the run it records the file of every module
#: of the three packages that the tests imported, so that the script can check that they came
#: from the copy (and that the mutated module was among them).
PROBE = """\
import json, os, sys

def pytest_sessionfinish(session):
    packages = set(os.environ["MUTANTS_PACKAGES"].split(","))
    files = {name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
             if name.split(".")[0] in packages}
    with open(os.environ["MUTANTS_PROBE"], "w") as out:
        json.dump(files, out)
"""
#: Imported once by the script before it forks a process per run (never the packages under
#: test): most of a run's start (about 15 s of imports on a loaded 2-core machine).
PRELOAD = (
    "numpy", "torch", "transformers", "transformers.cache_utils",
    "transformers.models.gpt2.modeling_gpt2", "transformers.models.llama.modeling_llama",
    "gymnasium", "tokenizers", "scipy.stats", "hypothesis", "pytest",
)  # fmt: skip


def make_copy(destination: Path) -> None:
    """Copy the packages and tests into ``destination``, with ``rlhf_agents`` a link to the
    copy's ``agents`` (its import name, which the editable install maps to ``agents/``), and
    the probe plugin."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".pytest_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=ignore, symlinks=True)
        elif source.exists():
            shutil.copy2(source, destination / name)
    (destination / "rlhf_agents").symlink_to("agents", target_is_directory=True)
    (destination / "mutants_probe.py").write_text(PROBE)


def environment(copy: Path, probe: Path) -> dict[str, str]:
    """The runs' environment: the copy first on the path (for the tests' own subprocesses
    too), no bytecode written (a mutated and a restored file of one size and mtime second
    must not share a .pyc), wide lines, the probe's output file."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(copy), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["COLUMNS"] = "400"  # pytest's summary lines keep the failures' reasons
    env["MUTANTS_PACKAGES"] = ",".join(PACKAGES)
    env["MUTANTS_PROBE"] = str(probe)
    return env


def pytest_arguments(tests: tuple[str, ...], stop_first: bool) -> list[str]:
    """The fast tier of ``tests``, no cache written, the probe loaded, failures listed."""
    return [
        "-q", *(["-x"] if stop_first else []), "-p", "no:cacheprovider", "-p", "mutants_probe",
        "-m", "not slow and not long", "-rfE", *tests,
        # (the modules imported before a fork cannot be rewritten, and need not be)
        "-W", "ignore::pytest.PytestAssertRewriteWarning",
    ]  # fmt: skip


def run_forked(
    copy: Path, arguments: list[str], env: dict[str, str], log: Path, timeout: float
) -> int | None:
    """pytest in a child of this process (which has :data:`PRELOAD` imported, and none of the
    packages under test); its exit status, or None after ``timeout`` seconds (then killed)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        status = 3
        try:
            os.setsid()  # its own process group, killed as one on a timeout
            with open(log, "w") as out:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
            os.chdir(copy)
            os.environ.clear()
            os.environ.update(env)
            sys.path.insert(0, str(copy))
            sys.dont_write_bytecode = True
            import pytest

            status = int(pytest.main(arguments))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_tests(
    python: str | None, copy: Path, tests: tuple[str, ...], timeout: float, stop_first: bool
) -> Run:
    """pytest on ``tests`` in the copy (fast tier only): in a forked child (``python`` None)
    or in a new ``python`` process."""
    with tempfile.TemporaryDirectory() as scratch:
        probe, log = Path(scratch) / "probe.json", Path(scratch) / "log.txt"
        env = environment(copy, probe)
        arguments = pytest_arguments(tests, stop_first)
        if python is None:
            status = run_forked(copy, arguments, env, log, timeout)
            output = log.read_text() if log.exists() else ""
        else:
            try:
                result = subprocess.run(
                    [python, "-m", "pytest", *arguments], cwd=copy, env=env, timeout=timeout,
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                status, output = result.returncode, result.stdout
            except subprocess.TimeoutExpired:
                status, output = None, ""
        imported = json.loads(probe.read_text()) if probe.exists() else {}
    failures = re.findall(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", output, flags=re.MULTILINE)
    # pytest's summary line holds a message's first line only (often just "AssertionError:"):
    # the first failure gets the first lines of its traceback's "E" lines instead.
    lines = [line[1:].strip() for line in output.splitlines() if line.startswith("E ")]
    if failures:
        detail = " | ".join(line for line in lines if line)[:300]
        failures[0] = (failures[0][0], detail or failures[0][1])
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    count = sum(int(n) for n, _ in re.findall(r"(\d+) (passed|failed|errors?)\b", summary))
    return Run(status, count, failures, output, imported)


def wrong_imports(copy: Path, run: Run, mutant: Mutant | None) -> str | None:
    """Why ``run`` did not test the copy (a module of the packages imported from elsewhere,
    or the mutated module not imported at all), or None."""
    if not run.imported:
        return "the probe recorded no import of the packages"
    for name, file in run.imported.items():
        if file is not None and not Path(file).resolve().is_relative_to(copy.resolve()):
            return f"{name} was imported from {file}, not from the copy"
    if mutant is not None:
        target = (copy / mutant.file).resolve()
        if not any(file and Path(file).resolve() == target for file in run.imported.values()):
            return f"the tests never imported {mutant.file}"
    return None


def apply(root: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` to the tree at ``root``; returns the file's original text.

    Raises:
        ValueError: the ``old`` text is not in the file exactly once.
    """
    path = root / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(
            f"mutant {mutant.name}: its old text occurs {count} times in {mutant.file}, not "
            "once; the code moved or changed: update the mutant in scripts/mutants.py"
        )
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def control(python: str | None, copy: Path, mutants: list[Mutant], timeout: float) -> None:
    """Run every selected test on the unmutated copy.

    Raises:
        RuntimeError: a test fails there, or the tests did not import the copy.
    """
    selected = tuple(dict.fromkeys(test for m in mutants for test in m.tests))
    began = time.perf_counter()
    run = run_tests(python, copy, selected, timeout * len(mutants), stop_first=False)
    print(f"mutants: control run: {run.count} tests passed in {time.perf_counter() - began:.1f}"
          " s; the tests imported:")  # fmt: skip
    for name in PACKAGES:
        print(f"  {name} from {run.imported.get(name)}")
    wrong = wrong_imports(copy, run, None)
    if run.status != 0 or run.count == 0 or wrong:
        print(run.output[-4000:])
        failed = [name for name, _ in run.failures] or list(selected)
        raise RuntimeError(wrong or f"the unmutated copy fails {failed}: fix that first")


def try_mutant(python: str | None, copy: Path, mutant: Mutant, timeout: float) -> Result:
    """Apply ``mutant`` to the copy, run its tests (``-x``), restore the file."""
    original = apply(copy, mutant)
    began = time.perf_counter()
    try:
        run = run_tests(python, copy, mutant.tests, timeout, stop_first=True)
    finally:
        (copy / mutant.file).write_text(original)
    seconds = time.perf_counter() - began
    wrong = wrong_imports(copy, run, mutant)
    if run.status is None:
        status = f"error: timeout after {timeout:.0f} s"
    elif wrong:
        status = f"error: {wrong}"
    elif run.status == 0:
        status = "survived"
    elif run.status == 1 and run.failures:
        status = "killed"
    else:  # collection errors, usage errors, no tests: a broken run, not a kill
        status = f"error: pytest exit status {run.status}"
    if status.startswith("error"):
        print(run.output[-3000:])
    failed, reasons = [name for name, _ in run.failures], [why for _, why in run.failures]
    return Result(mutant.name, mutant.file, status, run.count, failed, reasons, seconds)


def table(results: list[Result]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| mutant | file | tests run | killed | failed test(s) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        killed = {"killed": "yes", "survived": "**no**"}.get(r.status, f"**{r.status}**")
        failed = ", ".join(f"`{name.removeprefix('tests/')}`" for name in r.failed) or "-"
        lines.append(
            f"| {r.mutant} | `{r.file}` | {r.tests_run} | {killed} | {failed} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (``--python`` made absolute: the runs start in the copy)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="this mutant only (repeatable)"
    )
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument(
        "--python", help="run pytest with this interpreter, a new process per run (default: "
        "this one, forked per run after importing torch and transformers once)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=120, help="seconds per run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    args = parser.parse_args(argv)
    names = [m.name for m in MUTANTS]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown mutant(s) {unknown}; choose from {names}")
    if args.python is not None and os.sep in args.python:  # runs start in the copy
        args.python = os.path.abspath(args.python)  # (not resolved: a venv's python is a link)
    if args.python is None and not hasattr(os, "fork"):
        args.python = sys.executable
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.bug}\n  {m.file}\n  tests: {' '.join(m.tests)}")
        return 0
    start = time.perf_counter()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here or there
    if args.python is None:
        for module in PRELOAD:
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
    copy = Path(tempfile.mkdtemp(prefix="rlhf-mutants-"))
    results: list[Result] = []
    try:
        make_copy(copy)
        print(f"mutants: {len(mutants)} mutants, on a copy in {copy}", flush=True)
        for mutant in mutants:  # every old text is there, before any time is spent on runs
            (copy / mutant.file).write_text(apply(copy, mutant))
        control(args.python, copy, mutants, args.timeout)
        for mutant in mutants:
            result = try_mutant(args.python, copy, mutant, args.timeout)
            print(f"  {mutant.name}: {result.status} ({result.seconds:.1f} s)", flush=True)
            for name, why in zip(result.failed, result.reasons, strict=True):
                print(f"    {name}: {why[:240]}")
            results.append(result)
    except (ValueError, RuntimeError) as error:
        print(f"mutants: error: {error}")
        return 2
    finally:
        if args.keep:
            print(f"mutants: the copy is kept in {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)

    killed = sum(r.status == "killed" for r in results)
    print(f"\n{table(results)}\n")
    print(f"{len(results)} mutants, {killed} killed, {time.perf_counter() - start:.0f} s in all "
          "(imports and the control run included)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    if any(r.status.startswith("error") for r in results):
        return 2
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
