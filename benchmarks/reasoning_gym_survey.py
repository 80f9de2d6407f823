"""Survey of every reasoning-gym dataset through ReasoningGymEnv: which build offline here,
and whether their checkers score the reference answer 1 and a wrong one below 1.

For each registered dataset (``rlhf_env.hubs.reasoning_gym_env.dataset_names``) the script
builds ``ReasoningGymEnv(name, size=--size, seed=--seed, eval_size=1)`` with the dataset's
default options and, for each of the ``--size`` training problems, plays these turns:

- the reference answer (``problem["answer"]`` in ``<answer>`` tags): scores 1 on a sound
  checker (datasets with no reference answer, whose checkers verify a solution, say so);
- two wrong answers: the text "not the answer" (a checker that gives it 1 accepts anything),
  and the reference answer of another problem of the dataset, when it differs (a 1 there is
  either a loose checker or a problem with several solutions: read the dataset);
- no tags at all: scores 0 by the env's rule (checked, not assumed).

It also builds every env in two child processes with different ``PYTHONHASHSEED`` values and
compares the questions they ask: a dataset that iterates over a set of strings draws other
problems in another process, so its held-out set is fixed only for a fixed ``PYTHONHASHSEED``.

Columns: ``works`` (built, reset and stepped), ``reason`` (the env's error when not),
``reference = 1`` (problems whose reference answer scored 1, of those played), ``nonsense
max`` and ``other answer max`` (the highest score of each wrong answer), ``same again`` (a
second env built alike asks the same questions: an env remembers what it asked, but two envs
share nothing), ``same across processes`` (the questions, held-out included, under two hash
seeds), ``question chars`` (length of problem 0's question), ``build s`` (building the env, its
one held-out problem included). What the datasets print is swallowed. Prints a markdown table;
``--out`` writes the rows as JSON.

    python benchmarks/reasoning_gym_survey.py                 # every dataset, ~3 min
    python benchmarks/reasoning_gym_survey.py --datasets chain_sum maze --size 4
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from rlhf_env.hubs.reasoning_gym_env import ReasoningGymEnv, dataset_names

WRONG_TEXT = "not the answer"


@dataclass
class SurveyRow:
    """One dataset's results (see the module docstring for the columns)."""

    dataset: str
    works: bool
    reason: str = ""
    problems: int = 0
    reference_ones: int = 0
    has_reference: bool = True
    nonsense_max: float = 0.0
    other_max: float = 0.0
    missing_max: float = 0.0
    same_again: bool = True
    same_across_processes: bool | None = None
    question_chars: int = 0
    build_s: float = 0.0


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _score(env: ReasoningGymEnv, text: str) -> float:
    """The reward of ``text`` as the one turn of a fork of ``env`` (an episode just reset)."""
    _, reward, terminated, _, _ = env.fork().step(text)
    assert terminated, "a single-turn episode ends after its one turn"
    return reward


def survey_one(name: str, size: int, seed: int, timeout_s: int) -> SurveyRow:
    """Build dataset ``name``'s env and play its first ``size`` problems (see the module
    docstring); a failure to build, or a run past ``timeout_s``, is the row's reason."""
    signal.alarm(timeout_s)
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return _play(name, size, seed, start)
    except _Timeout:
        return SurveyRow(name, works=False, reason=f"timed out after {timeout_s} s")
    except ValueError as error:
        return SurveyRow(name, works=False, reason=str(error))
    except Exception as error:  # a generator failing past the build: record it, go on
        return SurveyRow(name, works=False, reason=f"{type(error).__name__}: {error}")
    finally:
        signal.alarm(0)


def _play(name: str, size: int, seed: int, start: float) -> SurveyRow:
    """Build the env and play its problems (see :func:`survey_one`)."""
    env = ReasoningGymEnv(name, size=size, seed=seed, eval_size=1)
    row = SurveyRow(name, works=True, build_s=time.perf_counter() - start)
    again = ReasoningGymEnv(name, size=size, seed=seed, eval_size=1)  # a second env, same args
    started = []  # each problem's env just after its reset: every answer is to that problem
    for index in range(size):
        question, _ = env.reset(seed=index)
        started.append(env.fork())
        row.same_again &= again.reset(seed=index)[0] == question
        if index == 0:
            row.question_chars = len(question)
    answers = [problem.problem["answer"] for problem in started]
    row.has_reference = any(a is not None for a in answers)
    for problem, answer in zip(started, answers, strict=True):
        if answer is not None:
            row.reference_ones += _score(problem, f"<answer>{answer}</answer>") == 1.0
        nonsense = _score(problem, f"<answer>{WRONG_TEXT}</answer>")
        row.nonsense_max = max(row.nonsense_max, nonsense)
        others = [a for a in answers if a is not None and str(a) != str(answer)]
        if others:
            other = _score(problem, f"<answer>{others[0]}</answer>")
            row.other_max = max(row.other_max, other)
        row.missing_max = max(row.missing_max, _score(problem, str(answer)))
        row.problems += 1
    return row


def digests(names: list[str], size: int, seed: int) -> dict[str, str]:
    """A digest of the questions each dataset's env asks (training seeds ``0..size-1`` and the
    held-out problem); datasets that do not build are left out."""
    found = {}
    for name in names:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                env = ReasoningGymEnv(name, size=size, seed=seed, eval_size=1)
                questions = [env.reset(seed=i)[0] for i in range(size)]
        except Exception:  # the survey proper reports why
            continue
        questions.append(env.eval_problems[0]["question"])
        found[name] = hashlib.sha256("\0".join(questions).encode()).hexdigest()[:16]
    return found


def same_across_processes(names: list[str], size: int, seed: int) -> dict[str, bool]:
    """Whether each dataset asks the same questions in two processes with different
    ``PYTHONHASHSEED`` values (this script's ``--digests`` run twice)."""
    runs = []
    for hash_seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, __file__, "--digests", "--size", str(size), "--seed", str(seed),
             "--datasets", *names],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )  # fmt: skip
        runs.append(json.loads(result.stdout.splitlines()[-1]))
    return {name: runs[0][name] == runs[1].get(name) for name in runs[0]}


def _yes_no(value: bool | None) -> str:
    return "" if value is None else "yes" if value else "**no**"


def _figure(score: float) -> str:
    """A score for the table, in bold where a wrong answer got full marks."""
    return f"**{score:.2f}**" if score >= 1.0 else f"{score:.2f}"


def markdown(rows: list[SurveyRow]) -> str:
    """The survey's markdown table."""
    lines = [
        "| dataset | works | reason if not | reference = 1 | nonsense max | other answer max "
        "| same again | same across processes | question chars | build s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.works:
            reason = row.reason.replace("|", "\\|")
            lines.append(f"| {row.dataset} | no | {reason} | | | | | | | |")
            continue
        reference = (
            f"{row.reference_ones}/{row.problems}"
            if row.has_reference
            else "no reference (verifier)"
        )
        lines.append(
            f"| {row.dataset} | yes | | {reference} | {_figure(row.nonsense_max)} "
            f"| {_figure(row.other_max)} | {_yes_no(row.same_again)} "
            f"| {_yes_no(row.same_across_processes)} "
            f"| {row.question_chars} | {row.build_s:.3f} |"
        )
    return "\n".join(lines)


def summary(rows: list[SurveyRow]) -> str:
    """One paragraph of counts: datasets that work, sound references, loose checkers."""
    working = [r for r in rows if r.works]
    sound = [r for r in working if r.has_reference and r.reference_ones == r.problems]
    partial = [r for r in working if r.has_reference and r.reference_ones < r.problems]
    no_reference = [r.dataset for r in working if not r.has_reference]

    def listed(names: list[str]) -> str:
        return ", ".join(names) or "none"

    return (
        f"{len(working)} of {len(rows)} datasets work offline with their defaults (failing: "
        f"{listed([r.dataset for r in rows if not r.works])}). {len(sound)} score every "
        "reference answer 1; below 1 on some: "
        f"{listed([f'{r.dataset} ({r.reference_ones}/{r.problems})' for r in partial])}; no "
        f"reference answer: {listed(no_reference)}. '{WRONG_TEXT}' scored 1 on: "
        f"{listed([r.dataset for r in working if r.nonsense_max >= 1.0])}; another problem's "
        f"answer scored 1 on: {listed([r.dataset for r in working if r.other_max >= 1.0])}. "
        "A turn without answer tags scored more than 0 on: "
        f"{listed([r.dataset for r in working if r.missing_max > 0])}. Other problems in a "
        f"second env: {listed([r.dataset for r in working if not r.same_again])}; under "
        "another PYTHONHASHSEED: "
        f"{listed([r.dataset for r in working if r.same_across_processes is False])}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", help="dataset names (default: all)")
    parser.add_argument("--size", type=int, default=16, help="problems played per dataset")
    parser.add_argument("--seed", type=int, default=0, help="reasoning-gym seed")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per dataset")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument(
        "--digests", action="store_true", help="print the questions' digests as JSON, and stop"
    )
    args = parser.parse_args()
    every = dataset_names()  # (imports reasoning-gym before any timing)
    names = args.datasets or every
    if args.digests:
        print(json.dumps(digests(names, args.size, args.seed)))
        return
    signal.signal(signal.SIGALRM, _alarm)
    start = time.perf_counter()
    rows = [survey_one(name, args.size, args.seed, args.timeout) for name in names]
    stable = same_across_processes(names, args.size, args.seed)
    for row in rows:
        row.same_across_processes = stable.get(row.dataset)
    elapsed = time.perf_counter() - start
    print(
        f"reasoning-gym {version('reasoning-gym')}, size {args.size}, seed {args.seed}, "
        f"{platform.python_version()}, {elapsed:.0f} s\n"
    )
    print(markdown(rows))
    print()
    print(summary(rows))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "reasoning_gym": version("reasoning-gym"),
                    "size": args.size,
                    "seed": args.seed,
                    "seconds": elapsed,
                    "rows": [asdict(r) for r in rows],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
