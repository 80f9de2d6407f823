"""The learning tests' bodies, shared by the tests and ``scripts/learning_sweep.py``.

Each body trains a tiny policy from ``seed`` (the agent's seed and ``torch.manual_seed``) at a
pinned number of torch threads and returns its figures: ``before`` and ``after`` (name ->
value of what the test judges, on the same held-out prompts), ``noise`` (name -> the standard
error of the gain, the prompt as the unit) where the test asks for it, and the plain figures of
the test's other assertions. The tests call a body at one seed and assert on its figures; the
sweep calls it over seeds and thread counts to set the tests' thresholds (lowest gain minus
three standard deviations of the gains, recorded in each test's docstring).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from helpers import make_word_start_reward, vector_env

import rlhf_env  # noqa: F401  (registers the tasks)
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.tasks import Task, arithmetic, build_task, smoke_arguments

#: Torch's intra-op threads in every learning test (``learning_threads`` in ``conftest.py``):
#: a thread count changes the order of float sums, so a run's figures depend on it; pinned, they
#: do not depend on the machine's cores or on ``OMP_NUM_THREADS``.
LEARNING_THREADS = 1

Figures = dict[str, Any]


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to ``threads``, then restore it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)


# -- statistics ---------------------------------------------------------------------------------


def prompt_means(values: Sequence[float], prompts: Sequence[str]) -> dict[str, float]:
    """The mean of ``values`` over each prompt's responses, by prompt (NaNs left out)."""
    groups: dict[str, list[float]] = {}
    for prompt, value in zip(prompts, values, strict=True):
        groups.setdefault(prompt, []).append(float(value))
    return {prompt: float(np.nanmean(group)) for prompt, group in groups.items()}


def paired_prompt_standard_error(before: Any, after: Any, key: str = "gold") -> float:
    """The standard error of ``after - before`` (two :class:`Evaluation` s of the same held-out
    prompts) with the prompt as the unit: each prompt's mean of ``per_response[key]`` over its
    samples, after minus before, then ``std(ddof=1) / sqrt(prompts)`` of those differences.
    The samples of one prompt share it, so they are not independent; the prompts are."""
    means = [
        prompt_means(result.per_response[key], result.rollout.prompts) for result in (before, after)
    ]
    if means[0].keys() != means[1].keys():
        raise ValueError("before and after must evaluate the same prompts")
    differences = np.array([means[1][p] - means[0][p] for p in means[0]])  # (P,)
    if differences.size < 2:
        return 0.0
    return float(differences.std(ddof=1) / np.sqrt(differences.size))


def changed_parameters(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """The names of ``module``'s parameters that differ from the copies in ``before``."""
    return [n for n, p in module.named_parameters() if not torch.equal(p, before[n])]


def parameter_copies(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


# -- the agents' easy task (test_agents.py, test_sb3_policy.py) ---------------------------------


def agent_configs() -> dict[str, tuple[type, Any]]:
    """The agents' learning test settings by id: (agent class, config)."""
    from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent, RLOOConfig

    return {
        "ppo": (PPOAgent, PPOConfig(learning_rate=2.5e-4, minibatch_size=16, kl_target=4.0,
                                    progress_bar=False)),
        "rloo": (RLOOAgent, RLOOConfig(learning_rate=2.5e-4, minibatch_size=16, kl_target=4.0,
                                       group_size=4, progress_bar=False)),
    }  # fmt: skip


def agent_beats_the_reference(
    agent: str, seed: int, threads: int, timesteps: int = 24_000, **overrides: Any
) -> Figures:
    """``agent`` ("ppo" or "rloo") on the easy task (the share of word-start tokens) on a
    tiny GPT-2 for ``timesteps`` tokens (``overrides``: config fields); the score over 64
    episodes (evaluation seed 1) before and after, the KL, the adaptive beta at the first and
    the last update, and which weights changed."""
    from rlhf_agents import ReferenceAgent, evaluate

    with torch_threads(threads):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        env = vector_env(tokenizer, make_word_start_reward(tokenizer), num_envs=32)
        weights = parameter_copies(env.policy)
        baseline = evaluate(ReferenceAgent(env), env, num_episodes=64, seed=1)
        agent_class, config = agent_configs()[agent]
        trained = agent_class(env, dataclasses.replace(config, seed=seed, **overrides))
        trained.learn(total_timesteps=timesteps)
        result = evaluate(trained, env, num_episodes=64, seed=1)
    return {
        "before": {"score": baseline.score},
        "after": {"score": result.score},
        "reference_kl": baseline.kl,
        "kl": result.kl,
        "betas": (trained.history[0]["train/beta"], trained.history[-1]["train/beta"]),
        "changed": changed_parameters(env.policy, weights),
    }


def sb3_ppo_beats_the_reference(
    seed: int, threads: int, timesteps: int = 16_000, kl_coef: float = 0.01, **overrides: Any
) -> Figures:
    """stable-baselines3's PPO with :class:`LanguageModelPolicy` on the easy task (KL
    coefficient ``kl_coef``) for ``timesteps`` tokens (``overrides``: PPO arguments); the score
    over 64 episodes (evaluation seed 1) before and after, and the KL."""
    from stable_baselines3 import PPO

    from rlhf_agents import PolicyAgent, ReferenceAgent, evaluate
    from rlhf_agents.sb3_policy import LanguageModelPolicy
    from rlhf_env.sb3_vec_env import SB3VecEnv

    with torch_threads(threads):
        torch.manual_seed(seed)
        tokenizer = build_tiny_tokenizer()
        env = vector_env(tokenizer, make_word_start_reward(tokenizer), num_envs=32,
                         kl_coef=kl_coef, autoreset_mode="SameStep")  # fmt: skip
        baseline = evaluate(ReferenceAgent(env), env, num_episodes=64, seed=1)
        settings = {"learning_rate": 5e-4, "n_steps": 16, "batch_size": 128, "n_epochs": 4,
                    "gamma": 1.0, "gae_lambda": 0.95} | overrides  # fmt: skip
        model = PPO(
            LanguageModelPolicy, SB3VecEnv(env), policy_kwargs={"model": env.policy},
            seed=seed, device="cpu", **settings,
        )  # fmt: skip
        assert model.policy.model is env.policy  # the env's KL reads the trained module
        model.learn(total_timesteps=timesteps)
        trained = evaluate(PolicyAgent(env), env, num_episodes=64, seed=1)
    return {"before": {"score": baseline.score}, "after": {"score": trained.score},
            "kl": trained.kl}  # fmt: skip


# -- Arithmetic (test_task_arithmetic.py) -------------------------------------------------------


def warm_start(policy, tokenizer, task: Task, steps: int, seed: int = 0) -> None:
    """Supervised steps on *training* problems (never held-out ones): the right number, half
    the time in ``<answer>`` tags and half the time bare (which the strict reward refuses)."""
    problems = task.reward_fn.problems
    rng, coin = np.random.default_rng(seed), random.Random(seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=3e-3)
    policy.train()
    for _ in range(steps):
        rows = []
        for _ in range(32):
            prompt = problems.sample(rng)
            ((answer, _),) = problems.answers([prompt])
            text = f" <answer>{answer}</answer>" if coin.random() < 0.5 else f" {answer}"
            response = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((tokenizer(prompt)["input_ids"], response))
        width = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id)  # (B, T)
        labels = torch.full((len(rows), width), -100)  # (B, T): loss on the response only
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for i, (p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            labels[i, len(p) : len(p) + len(r)] = torch.tensor(r)
            mask[i, : len(p) + len(r)] = 1
        loss = policy(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.eval()


def copy_tokenizer():
    """A tiny BPE tokenizer over the prompts and answers of one-term problems (digits stay one
    token each, so a number's digits can be copied one by one)."""
    coin = random.Random(0)
    system = f"System: {arithmetic.INSTRUCTION}\n"
    question = arithmetic.QUESTION_PREFIX + "{} ="
    corpus = [
        f"{system}User: {question.format(coin.randint(10, 99))}\nAssistant:" for _ in range(100)
    ]
    corpus += [f" <answer>{coin.randint(10, 99)}</answer>" for _ in range(100)]
    return build_tiny_tokenizer(corpus, vocab_size=330)


def arithmetic_exact_match(
    seed: int, threads: int, timesteps: int = 3000, agent: str = "rloo", **overrides: Any
) -> Figures:
    """One-term problems on a tiny GPT-2 warm-started to answer half the time in tags; RLOO
    (or ``agent``: any of ``rlhf_agents.make_agent``'s; seed ``seed``) for 3,000 tokens;
    held-out exact match and format (16 problems x 8 samples, sampling seed 1) before and
    after, with the prompt-unit standard errors of the gains, and each iteration's rollout KL
    (and PPO's explained variance) in ``trace``."""
    from rlhf_agents import PolicyAgent, evaluate, make_agent

    names = ("exact_match", "format")
    with torch_threads(threads):
        torch.manual_seed(seed)
        tokenizer = copy_tokenizer()
        policy = build_tiny_gpt2(tokenizer, seed=0)
        options = dict(
            terms=1, digits=2, eval_size=16, demonstrations=0, negative_share=None, harder_share=0
        )
        task, *_ = build_task("Arithmetic", policy, tokenizer, device="cpu", **options)
        warm_start(policy, tokenizer, task, steps=300)
        env = gym.make_vec(
            "rlhf_env/Arithmetic-v0", num_envs=32, policy=policy, tokenizer=tokenizer,
            max_new_tokens=8, max_prompt_tokens=40, kl_coef=0.01, **options,
        )  # fmt: skip
        assert env.task.eval_prompts == task.eval_prompts
        held_out = env.task.eval_prompts * 8  # 16 problems, 8 samples each

        def gold():
            return evaluate(PolicyAgent(env, seed=1), env, prompts=held_out, fluency=False)

        before = gold()
        config = {"learning_rate": 2e-3, "lr_schedule": "linear", "minibatch_size": 32,
                  "progress_bar": False, "seed": seed} | overrides  # fmt: skip
        trace: list[dict[str, float]] = []

        def record(_agent: Any, _rollout: Any, metrics: dict[str, float]) -> bool:
            kept = ("rollout/kl", "rollout/score", "train/explained_variance", "losses/value")
            trace.append({key: float(metrics[key]) for key in kept if key in metrics})
            return True

        make_agent(agent, env, **config).learn(total_timesteps=timesteps, callback=record)
        after = gold()
    return {
        "before": {name: before.metrics[f"gold/{name}"] for name in names},
        "after": {name: after.metrics[f"gold/{name}"] for name in names},
        "noise": {name: paired_prompt_standard_error(before, after, f"gold/{name}")
                  for name in names},
        "trace": trace,
    }  # fmt: skip


# -- PositiveReview and Harmless (test_tasks.py) ------------------------------------------------


def held_out_gold(env, samples_per_prompt: int):
    """The env's policy evaluated on its task's held-out prompts, each answered
    ``samples_per_prompt`` times (the same prompts and sampling seed at every call)."""
    from rlhf_agents import PolicyAgent, evaluate

    prompts = env.task.eval_prompts * samples_per_prompt
    return evaluate(PolicyAgent(env, seed=1), env, prompts=prompts, fluency=False)


def rloo_on_a_task(
    name: str,
    arguments: dict[str, Any],
    seed: int,
    threads: int,
    timesteps: int,
    kl_coef: float = 0.01,
    **config: Any,
) -> Figures:
    """RLOO (seed ``seed``, ``config``: its settings) for ``timesteps`` tokens on the tiny
    variant of task ``name`` built with ``arguments`` (tiny policy seed 0) and KL coefficient
    ``kl_coef``; the gold and the learned reward on the task's held-out prompts x 8 samples
    before and after, the gains' prompt-unit standard errors, the KL after, and the task's
    details."""
    from rlhf_agents import RLOOAgent, RLOOConfig

    with torch_threads(threads):
        torch.manual_seed(seed)
        env = gym.make_vec(
            f"rlhf_env/{name}-v0", num_envs=16, **(smoke_arguments(name) | arguments),
            kl_coef=kl_coef, progress=False,
        )  # fmt: skip
        before = held_out_gold(env, samples_per_prompt=8)
        config = {"minibatch_size": 16, "progress_bar": False, "seed": seed} | config
        RLOOAgent(env, RLOOConfig(**config)).learn(total_timesteps=timesteps)
        after = held_out_gold(env, samples_per_prompt=8)
    return {
        "before": {"gold": before.gold, "learned": before.metrics["learned"]},
        "after": {"gold": after.gold, "learned": after.metrics["learned"]},
        "noise": {
            key: paired_prompt_standard_error(before, after, key) for key in ("gold", "learned")
        },
        "kl": after.kl,
        "gold_name": before.gold_name,
        "details": env.task.details,
    }


def positive_review_judge(seed: int, threads: int, **settings: Any) -> Figures:
    """PositiveReview's recipe on tiny models: RLOO on the learned proxy, the judge as gold."""
    arguments = {
        "eval_prompts": 16, "preference_prompts": 64, "responses_per_prompt": 4,
        "sample_tokens": 6, "max_new_tokens": 6, "max_prompt_tokens": 48,
    }  # fmt: skip
    settings = {"timesteps": 4000, "learning_rate": 2e-3, "kl_coef": 0.1} | settings
    return rloo_on_a_task("PositiveReview", arguments, seed, threads, **settings)


def harmless_reward(seed: int, threads: int, **settings: Any) -> Figures:
    """Harmless on tiny models: RLOO on a reward model trained on 320 HH-RLHF pairs."""
    arguments = {"max_pairs": 400, "eval_fraction": 0.2, "eval_prompts": 64,
                 "max_prompt_tokens": 128}  # fmt: skip
    settings = {"timesteps": 6000, "learning_rate": 6e-3, "lr_schedule": "linear"} | settings
    return rloo_on_a_task("Harmless", arguments, seed, threads, **settings)


#: Every learning test's body by the sweep's name for it.
LEARNING_RUNS: dict[str, Callable[[int, int], Figures]] = {
    "agents[ppo]": lambda seed, threads: agent_beats_the_reference("ppo", seed, threads),
    "agents[rloo]": lambda seed, threads: agent_beats_the_reference("rloo", seed, threads),
    "sb3_ppo": sb3_ppo_beats_the_reference,
    "arithmetic": arithmetic_exact_match,
    "arithmetic[ppo]": lambda seed, threads: arithmetic_exact_match(seed, threads, agent="ppo"),
    "positive_review": positive_review_judge,
    "harmless": harmless_reward,
}
