"""What the tests share: prompts, reward functions and env builders on tiny offline models.

Plain functions, so that the subprocess workers (``distributed_worker.py``, ``fault_worker.py``)
import them too; ``conftest.py`` wraps them in fixtures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf_agents.forward import gather_logprobs, response_forward
from rlhf_agents.rollout import Rollout
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.models.efficient import freeze_lower_layers
from rlhf_env.models.tiny import build_tiny_causal_lm
from rlhf_env.rewards.model import RewardModel
from rlhf_env.tasks import Task

PROMPTS = [
    "This movie was",
    "I think the acting",
    "The plot of this film is",
    "Honestly, the music",
    "One of the best",
]
#: Eight distinct prompts, for tests that shard prompts over processes.
NUMBERED_PROMPTS = [f"Review {i}: the film" for i in range(8)]

Reward = Callable[[list[str], list[str]], list[float]]

#: The subjects of the reward-model tests' pairs.
SUBJECTS = ["The film", "This movie", "The plot", "The acting", "The music", "The ending"]


def length_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """A deterministic reward: a tenth of the response's character count."""
    return [len(response) / 10 for response in responses]


def make_word_start_reward(tokenizer: Any) -> Reward:
    """The agents' easy task: the share of response tokens that start a word (a leading space
    and at least one more character). 34 of the tiny tokenizer's 384 tokens qualify, so a
    random-init policy scores about 0.06 and the best policy 1.0."""
    targets = {
        i
        for i in range(len(tokenizer))
        if len(text := tokenizer.decode([i])) > 1 and text[0] == " "
    }

    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        scores = []
        for response in responses:
            ids = tokenizer.encode(response, add_special_tokens=False)
            scores.append(sum(i in targets for i in ids) / max(len(ids), 1))
        return scores

    return reward


def vector_env(
    tokenizer: Any,
    reward_fn: Reward = length_reward,
    policy: torch.nn.Module | None = None,
    prompts: list[str] | None = None,
    reference: torch.nn.Module | None = None,
    **options: Any,
) -> TextGenerationVectorEnv:
    """A vector env on the tiny GPT-2 (a fresh one unless ``policy`` is given), up to 12 prompt
    and 8 response tokens, beta 0.05; ``options`` override any setting."""
    settings = {"num_envs": 8, "max_new_tokens": 8, "max_prompt_tokens": 12, "kl_coef": 0.05}
    return TextGenerationVectorEnv(
        policy if policy is not None else build_tiny_gpt2(tokenizer, seed=0),
        tokenizer,
        reward_fn,
        prompts if prompts is not None else PROMPTS,
        reference,
        **(settings | options),
    )


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``rlhf-env ARGV`` in this process: ``(exit status, stdout, stderr)``. (The subprocess
    runs of every command, as a user starts them, are in ``test_cli.py``.)"""
    import contextlib
    import io

    from rlhf_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            status = int(exit_.code or 0)
    return status, out.getvalue(), err.getvalue()


def separable_pairs(count: int = 48) -> list[PreferencePair]:
    """Chosen responses end in 'great', rejected in 'awful': trivially separable."""
    return [
        PreferencePair(SUBJECTS[i % len(SUBJECTS)], f" was {'really ' * (i % 3)}great.",
                       f" was {'really ' * (i % 2)}awful.")
        for i in range(count)
    ]  # fmt: skip


def preference_margins(reward_model: Reward) -> list[float]:
    """How much ``reward_model`` scores " was great." above " was awful." for subjects that
    ``separable_pairs`` never uses. A tiny model trained on those pairs (2 epochs) gives about
    0.3 each; an untrained one 0.002."""
    subjects = ["The story", "This show", "The actors", "The songs"]
    great = reward_model(subjects, [" was great."] * len(subjects))
    awful = reward_model(subjects, [" was awful."] * len(subjects))
    return [good - bad for good, bad in zip(great, awful, strict=True)]


def save_tiny_backbone(directory: Path) -> Path:
    """A tiny GPT-2 sequence-classification backbone with its tokenizer, saved like a hub
    checkpoint in ``directory``."""
    tokenizer = build_tiny_tokenizer(
        corpus=[f"{s} was great. {s} was awful." for s in SUBJECTS] * 3, vocab_size=320
    )
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_reward_model(backbone: Path, directory: Path) -> Path:
    """An untrained reward model on the tiny ``backbone`` (a random scalar head), saved in
    ``directory`` for ``--reward``: unlike the sentiment oracles on a tiny policy's noise
    (all 0), it scores every response differently (raw scores spread by about 0.1), so an
    agent trained on it sees non-zero advantages."""
    return RewardModel.from_backbone(backbone, device="cpu").save_pretrained(directory)


def make_tiny_task(
    name: str, tokenizer: Any, held_out: int = 4, gold_name: str = "word_starts", **details: Any
) -> Task:
    """A task over tiny models: response length as the training reward (dense), the share of
    word-start tokens as the gold score (named ``gold_name``), the length a second gold."""
    return Task(
        name=name,
        train_prompts=PROMPTS,
        eval_prompts=[f"Review {i}: the film" for i in range(held_out)],
        reward_fn=length_reward,
        gold={gold_name: make_word_start_reward(tokenizer), "length": length_reward},
        env_options={"max_new_tokens": 4, "max_prompt_tokens": 12},
        details=details,
    )


def check_env_strictly(env: Any, skip_render_check: bool = True, sb3: bool = False) -> None:
    """Gymnasium's env checker (and, with ``sb3``, stable-baselines3's) with every warning an
    error: gymnasium 1.x reports an observation outside its space, a wrong dtype or a
    non-deterministic reset as a warning, which a plain call lets pass."""
    import warnings

    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=skip_render_check)
        if sb3:
            from stable_baselines3.common.env_checker import check_env as sb3_check_env

            sb3_check_env(env, warn=True)


def dialogue_rollout(prompts, continuations, kinds, seed=0):
    """A rollout of episodes given as token ids: ``kinds[i][t]`` is ``"a"`` where continuation
    token ``t`` is an action, ``"i"`` where the env inserted it (a user turn). Actions get random
    rewards and KL, inserted tokens none; ``logprobs`` are 0 (see :func:`behaviour_is`)."""
    episodes, prompt_width = len(prompts), max(map(len, prompts))
    width = max(map(len, kinds))
    prompt_ids = torch.zeros(episodes, prompt_width, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    continuation_ids = torch.zeros(episodes, width, dtype=torch.long)
    action_mask = torch.zeros(episodes, width)
    inserted_mask = torch.zeros(episodes, width)
    for i, (prompt, ids, kind) in enumerate(zip(prompts, continuations, kinds, strict=True)):
        prompt_ids[i, prompt_width - len(prompt) :] = torch.tensor(prompt)
        prompt_mask[i, prompt_width - len(prompt) :] = 1
        continuation_ids[i, : len(ids)] = torch.tensor(ids)
        action_mask[i, : len(kind)] = torch.tensor([float(k == "a") for k in kind])
        inserted_mask[i, : len(kind)] = torch.tensor([float(k == "i") for k in kind])
    generator = torch.Generator().manual_seed(seed)
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        continuation_ids=continuation_ids,
        action_mask=action_mask,
        inserted_mask=inserted_mask,
        rewards=torch.randn(episodes, width, generator=generator) * action_mask,
        logprobs=torch.zeros(episodes, width),
        kl=torch.rand(episodes, width, generator=generator) * action_mask,
        scores=torch.randn(episodes, generator=generator),
        prompts=[f"prompt {i}" for i in range(episodes)],
        responses=[f"response {i}" for i in range(episodes)],
        turn_scores=[[] for _ in range(episodes)],
        conversations=[[] for _ in range(episodes)],
    )


def random_ids(generator, count, vocab_size):
    return torch.randint(3, vocab_size, (count,), generator=generator).tolist()


@torch.no_grad()
def behaviour_is(policy, rollout):
    """``rollout`` with the log-probs of ``policy`` as its behaviour log-probs (ratios of 1)."""
    logits, _ = response_forward(policy, rollout.prompt_ids, rollout.prompt_mask,
                                 rollout.continuation_ids, rollout.context_mask)  # fmt: skip
    logprobs = gather_logprobs(logits, rollout.continuation_ids) * rollout.action_mask
    return dataclasses.replace(rollout, logprobs=logprobs)


def frozen_pair(
    architecture: str, tokenizer: Any, depth: int | None = None, device: str = "cpu"
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(policy, reference)`` of ``frozen:depth`` (default: half the blocks) on the tiny
    ``architecture``, the policy's trainable weights moved away from the reference's (seeded
    noise of 0.05), so the two differ above the shared blocks."""
    model = build_tiny_causal_lm(architecture, tokenizer, seed=0).to(device)
    depth = model.config.num_hidden_layers // 2 if depth is None else depth
    policy, reference = freeze_lower_layers(model, depth)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            if parameter.requires_grad:
                noise = torch.randn(parameter.shape, generator=generator, device=device)
                parameter.add_(noise * 0.05)
    return policy, reference


def roll(venv: TextGenerationVectorEnv, steps: int, seed: int) -> list[tuple]:
    """Step ``venv`` with seeded random actions, resetting finished rows as its autoreset mode
    asks; returns every step's observation ids, rewards, terminated and truncated flags and
    KL (0 for rows that did not act)."""
    rng = np.random.default_rng(seed)
    venv.reset(seed=seed)
    trace = []
    for _ in range(steps):
        actions = rng.integers(5, 300, size=venv.num_envs)
        observation, reward, terminated, truncated, info = venv.step(actions)
        acted = info.get("_kl", np.zeros(venv.num_envs, dtype=bool))
        kl = np.where(acted, info.get("kl", 0.0), 0.0)
        trace.append((observation["input_ids"].copy(), reward, terminated, truncated, kl))
        ended = terminated | truncated
        if venv.autoreset_mode.name == "DISABLED" and ended.any():
            venv.reset(options={"reset_mask": ended})
    return trace


def assert_same_traces(first: list[tuple], second: list[tuple]) -> None:
    """Two :func:`roll` traces: the same observations and flags, rewards and KL within 1e-5."""
    assert len(first) == len(second)
    for one, other in zip(first, second, strict=True):
        assert np.array_equal(one[0], other[0])
        assert np.array_equal(one[2], other[2]) and np.array_equal(one[3], other[3])
        np.testing.assert_allclose(one[1], other[1], atol=1e-5, rtol=0)
        np.testing.assert_allclose(one[4], other[4], atol=1e-5, rtol=0)


@contextmanager
def forward_shapes(module: torch.nn.Module) -> Iterator[list[tuple[int, int]]]:
    """The ``(rows, tokens)`` of every forward of ``module`` inside the block."""
    shapes: list[tuple[int, int]] = []

    def record(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        shapes.append((hidden.shape[0], hidden.shape[1]))

    handle = module.register_forward_hook(record, with_kwargs=True)
    try:
        yield shapes
    finally:
        handle.remove()


def assert_vector_matches_singles(
    venv: Any,
    envs: list[Any],
    plans: list[list[int]],
    seed: int,
    info_keys: tuple[str, ...] = ("outcome",),
) -> int:
    """Play ``plans[i]`` (token ids; the last repeated once it runs out) in row ``i`` of
    ``venv`` (reset with ``seed``, finished rows held) and in ``envs[i]`` (reset with
    ``seed + i``) until every episode ends: the same observations, rewards, ends and, where a
    single env reports them, ``info_keys``. Returns the vector env's steps."""
    done, step = [False] * len(envs), 0
    with venv.holding_ended():
        obs, _ = venv.reset(seed=seed)
        for i, env in enumerate(envs):
            np.testing.assert_array_equal(
                obs["input_ids"][i], env.reset(seed=seed + i)[0]["input_ids"]
            )
        while not all(done):
            actions = np.array([plan[min(step, len(plan) - 1)] for plan in plans])
            obs, rewards, terms, truncs, infos = venv.step(actions)
            for i, env in enumerate(envs):
                if done[i]:
                    continue
                e_obs, e_reward, e_term, e_trunc, e_info = env.step(actions[i])
                np.testing.assert_array_equal(obs["input_ids"][i], e_obs["input_ids"])
                assert (terms[i], truncs[i]) == (e_term, e_trunc)
                assert abs(rewards[i] - e_reward) <= 1e-5, (rewards[i], e_reward)
                for key in info_keys:
                    if key in e_info:
                        assert infos[key][i] == e_info[key], key
                done[i] = e_term or e_trunc
            step += 1
    return step
