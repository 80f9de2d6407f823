"""Reward over-optimisation: gold and learned reward against sqrt(KL) over a long RL run.

Gao et al. (2022) showed that as a policy is optimised against a learned reward model, the
learned reward keeps rising while the gold reward (the objective the reward model stands in
for) rises, peaks and falls, as functions of ``d = sqrt(KL(pi || pi_ref))``. This script
measures that curve on our stack, on a task of :mod:`rlhf_env.tasks` (``--task``): PPO in the
vector env against the task's learned reward model (or ``--reward-model``), a low KL
coefficient so that the policy travels far, and every ``--eval-every`` updates one held-out
evaluation: one response per held-out prompt from the current policy, its learned score, its KL
to the initial model, its perplexity under it, and the task's gold metrics. PositiveReview's
are the MiniLM sentiment judge, the judge times a fluency factor (``judge_fluent``, which
punishes degenerate text) and VADER; Harmless's is its gold model (a linear probe on
SmolLM2's hidden states fitted on the human pairs, stronger than the MiniLM reward model
trained on them).

Writes JSON and a PNG (learned reward and every gold against sqrt(KL)); prints a table.

    python benchmarks/overoptimization.py --total-timesteps 32768 --kl-coef 0.01 --eval-every 8
    python benchmarks/overoptimization.py --task Harmless --new 24 --option max_prompt_tokens=128
    python benchmarks/overoptimization.py --smoke --total-timesteps 64 --eval-every 1
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from suite import add_option_argument

from rlhf_agents import PPOAgent, PPOConfig
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.assets import resolve
from rlhf_env.models import load_causal_lm, load_tokenizer
from rlhf_env.models.efficient import apply_training_setup
from rlhf_env.rewards.model import RewardModel
from rlhf_env.tasks import make_task_vector_env, smoke_arguments
from rlhf_pipeline.held_out import evaluate_policy

#: Responses kept per evaluation (their prompts' last 120 characters with them).
SAMPLES = 4
#: The gold metrics' colours, in the order of a task's gold.
COLOURS = ("tab:orange", "tab:red", "tab:green", "tab:purple")

RESULTS = Path(__file__).parent / "results"


def plot(points: list[dict[str, float]], golds: list[str], path: Path) -> None:
    """Gold and learned reward of the held-out evaluations against sqrt(KL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distance = np.sqrt(np.maximum([p["kl"] for p in points], 0.0))
    figure, learned_axis = plt.subplots(figsize=(7, 4))
    gold_axis = learned_axis.twinx()
    learned_axis.plot(distance, [p["learned_score"] for p in points], "o-", color="tab:blue")
    learned_axis.set_ylabel("learned reward (RM score)", color="tab:blue")
    for name, colour in zip(golds, COLOURS, strict=False):
        values = [p.get(f"gold/{name}", np.nan) for p in points]
        gold_axis.plot(distance, values, "s-", color=colour, label=f"gold: {name}")
    gold_axis.set_ylabel("gold scores")
    gold_axis.legend(loc="lower right")
    learned_axis.set_xlabel("sqrt(KL to the initial policy), sqrt(nats)")
    learned_axis.set_title("Reward over-optimisation: held-out evaluations during PPO")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--task", default="PositiveReview", help="the task (its held-out prompts and gold)")
    add_option_argument(parser, "a task or env option (e.g. max_prompt_tokens=128); repeatable")
    add("--model", default="smollm2-135m-instruct", help="policy: asset name or folder")
    add("--smoke", action="store_true", help="the task's tiny variant: plumbing in seconds")
    add("--reward-model", help="a reward-model folder instead of the task's learned one")
    add("--training-setup", default="frozen:24", help="'full', 'frozen:N' or 'lora:R'")
    add("--num-envs", type=int, default=16)
    add("--new", type=int, default=16, help="max new tokens per response")
    add("--minibatch", type=int, default=8, help="responses per optimizer step")
    add("--total-timesteps", type=int, default=32_768)
    add("--learning-rate", type=float, default=2e-4)
    add("--kl-coef", type=float, default=0.01, help="fixed beta (low: the policy travels far)")
    add("--eval-every", type=int, default=8, help="updates between held-out evaluations")
    add("--train-prompts", type=int, default=4096, help="PositiveReview's training prompts")
    add("--eval-prompts", type=int, default=64)
    add("--seed", type=int, default=0)
    add("--out", type=Path, default=RESULTS / "overoptimization.json")
    args = parser.parse_args()

    if args.smoke:
        arguments = smoke_arguments(args.task)
        policy, tokenizer = arguments.pop("policy"), arguments.pop("tokenizer")
    else:
        folder = resolve(args.model)
        arguments = {"max_new_tokens": args.new}
        if args.task == "PositiveReview":
            arguments["train_prompts"] = args.train_prompts
        policy = load_causal_lm(folder, device="cpu", dtype=torch.float32)
        tokenizer = load_tokenizer(folder)
    arguments |= dict(args.option)
    policy, reference = apply_training_setup(policy, args.training_setup)
    if args.reward_model:
        arguments["reward_fn"] = RewardModel.from_pretrained(args.reward_model, device="cpu")
    arguments |= {"kl_coef": args.kl_coef, "device": "cpu", "seed": args.seed}
    env = make_task_vector_env(
        args.task, num_envs=args.num_envs, policy=policy, tokenizer=tokenizer, reference=reference,
        **arguments,
    )  # fmt: skip
    task = env.task
    golds = list(task.gold)
    eval_prompts = task.eval_prompts[: args.eval_prompts]
    eval_env = TextGenerationVectorEnv(
        policy, tokenizer, arguments.get("reward_fn", task.reward_fn), eval_prompts, env.reference,
        config=env.config, num_envs=min(32, len(eval_prompts)),
    )  # fmt: skip
    agent = PPOAgent(
        env,
        PPOConfig(
            learning_rate=args.learning_rate, epochs=2, minibatch_size=args.minibatch,
            kl_coef=args.kl_coef, seed=args.seed, progress_bar=True,
        ),
    )  # fmt: skip
    points: list[dict[str, float]] = []

    def held_out(tokens: int) -> None:
        result = evaluate_policy(eval_env, eval_prompts, gold=task.gold, seed=args.seed + 1)
        summary = result["summary"]
        samples = [
            {"prompt": sample["prompt"][-120:], "response": sample["response"]}
            for sample in result["samples"][:SAMPLES]
        ]
        points.append({"timesteps": tokens, **summary, "samples": samples})
        scores = ", ".join(f"{name} {summary[f'gold/{name}']:.3f}" for name in golds)
        print(
            f"\n{tokens:>7} tokens: learned {summary['learned_score']:+.3f}, KL "
            f"{summary['kl']:.2f}, {scores}, perplexity {summary['perplexity']:.1f}",
            flush=True,
        )

    def every_few_updates(agent: PolicyGradientAgent, rollout: Rollout, record: dict) -> None:
        if agent.iterations % args.eval_every == 0:
            held_out(agent.num_timesteps)

    start = time.perf_counter()
    held_out(0)
    agent.learn(args.total_timesteps, callback=every_few_updates)
    if agent.iterations % args.eval_every:
        held_out(agent.num_timesteps)

    header = " | ".join(golds)
    print(f"\n| tokens | sqrt(KL) | KL | learned | {header} | perplexity |")
    print("|---" * (5 + len(golds)) + "|")
    for point in points:
        scores = " | ".join(f"{point[f'gold/{name}']:.3f}" for name in golds)
        print(
            f"| {point['timesteps']} | {np.sqrt(max(point['kl'], 0.0)):.2f} | "
            f"{point['kl']:.2f} | {point['learned_score']:+.3f} | {scores} | "
            f"{point['perplexity']:.1f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_suffix(".png")
    plot(points, golds, figure)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - start,
        "task": task.details,
        "points": points,
        "history": agent.history,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} and {figure}")


if __name__ == "__main__":
    main()
