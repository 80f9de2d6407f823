"""Does PPO collapse? PPO on the tiny Arithmetic task of the learning tests over seeds, with
each run's per-iteration rollout KL and explained variance.

The run is ``tests/learning.py``'s ``arithmetic_exact_match`` (a tiny GPT-2 warm-started to
answer one-term problems half the time in ``<answer>`` tags, 3,000 tokens of RL at lr 2e-3
decaying linearly) with ``agent="ppo"`` and the PPO settings given. A run *collapses* when its
rollout KL passes ``--kl-limit`` nats or its explained variance stays below 0 after the first
``--warm-up`` iterations (the value head never learns the returns). Prints one line per run and
a summary per setting; writes JSON with every run's trace (``--out``).

    python benchmarks/ppo_stability.py --seeds 0 1 2 3 4
    python benchmarks/ppo_stability.py --setting critic=separate --setting clip_range_value=none
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"


def parse_setting(text: str) -> dict[str, Any]:
    """``"a=1,b=none"`` as PPO settings (``none`` is None; numbers as numbers)."""
    settings: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if value.lower() == "none":
            settings[key] = None
            continue
        try:
            settings[key] = int(value)
        except ValueError:
            try:
                settings[key] = float(value)
            except ValueError:
                settings[key] = value
    return settings


def verdict(trace: list[dict[str, float]], kl_limit: float, warm_up: int) -> dict[str, Any]:
    """The run's peak rollout KL, its explained variance after warm-up, and whether it
    collapsed."""
    kl = [step["rollout/kl"] for step in trace]
    variance = [step.get("train/explained_variance", float("nan")) for step in trace[warm_up:]]
    later = [v for v in variance if v == v]  # NaN: a rollout whose returns did not vary
    mean_variance = sum(later) / len(later) if later else float("nan")
    collapsed = max(kl) > kl_limit or (bool(later) and mean_variance < 0)
    return {
        "max_kl": max(kl),
        "explained_variance_after_warm_up": mean_variance,
        "min_explained_variance_after_warm_up": min(later) if later else float("nan"),
        "collapsed": collapsed,
    }


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(TESTS))
    from learning import arithmetic_exact_match

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timesteps", type=int, default=3000, help="RL tokens per run")
    parser.add_argument(
        "--setting",
        action="append",
        type=parse_setting,
        help="PPO settings of one arm, KEY=VALUE,...; repeatable (default: PPO's defaults)",
    )
    parser.add_argument("--kl-limit", type=float, default=10.0, help="nats: collapse above")
    parser.add_argument("--warm-up", type=int, default=3, help="iterations before judging EV")
    parser.add_argument("--out", type=Path, help="JSON with every run and its trace")
    args = parser.parse_args(argv)

    table: dict[str, Any] = {"settings": [], "runs": []}
    for setting in args.setting or [{}]:
        name = ",".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
        table["settings"].append(name)
        for seed in args.seeds:
            start = time.perf_counter()
            figures = arithmetic_exact_match(
                seed, args.threads, timesteps=args.timesteps, agent="ppo", **setting
            )
            run = {
                "setting": name,
                "seed": seed,
                "seconds": round(time.perf_counter() - start, 1),
                "gain": {k: figures["after"][k] - figures["before"][k] for k in figures["after"]},
                **verdict(figures["trace"], args.kl_limit, args.warm_up),
                "trace": figures["trace"],
            }
            table["runs"].append(run)
            variance = run["explained_variance_after_warm_up"]
            print(
                f"{name} seed {seed}: exact match {run['gain']['exact_match']:+.3f}, max KL "
                f"{run['max_kl']:.2f}, explained variance {variance:.2f}"
                f"{' COLLAPSED' if run['collapsed'] else ''} ({run['seconds']} s)",
                flush=True,
            )
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(table, indent=1) + "\n")
    for name in table["settings"]:
        runs = [run for run in table["runs"] if run["setting"] == name]
        collapsed = sum(run["collapsed"] for run in runs)
        gains = [run["gain"]["exact_match"] for run in runs]
        print(
            f"{name}: {collapsed} of {len(runs)} collapsed; exact match gain "
            f"{min(gains):+.3f} to {max(gains):+.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
