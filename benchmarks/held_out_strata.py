"""A ReasoningGym (or Arithmetic) suite result's held-out gold per stratum of the problems, to
see what a gain is made of.

A gain in exact answers can be one kind of problem alone, or a shortcut: on chain sums,
reasoning-gym draws about one negative answer in five, and a policy that drops every minus sign
gains (the Arithmetic task's lesson, benchmarks/RESULTS.md, issue 28). This script rebuilds each
run's held-out problems from the options it recorded (the task's defaults where it recorded
none), puts each in a stratum (``sign``: the sign of an integer answer; any other name: that
field of the problem's reasoning-gym metadata, e.g. chain_sum's ``num_terms``) and prints, per
stratum, every agent's gold with its interval and its difference to the reference paired on the
stratum's prompts (rlhf_pipeline/statistics.py; the p-values uncorrected: a breakdown, not a
test of its own).

    python benchmarks/held_out_strata.py benchmarks/results/suite_chain_sum.json --by sign num_terms
    python benchmarks/held_out_strata.py benchmarks/results/suite_90min_seeds678.json \
        --task Arithmetic --by num_terms
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_env.tasks import arithmetic, reasoning_gym
from rlhf_pipeline.leaderboard import run_scores
from rlhf_pipeline.statistics import difference, estimate
from rlhf_pipeline.suite import RunResult, SuiteResult

#: The tasks whose held-out problems it rebuilds: ReasoningGym, and Arithmetic (one
#: configuration of it), by the options a run recorded.
TASKS = (reasoning_gym.NAME, "Arithmetic")

#: The task options that decide the held-out problems (the rest are defaults), per task.
PROBLEM_OPTIONS = {
    reasoning_gym.NAME: frozenset(f.name for f in dataclasses.fields(reasoning_gym.ProblemOptions)),
    "Arithmetic": frozenset(f.name for f in dataclasses.fields(arithmetic.ArithmeticOptions)),
}


def held_out_problems(run: RunResult) -> list[dict[str, Any]]:
    """The held-out problems ``run`` answered, in the order it answered them, rebuilt from the
    options it recorded."""
    options = {k: v for k, v in run.options.items() if k in PROBLEM_OPTIONS[run.task]}
    if run.task == "Arithmetic":
        options = arithmetic.reasoning_gym_options(**options)
    return reasoning_gym.ProblemOptions(**options).make_env().eval_problems


def stratum(problem: dict[str, Any], by: str) -> str:
    """``problem``'s stratum: ``by="sign"`` the sign of its integer answer (``negative``,
    ``non-negative``, else ``not an integer``), any other name that field of its metadata."""
    if by == "sign":
        try:
            return "negative" if int(problem["answer"]) < 0 else "non-negative"
        except ValueError:
            return "not an integer"
    metadata = problem.get("metadata", {})
    if by not in metadata:
        raise KeyError(
            f"the problems' metadata has no {by!r}; use sign or one of {sorted(metadata)}"
        )
    return str(metadata[by])


def strata_rows(
    result: SuiteResult, by: str, reference: str = "reference", task: str = reasoning_gym.NAME
) -> list[dict[str, Any]]:
    """One row per stratum of ``by`` and agent of ``task``'s runs: prompts, gold estimate,
    difference to ``reference`` on the stratum's prompts (None for the reference itself)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    runs = result.runs_of(task)
    if not runs:
        raise ValueError(f"the results hold no {task} run")
    problems = held_out_problems(runs[0])
    if any(held_out_problems(run) != problems for run in runs[1:]):
        raise ValueError("the runs answered different held-out problems; break each down alone")
    labels = np.array([stratum(problem, by) for problem in problems])
    agents = list(dict.fromkeys(run.agent for run in runs))
    scores = {agent: run_scores(result, result.runs_of(task, agent), "gold") for agent in agents}
    if any(value is None for value in scores.values()):
        raise ValueError("a run kept no per-response gold: nothing to break down")
    if next(iter(scores.values())).shape[1] != len(problems):
        raise ValueError(
            f"the runs answered {next(iter(scores.values())).shape[1]} held-out problems, the "
            f"options they recorded give {len(problems)} (a --smoke run's tiny variant records "
            "none of its own): nothing to break down"
        )
    rows = []
    for label in sorted(set(labels)):
        columns = labels == label
        base = scores.get(reference)
        for agent in agents:
            mine = scores[agent][:, columns]
            versus = None
            if base is not None and agent != reference:
                versus = difference(mine, base[:, columns])
            rows.append({
                "stratum": label, "agent": agent, "prompts": int(columns.sum()),
                "gold": estimate(mine), "versus_reference": versus,
            })  # fmt: skip
    return rows


def format_rows(rows: Sequence[dict[str, Any]], by: str) -> str:
    """The rows as a Markdown table."""
    lines = [
        f"| {by} | prompts | agent | gold [95%] | vs reference [95%] (p, uncorrected) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        gold = row["gold"]
        versus = row["versus_reference"]
        versus_text = "" if versus is None else (
            f"{versus.mean:+.3f}{_bounds(versus.low, versus.high, signed=True)} "
            f"(p={'<0.001' if versus.p_value < 0.001 else f'{versus.p_value:.3f}'})"
        )  # fmt: skip
        lines.append(
            f"| {row['stratum']} | {row['prompts']} | {row['agent']} | "
            f"{gold.mean:.3f}{_bounds(gold.low, gold.high)} | {versus_text} |"
        )
    return "\n".join(lines)


def _bounds(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low):
        return ""
    spec = "+.3f" if signed else ".3f"
    return f" [{low:{spec}}, {high:{spec}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a suite results JSON")
    parser.add_argument(
        "--task", choices=TASKS, default=reasoning_gym.NAME, help="whose runs to break down"
    )
    parser.add_argument(
        "--by", nargs="+", default=["sign"], help="strata: sign, or a metadata field's name"
    )
    args = parser.parse_args()
    result = SuiteResult.read(args.results)
    for by in args.by:
        print(format_rows(strata_rows(result, by, task=args.task), by), end="\n\n")


if __name__ == "__main__":
    main()
