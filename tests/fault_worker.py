"""A training process for the fault tests (``tests/test_faults.py``) to kill for real.

Modes (one thread, tiny GPT-2, the same setup in every mode):

- ``save-loop RUN``: save PPO checkpoints to RUN forever, each with different weights (the value
  head's bias holds the save's number), some under the name of the previous one (a repeated
  save of the same update); prints ``saved N`` after each.
- ``train AGENT RUN ITERATIONS``: learn (AGENT: ppo or rloo) with a checkpoint after every
  update; after ITERATIONS updates print ``checkpointed`` and wait to be killed.
- ``resume AGENT RUN ITERATIONS OUT``: load RUN's latest checkpoint, learn until ITERATIONS
  updates, write the trained parameters to OUT.
- ``straight AGENT ITERATIONS OUT``: learn ITERATIONS updates without interruption, write them
  to OUT.
"""

from __future__ import annotations

import sys
import time

import torch
from helpers import PROMPTS, vector_env
from safetensors.torch import save_file

from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent, RLOOConfig
from rlhf_env import TextGenerationVectorEnv
from rlhf_env.models import build_tiny_tokenizer


def word_count(prompts: list[str], responses: list[str]) -> list[float]:
    return [len(response.split()) / 4 for response in responses]


def setup(
    run_dir: str | None, agent: str = "ppo"
) -> tuple[TextGenerationVectorEnv, PPOConfig | RLOOConfig]:
    tokenizer = build_tiny_tokenizer()
    env = vector_env(tokenizer, word_count, prompts=PROMPTS[:3], num_envs=4, max_new_tokens=6)
    shared = dict(
        learning_rate=1e-3, minibatch_size=2, epochs=2, progress_bar=False, seed=5,
        checkpoint_dir=run_dir, checkpoint_every=1, keep_checkpoints=2,
    )  # fmt: skip
    config = PPOConfig(**shared) if agent == "ppo" else RLOOConfig(group_size=2, **shared)
    return env, config


def budget(iterations: int) -> int:
    """Timesteps that stop learn() after exactly ``iterations`` updates (4 x 6 tokens at most
    per update, at least one): the callback below ends it."""
    return iterations * 4 * 6 + 1


def stop_after(iterations: int):
    return lambda agent, _rollout, _record: agent.iterations < iterations


AGENTS = {"ppo": PPOAgent, "rloo": RLOOAgent}


def write_parameters(agent: PPOAgent | RLOOAgent, out: str) -> None:
    save_file({k: v.detach().contiguous() for k, v in agent.trainable_parameters().items()}, out)


def main() -> None:
    torch.set_num_threads(1)
    mode, *args = sys.argv[1:]
    if mode == "save-loop":
        env, config = setup(None)
        agent = PPOAgent(env, config)
        for number in range(1, 10**6):
            with torch.no_grad():
                agent.value_head.linear.bias.fill_(float(number))
            agent.iterations = number // 2  # every other save repeats the previous name
            agent.save(args[0])
            print(f"saved {number}", flush=True)
    elif mode == "train":
        name, run_dir, iterations = args[0], args[1], int(args[2])
        env, config = setup(run_dir, name)
        agent = AGENTS[name](env, config)
        agent.learn(budget(iterations), callback=stop_after(iterations))
        print("checkpointed", flush=True)
        time.sleep(600)  # killed here, mid-run
    elif mode == "resume":
        name, run_dir, iterations, out = args[0], args[1], int(args[2]), args[3]
        env, _ = setup(run_dir, name)
        agent = AGENTS[name].load(run_dir, env, checkpoint_dir=None)
        agent.learn(budget(iterations), callback=stop_after(iterations))
        write_parameters(agent, out)
    elif mode == "straight":
        name, iterations, out = args[0], int(args[1]), args[2]
        env, config = setup(None, name)
        agent = AGENTS[name](env, config)
        agent.learn(budget(iterations), callback=stop_after(iterations))
        write_parameters(agent, out)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
