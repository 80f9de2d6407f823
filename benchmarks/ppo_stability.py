"""Does PPO collapse? PPO on the tiny Arithmetic task of the learning tests over seeds, with
each run's per-iteration rollout KL and explained variance.

The run is ``tests/learning.py``'s ``arithmetic_exact_match`` (a tiny GPT-2 warm-started to
answer one-term problems half the time in ``<answer>`` tags, 3,000 tokens of RL at lr 2e-3
decaying linearly) with ``agent="ppo"`` and the PPO settings given. A run *collapses* when its
rollout KL passes ``--kl-limit`` nats; its value function *learns* when its explained variance
averages above 0 after the first ``--warm-up`` iterations (it predicts the returns better than
their mean). Prints one line per run and a summary per setting (runs collapsed, runs that lost
exact match, value functions that did not learn); writes JSON with every run's trace
(``--out``).

    python benchmarks/ppo_stability.py --seeds 0 1 2 3 4
    python benchmarks/ppo_stability.py --setting "" --setting critic=shared --plot curves.png
    python benchmarks/ppo_stability.py --summarise stability.json --plot curves.png  # no runs

``--setting ""`` is PPO's defaults; ``--plot`` draws each setting's rollout KL and explained
variance per iteration, one line per seed (matplotlib, the ``demo`` extra).
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
    """The run's peak rollout KL, its explained variance after warm-up, whether it collapsed
    (its rollout KL passed ``kl_limit``) and whether its value function learned (explained
    variance above 0 on average after ``warm_up`` iterations: better than the mean)."""
    kl = [step["rollout/kl"] for step in trace]
    variance = [step.get("train/explained_variance", float("nan")) for step in trace[warm_up:]]
    later = [v for v in variance if v == v]  # NaN: a rollout whose returns did not vary
    mean_variance = sum(later) / len(later) if later else float("nan")
    return {
        "max_kl": max(kl),
        "explained_variance_after_warm_up": mean_variance,
        "min_explained_variance_after_warm_up": min(later) if later else float("nan"),
        "collapsed": max(kl) > kl_limit,
        "value_learns": bool(later) and mean_variance > 0,
    }


def summarise(table: dict[str, Any], kl_limit: float, warm_up: int) -> list[str]:
    """One line per setting: its runs that collapsed, that lost exact match and whose value
    function did not learn (each run judged again from its trace), and their ranges."""
    lines = []
    for name in table["settings"]:
        runs = [run for run in table["runs"] if run["setting"] == name]
        verdicts = [verdict(run["trace"], kl_limit, warm_up) for run in runs]
        gains = [run["gain"]["exact_match"] for run in runs]
        variance = [v["explained_variance_after_warm_up"] for v in verdicts]
        lines.append(
            f"{name}: {sum(v['collapsed'] for v in verdicts)} of {len(runs)} collapsed (KL over "
            f"{kl_limit:g} nats), {sum(g < 0 for g in gains)} lost exact match, "
            f"{sum(not v['value_learns'] for v in verdicts)} with explained variance <= 0 after "
            f"{warm_up} iterations; gains {min(gains):+.3f} to {max(gains):+.3f}, peak KL "
            f"{min(v['max_kl'] for v in verdicts):.1f} to {max(v['max_kl'] for v in verdicts):.1f}"
            f", explained variance {min(variance):+.2f} to {max(variance):+.2f}"
        )
    return lines


def plot(table: dict[str, Any], path: Path) -> Path:
    """Each setting's rollout KL (top) and explained variance (bottom) per iteration, one line
    per seed, a column per setting."""
    from rlhf_env.extras import require

    matplotlib = require("matplotlib", "demo", "the PPO stability plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = table["settings"]
    figure, axes = plt.subplots(2, len(names), figsize=(4 * len(names), 6), squeeze=False)
    for column, name in enumerate(names):
        for run in (run for run in table["runs"] if run["setting"] == name):
            trace = run["trace"]
            iterations = range(1, len(trace) + 1)
            label = f"seed {run['seed']}"
            axes[0][column].plot(iterations, [step["rollout/kl"] for step in trace], label=label)
            variance = [step.get("train/explained_variance", float("nan")) for step in trace]
            axes[1][column].plot(iterations, [max(v, -2.0) for v in variance], label=label)
        axes[0][column].set_title(name, fontsize=9)
        axes[0][column].set_ylabel("rollout KL (nats)")
        axes[1][column].set_ylabel("explained variance (below -2 drawn at -2)")
        axes[1][column].axhline(0.0, color="grey", linewidth=0.5)
        axes[1][column].set_xlabel("iteration")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


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
    parser.add_argument("--plot", type=Path, help="PNG of every run's KL and explained variance")
    parser.add_argument(
        "--summarise", type=Path, metavar="JSON", help="summarise (and --plot) a JSON; no runs"
    )
    args = parser.parse_args(argv)

    table: dict[str, Any] = {"settings": [], "runs": []}
    if args.summarise:
        table = json.loads(args.summarise.read_text())
    for setting in [] if args.summarise else (args.setting or [{}]):
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
    print("\n".join(summarise(table, args.kl_limit, args.warm_up)))
    if args.plot:
        print(f"plot: {plot(table, args.plot)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
