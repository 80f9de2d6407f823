"""Faults: reward functions that raise or return NaN for one response of a batch, processes
killed (SIGKILL) in the middle of a checkpoint save or of a run, and resuming after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PROMPTS, length_reward, vector_env
from safetensors.torch import load_file

from rlhf_agents import PPOAgent
from rlhf_agents.checkpoint import LATEST
from rlhf_env import TextGenerationEnv, TextGenerationVectorEnv
from rlhf_env.rewards.base import RewardError

WORKER = Path(__file__).with_name("fault_worker.py")


# -- a reward function failing on one response ------------------------------------------------


class FailsOnce:
    """Scores by length, but fails (raises or returns NaN) the first time it sees ``prompt``."""

    def __init__(self, prompt: str, how: str) -> None:
        self.prompt, self.how, self.failed = prompt, how, False

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        scores = [len(response) / 10 for response in responses]
        if self.prompt in prompts and not self.failed:
            if self.how == "raise":
                if len(prompts) == 1:  # the culprit alone: it fails for good this time
                    self.failed = True
                raise KeyError("no score for this text")
            self.failed = True
            scores[prompts.index(self.prompt)] = float("nan")
        return scores


def run_vector(env: TextGenerationVectorEnv, steps: int) -> list[tuple]:
    return [env.step(np.full(env.num_envs, 30 + t)) for t in range(steps)]


@pytest.mark.parametrize("how", ["raise", "nan"])
def test_a_reward_failing_on_one_sub_env_is_named_and_corrupts_nothing(tokenizer, gpt2, how):
    def make(reward_fn) -> TextGenerationVectorEnv:
        env = TextGenerationVectorEnv(
            gpt2, tokenizer, reward_fn, PROMPTS, num_envs=3, max_new_tokens=2, kl_coef=0.1
        )
        env.reset(seed=0, options={"prompts": ["This movie was", "Bad prompt", "I think"]})
        return env

    faulty, healthy = make(FailsOnce("Bad prompt", how)), make(FailsOnce("unseen", how))
    run_vector(faulty, 1)
    expected = run_vector(healthy, 2)[-1]
    with pytest.raises(RewardError, match=r"sub-env 1 \(prompt 'Bad prompt'") as error:
        faulty.step(np.full(3, 31))  # the last token: every sub-env is scored
    assert ("KeyError" in str(error.value)) == (how == "raise")
    # Nothing was committed: the same step again (the reward now works) gives what a healthy
    # env gives, token for token and reward for reward.
    obs, rewards, _, truncated, infos = faulty.step(np.full(3, 31))
    np.testing.assert_array_equal(obs["input_ids"], expected[0]["input_ids"])
    np.testing.assert_allclose(rewards, expected[1])
    np.testing.assert_array_equal(truncated, expected[3])
    np.testing.assert_allclose(infos["score"], expected[4]["score"])


def test_a_reward_raising_in_the_single_env_names_the_prompt(tokenizer, gpt2):
    env = TextGenerationEnv(
        gpt2, tokenizer, FailsOnce("Bad prompt", "raise"), PROMPTS, max_new_tokens=1
    )
    env.reset(seed=0, options={"prompt": "Bad prompt"})
    with pytest.raises(RewardError, match=r"raised KeyError.*the episode \(prompt 'Bad prompt'"):
        env.step(30)
    _, reward, _, truncated, _ = env.step(30)  # the env is still mid-episode, unharmed
    assert truncated and np.isfinite(reward)


# -- processes killed for real ------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, env=environment
    )


def wait_for_line(process: subprocess.Popen, wanted: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(wanted):
            return line
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the worker never printed {wanted!r} (exit {process.poll()})")


@pytest.mark.long
def test_a_process_killed_while_saving_leaves_a_loadable_checkpoint(tokenizer, tmp_path):
    """SIGKILL at random moments of a loop of saves (some replacing a checkpoint of the same
    name); after each kill the latest checkpoint loads, and holds one save's complete weights."""
    run = tmp_path / "run"
    rng = np.random.default_rng(0)
    for _ in range(6):
        process = start("save-loop", str(run))
        wait_for_line(process, "saved 3")
        time.sleep(float(rng.uniform(0.0, 0.3)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        broken = not (run / (run / LATEST).read_text().strip() / "state.json").is_file()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            agent = PPOAgent.load(run, tiny_env(tokenizer))
        # a save interrupted between its two renames: the newest complete one loads, with a word
        assert any("interrupted" in str(w.message) for w in caught) == broken
        number = float(agent.value_head.linear.bias.detach())
        assert number >= 1 and number == int(number)  # one save's weights, not a mix
        assert agent.iterations == int(number) // 2
    agent.save(run)  # the next save removes what the killed processes left half-written
    assert not [entry.name for entry in run.iterdir() if entry.name.startswith(".")]


def tiny_env(tokenizer) -> TextGenerationVectorEnv:
    return vector_env(tokenizer, lambda p, r: [0.0] * len(r), num_envs=4, max_new_tokens=6)


@pytest.mark.long
@pytest.mark.parametrize("agent", ["ppo", "rloo"])
def test_resuming_after_a_kill_gives_the_uninterrupted_run_bitwise(tmp_path, agent):
    run = tmp_path / "run"
    process = start("train", agent, str(run), "2")
    wait_for_line(process, "checkpointed")
    process.send_signal(signal.SIGKILL)  # mid-run, after its second update's checkpoint
    process.wait()
    assert process.returncode == -signal.SIGKILL
    for args in (("resume", agent, str(run), "3", str(tmp_path / "resumed.safetensors")),
                 ("straight", agent, "3", str(tmp_path / "straight.safetensors"))):  # fmt: skip
        finished = start(*args)
        finished.communicate(timeout=300)
        assert finished.returncode == 0
    resumed = load_file(tmp_path / "resumed.safetensors")
    straight = load_file(tmp_path / "straight.safetensors")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.equal(resumed[name], straight[name]), name


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
def test_a_prompt_failing_at_autoreset_changes_nothing(tokenizer, gpt2, mode):
    """The autoreset's new prompts are drawn and encoded before the step changes any state: a
    prompt that cannot be encoded fails the step cleanly, again on a retry, and an explicit
    reset recovers."""
    env = TextGenerationVectorEnv(
        gpt2, tokenizer, length_reward, [""], num_envs=2, max_new_tokens=2, autoreset_mode=mode
    )
    start = {"prompts": ["This movie was", "I think"]}
    env.reset(seed=0, options=start)
    obs, *_ = env.step(np.array([30, 31]))
    if mode == "NextStep":
        obs, *_ = env.step(np.array([30, 31]))  # both episodes end; they reset at the next step
    for _ in range(2):  # the same failure each time: nothing was half-done
        with pytest.raises(ValueError, match="encodes to no tokens"):
            env.step(np.array([32, 33]))
    np.testing.assert_array_equal(env._get_obs()["input_ids"], obs["input_ids"])
    env.reset(options=start)
    _, rewards, terminated, truncated, _ = env.step(np.array([30, 31]))  # mid-episode, as ever
    assert np.isfinite(rewards).all() and not (terminated | truncated).any()
