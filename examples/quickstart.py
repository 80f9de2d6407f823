"""Quickstart: a few episodes of the TextGeneration environment on a tiny offline model.

Run with ``make demo`` (or ``python examples/quickstart.py``). The model is random-initialised,
so the text is gibberish: this shows the API and the reward breakdown, not learning.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch

import rlhf_env
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer

POSITIVE_WORDS = ("good", "great", "love", "best", "wonderful", "fun")


def positive_word_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """One point per positive word in the response: a stand-in for a learned reward model."""
    return [float(sum(r.lower().count(w) for w in POSITIVE_WORDS)) for r in responses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = build_tiny_tokenizer()
    policy = build_tiny_gpt2(tokenizer, n_layer=2, n_embd=64, seed=0)
    # By default the reference is a frozen copy of the policy (KL = 0 before training). Here a
    # second random model stands in for it, so the KL term is visible in the output.
    reference = build_tiny_gpt2(tokenizer, n_layer=2, n_embd=64, seed=1)
    env = gym.make(
        rlhf_env.ENV_ID,
        policy=policy,
        tokenizer=tokenizer,
        reward_fn=positive_word_reward,
        reference=reference,
        prompts=["This movie was", "I think the acting", "One of the best"],
        max_new_tokens=args.max_new_tokens,
        kl_coef=0.05,
        render_mode="ansi",
    )
    generator = torch.Generator().manual_seed(args.seed)
    for episode in range(args.episodes):
        env.reset(seed=args.seed + episode)
        episode_return, kl_sum, done = 0.0, 0.0, False
        while not done:
            # The env already holds the policy's next-token logits: sample from them.
            probs = torch.softmax(env.unwrapped.policy_logits, dim=-1)
            action = int(torch.multinomial(probs, 1, generator=generator))
            _, reward, terminated, truncated, info = env.step(action)
            episode_return += reward
            kl_sum += info["kl"]
            done = terminated or truncated
        print(f"--- episode {episode}")
        print(env.render())
        print(
            f"return {episode_return:+.4f} = score {info['score']:+.4f} "
            f"- kl_coef {env.unwrapped.kl_coef} * sum KL {kl_sum:+.4f}"
        )
    env.close()


if __name__ == "__main__":
    main()
