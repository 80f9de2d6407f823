"""Reward over-optimisation: gold and learned reward against sqrt(KL) over a long RL run.

Gao et al. (2022) showed that as a policy is optimised against a learned reward model, the
learned reward keeps rising while the gold reward (the objective the reward model stands in
for) rises, peaks and falls, as functions of ``d = sqrt(KL(pi || pi_ref))``. This script
measures that curve on our stack: PPO in the vector env against a small reward model (e.g. the
demo's, trained on ~1,500 pairs), a low KL coefficient so that the policy travels far, and
every ``--eval-every`` updates one held-out evaluation: one response per held-out prompt from
the current policy, its gold score (VADER), its learned score and its KL to the initial model.

Writes JSON and a PNG (gold and learned reward against sqrt(KL)); prints a table.

    python benchmarks/overoptimization.py --reward-model rlhf-demo/reward_model \\
        --total-timesteps 32768 --kl-coef 0.01 --eval-every 8
    python benchmarks/overoptimization.py --model tiny --reward-model RM --total-timesteps 256
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_agents import PPOAgent, PPOConfig
from rlhf_agents.policy_gradient import PolicyGradientAgent
from rlhf_agents.rollout import Rollout
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.assets import resolve
from rlhf_env.data.prompts import balanced_imdb_prompt_sets
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer, load_causal_lm, load_tokenizer
from rlhf_env.models.efficient import apply_training_setup
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.oracles import make_oracle
from rlhf_pipeline.held_out import evaluate_policy

RESULTS = Path(__file__).parent / "results"


def load_policy(model: str) -> tuple[torch.nn.Module, Any]:
    """``(policy, tokenizer)`` in float32 on the CPU: ``tiny`` or a name / folder."""
    if model == "tiny":
        tokenizer = build_tiny_tokenizer()
        return build_tiny_gpt2(tokenizer, seed=0), tokenizer
    folder = resolve(model)
    return load_causal_lm(folder, device="cpu", dtype=torch.float32), load_tokenizer(folder)


def plot(points: list[dict[str, float]], path: Path) -> None:
    """Gold and learned reward of the held-out evaluations against sqrt(KL)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    distance = np.sqrt(np.maximum([p["kl"] for p in points], 0.0))
    figure, learned_axis = plt.subplots(figsize=(7, 4))
    gold_axis = learned_axis.twinx()
    learned_axis.plot(distance, [p["learned_score"] for p in points], "o-", color="tab:blue")
    learned_axis.set_ylabel("learned reward (RM score)", color="tab:blue")
    gold_axis.plot(distance, [p["gold_score"] for p in points], "s-", color="tab:orange")
    gold_axis.set_ylabel("gold reward (VADER)", color="tab:orange")
    learned_axis.set_xlabel("sqrt(KL to the initial policy), sqrt(nats)")
    learned_axis.set_title("Reward over-optimisation: held-out evaluations during PPO")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--model", default="smollm2-135m-instruct", help="policy: name, folder or 'tiny'")
    add("--reward-model", required=True, help="reward-model folder (e.g. the demo's)")
    add("--training-setup", default="frozen:24", help="'full', 'frozen:N' or 'lora:R'")
    add("--num-envs", type=int, default=16)
    add("--new", type=int, default=16, help="max new tokens per response")
    add("--minibatch", type=int, default=8, help="responses per optimizer step")
    add("--total-timesteps", type=int, default=32_768)
    add("--learning-rate", type=float, default=2e-4)
    add("--kl-coef", type=float, default=0.01, help="fixed beta (low: the policy travels far)")
    add("--eval-every", type=int, default=8, help="updates between held-out evaluations")
    add("--train-prompts", type=int, default=4096)
    add("--eval-prompts", type=int, default=64)
    add("--seed", type=int, default=0)
    add("--out", type=Path, default=RESULTS / "overoptimization.json")
    args = parser.parse_args()

    policy, tokenizer = load_policy(args.model)
    policy, reference = apply_training_setup(policy, args.training_setup)
    train_prompts, eval_prompts = balanced_imdb_prompt_sets([args.train_prompts, args.eval_prompts])
    reward_model = RewardModel.from_pretrained(args.reward_model, device="cpu")
    gold = make_oracle("vader")
    options: dict[str, Any] = {
        "tokenizer": tokenizer, "reward_fn": reward_model, "max_new_tokens": args.new,
        "max_prompt_tokens": 48, "kl_coef": args.kl_coef, "device": "cpu",
    }  # fmt: skip
    env = TextGenerationVectorEnv(
        policy, prompts=train_prompts, reference=reference, num_envs=args.num_envs, **options
    )
    eval_env = TextGenerationVectorEnv(
        policy, prompts=eval_prompts, reference=env.reference, num_envs=32, **options
    )
    agent = PPOAgent(
        env,
        PPOConfig(
            learning_rate=args.learning_rate, epochs=2, minibatch_size=args.minibatch,
            kl_coef=args.kl_coef, seed=args.seed, progress_bar=True,
        ),
    )  # fmt: skip
    points: list[dict[str, float]] = []

    def held_out(tokens: int) -> None:
        summary = evaluate_policy(eval_env, eval_prompts, gold, seed=args.seed + 1)["summary"]
        points.append({"timesteps": tokens, **summary})
        print(
            f"\n{tokens:>7} tokens: gold {summary['gold_score']:+.3f}, learned "
            f"{summary['learned_score']:+.3f}, KL {summary['kl']:.2f}",
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

    print("\n| tokens | sqrt(KL) | KL | learned | gold |\n|---|---|---|---|---|")
    for point in points:
        print(
            f"| {point['timesteps']} | {np.sqrt(max(point['kl'], 0.0)):.2f} | "
            f"{point['kl']:.2f} | {point['learned_score']:+.3f} | {point['gold_score']:+.3f} "
            f"± {point['gold_score_sem']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure = args.out.with_suffix(".png")
    plot(points, figure)
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "arguments": {k: str(v) for k, v in vars(args).items()},
        "seconds": time.perf_counter() - start,
        "points": points,
        "history": agent.history,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} and {figure}")


if __name__ == "__main__":
    main()
