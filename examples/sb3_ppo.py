"""stable-baselines3's own PPO trains a language model on the TextGeneration environment.

Nothing of SB3 is forked or patched: the env is wrapped by
``rlhf_env.sb3_vec_env.SB3VecEnv`` and the policy class is
``rlhf_agents.sb3_policy.LanguageModelPolicy``, which trains the very module the env reads
for its KL penalty. The task is easy on purpose (reward = the share of response tokens that
start a word, on a tiny random-initialised GPT-2), so learning shows within a CPU minute:

    python examples/sb3_ppo.py --timesteps 16000
"""

from __future__ import annotations

import argparse

import torch
from stable_baselines3 import PPO

from rlhf_agents import PolicyAgent, ReferenceAgent, evaluate
from rlhf_agents.sb3_policy import LanguageModelPolicy
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.sb3_vec_env import SB3VecEnv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=16_000, help="env steps (tokens)")
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    tokenizer = build_tiny_tokenizer()
    word_starts = {i for i in range(len(tokenizer)) if tokenizer.decode([i]).startswith(" ")}

    def word_start_share(prompts: list[str], responses: list[str]) -> list[float]:
        """Share of the response's tokens that start a word (a leading space)."""
        scores = []
        for response in responses:
            ids = tokenizer.encode(response, add_special_tokens=False)
            scores.append(sum(i in word_starts for i in ids) / max(len(ids), 1))
        return scores

    vector_env = TextGenerationVectorEnv(
        policy=build_tiny_gpt2(tokenizer, seed=args.seed),
        tokenizer=tokenizer,
        reward_fn=word_start_share,
        prompts=["This movie was", "I think the acting", "The plot", "Honestly, the music"],
        num_envs=args.num_envs,
        max_new_tokens=8,
        max_prompt_tokens=8,
        kl_coef=0.05,
        autoreset_mode="SameStep",  # SB3 resets in the step that ends an episode
    )
    before = evaluate(ReferenceAgent(vector_env), vector_env, num_episodes=64, seed=1)

    model = PPO(
        LanguageModelPolicy,
        SB3VecEnv(vector_env),
        policy_kwargs={"model": vector_env.policy},
        learning_rate=5e-4,
        n_steps=16,
        batch_size=128,
        gamma=1.0,
        seed=args.seed,
        device="cpu",
    )
    model.learn(total_timesteps=args.timesteps)

    after = evaluate(PolicyAgent(vector_env), vector_env, num_episodes=64, seed=1)
    print(f"reference policy: score {before.score:.3f}")
    print(f"after SB3 PPO:    score {after.score:.3f}, KL to the reference {after.kl:.2f} nats")
    print("sample:", repr(after.rollout.prompts[0] + after.rollout.responses[0]))


if __name__ == "__main__":
    main()
