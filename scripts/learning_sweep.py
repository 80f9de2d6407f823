"""Run the learning tests' bodies over seeds and thread counts and set their thresholds.

Each learning test (``tests/learning.py``: ``LEARNING_RUNS``) trains a tiny policy and asserts
that a figure rose. This script runs each body at every seed (the agent's seed and
``torch.manual_seed``) and thread count, one run at a time in this process, and prints and
writes a JSON table of the gains with, per figure, their min / mean / max, sigma (the standard
deviation of the gains over all runs, ddof=1) and the threshold the tests use: the lowest gain
minus three sigma. The output file is rewritten after every run, and runs already in it are
skipped, so an interrupted sweep resumes.

Usage::

    python scripts/learning_sweep.py --out benchmarks/results/learning_sweep.json
    python scripts/learning_sweep.py --tests arithmetic harmless --seeds 0 1 2 3 4 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per figure: the gains' min, mean, max, sigma (ddof=1), min - 3 sigma, and runs."""
    summary = {}
    for name in runs[0]["gain"]:
        gains = np.array([run["gain"][name] for run in runs])
        sigma = float(gains.std(ddof=1)) if gains.size > 1 else float("nan")
        summary[name] = {
            "runs": int(gains.size),
            "min": float(gains.min()),
            "mean": float(gains.mean()),
            "max": float(gains.max()),
            "sigma": sigma,
            "threshold": float(gains.min() - 3 * sigma),
        }
    return summary


def jsonable(figures: dict[str, Any]) -> dict[str, Any]:
    """A run's figures for the table: the task's details left out, changed weights counted."""
    row = {key: value for key, value in figures.items() if key not in ("details", "changed")}
    if "changed" in figures:
        row["changed_parameters"] = len(figures["changed"])
    return row


def print_table(name: str, runs: list[dict[str, Any]]) -> None:
    figures = list(runs[0]["gain"])
    print(f"\n{name}")
    header = (
        "seed threads "
        + " ".join(f"{f + ' before':>18} {f + ' after':>18} {'gain':>7}" for f in figures)
        + "  seconds"
    )
    print(header)
    for run in sorted(runs, key=lambda r: (r["threads"], r["seed"])):
        cells = " ".join(
            f"{run['before'][f]:>18.3f} {run['after'][f]:>18.3f} {run['gain'][f]:>7.3f}"
            for f in figures
        )
        print(f"{run['seed']:>4} {run['threads']:>7} {cells} {run['seconds']:>8.1f}")
    for figure, row in summarize(runs).items():
        print(
            f"  {figure}: min {row['min']:.3f} mean {row['mean']:.3f} max {row['max']:.3f} "
            f"sigma {row['sigma']:.3f} -> threshold {row['threshold']:.3f} "
            f"({row['runs']} runs)"
        )


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(TESTS))
    from learning import LEARNING_RUNS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tests",
        nargs="+",
        default=list(LEARNING_RUNS),
        choices=list(LEARNING_RUNS),
        help="which bodies (default: all)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("learning_sweep.json"),
        help="JSON table, rewritten after each run; its runs are not redone",
    )
    parser.add_argument(
        "--task-cache",
        type=Path,
        default=None,
        help="task cache folder (default: a temporary one, as the tests use)",
    )
    args = parser.parse_args(argv)

    table: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    cache = args.task_cache or Path(tempfile.mkdtemp(prefix="learning-sweep-cache-"))
    os.environ["RLHF_ENV_TASK_CACHE"] = str(cache)
    for name in args.tests:
        entry = table.setdefault(name, {"runs": []})
        done = {(run["seed"], run["threads"]) for run in entry["runs"]}
        for threads in args.threads:
            for seed in args.seeds:
                if (seed, threads) in done:
                    continue
                start = time.perf_counter()
                figures = LEARNING_RUNS[name](seed, threads)
                seconds = time.perf_counter() - start
                gain = {f: figures["after"][f] - figures["before"][f] for f in figures["after"]}
                run = {
                    "seed": seed,
                    "threads": threads,
                    "gain": gain,
                    "seconds": seconds,
                    **jsonable(figures),
                }
                entry["runs"].append(run)
                entry["summary"] = summarize(entry["runs"])
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(table, indent=1) + "\n")
                print(
                    f"{name} seed {seed} threads {threads}: gain "
                    + ", ".join(f"{f} {g:.3f}" for f, g in gain.items())
                    + f" ({seconds:.1f} s)",
                    flush=True,
                )
        print_table(name, entry["runs"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
