"""``rlhf-env train``: any learning agent in the vector env (``eval`` is in :mod:`.evaluate`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from rlhf_agents import LEARNING_AGENTS
from rlhf_env.models.efficient import TRAINING_SETUP_HELP, check_training_setup
from rlhf_env.rewards.oracles import ORACLES
from rlhf_pipeline.cli.options import add_dataclass_arguments, dataclass_values


def _add_env_arguments(
    parser: argparse.ArgumentParser,
    prompt_offset: int,
    reward_required: bool,
    skip: frozenset[str] = frozenset(),
) -> None:
    from rlhf_env.config import VectorEnvConfig

    parser.add_argument(
        "--policy", default="smollm2-135m-instruct", help="hub name, folder, or asset name"
    )
    parser.add_argument(
        "--reward",
        required=reward_required,
        default="vader",
        help=f"{' or '.join(map(repr, ORACLES))} (gold oracles), or a reward-model folder "
        "from train-rm",
    )
    parser.add_argument(
        "--prompts",
        default="imdb-balanced",
        help="'imdb', 'imdb-balanced' or a text file, one prompt per line",
    )
    parser.add_argument("--num-prompts", type=int, default=4096, help="prompts to draw from")
    parser.add_argument(
        "--prompt-offset",
        type=int,
        default=prompt_offset,
        help=f"skip this many prompts (per label for imdb-balanced; default {prompt_offset})",
    )
    # The environment's settings, one option per field of rlhf_env.config.VectorEnvConfig.
    add_dataclass_arguments(parser, VectorEnvConfig, skip=skip)


def _prompts(args: argparse.Namespace) -> list[str]:
    from rlhf_env.data.prompts import named_prompts

    return named_prompts(args.prompts, args.num_prompts, args.prompt_offset)


def _make_env(
    args: argparse.Namespace,
    policy: torch.nn.Module,
    tokenizer: Any,
    reference: torch.nn.Module | None,
    prompts: list[str],
    **overrides: Any,
) -> Any:
    """The vector env the environment options describe, on ``policy`` and ``prompts``."""
    from rlhf_env.config import VectorEnvConfig
    from rlhf_env.rewards.by_name import load_reward
    from rlhf_env.vector_env import TextGenerationVectorEnv

    config = VectorEnvConfig(**(dataclass_values(VectorEnvConfig, args) | overrides))
    return TextGenerationVectorEnv(
        policy, tokenizer, load_reward(args.reward, args.device), prompts, reference,
        config=config,
    )  # fmt: skip


# -- train --------------------------------------------------------------------------------------


def _agent_config(args: argparse.Namespace) -> Any:
    from rlhf_agents import NAMED_DEFAULTS, PPOConfig, RLOOConfig

    config_class = PPOConfig if args.agent == "ppo" else RLOOConfig
    values = dataclass_values(PPOConfig, args) | dataclass_values(RLOOConfig, args)
    own = {field.name for field in dataclasses.fields(config_class)}
    foreign = sorted(set(values) - own)
    if foreign:
        flags = ", ".join("--" + name.replace("_", "-") for name in foreign)
        raise ValueError(f"{flags} do(es) not apply to --agent {args.agent}")
    values = {**NAMED_DEFAULTS.get(args.agent, {}), **values}
    values.setdefault("checkpoint_dir", str(args.out / "rl"))
    values.setdefault("log_dir", str(args.out / "tensorboard"))
    return config_class, values


def train(args: argparse.Namespace) -> int:
    from rlhf_agents import AGENTS
    from rlhf_agents.checkpoint import LATEST
    from rlhf_env import assets
    from rlhf_env.distributed import init_distributed, shard
    from rlhf_env.models import load_causal_lm, load_tokenizer, save_policy
    from rlhf_env.models.efficient import apply_training_setup

    config_class, values = _agent_config(args)
    context = init_distributed()  # under torchrun: join the group (one process: nothing)
    if context.enabled:
        args.device = args.device or str(context.device)
    folder = assets.resolve(args.policy)
    policy, reference = apply_training_setup(
        load_causal_lm(folder, device=args.device, dtype=torch.float32), args.training_setup
    )
    tokenizer = load_tokenizer(folder)
    prompts = shard(_prompts(args), context)  # each process its own prompts
    env = _make_env(args, policy, tokenizer, reference, prompts)
    agent_class = AGENTS[args.agent]
    run_dir = Path(values["checkpoint_dir"])
    if (run_dir / LATEST).is_file():
        agent = agent_class.load(run_dir, env, **values)
        if context.is_main:
            print(f"resuming {run_dir} at {agent.num_timesteps} tokens")
    else:
        agent = agent_class(env, config_class(**values))
    agent.learn(args.total_timesteps)
    if not context.is_main:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "history.json").write_text(json.dumps(agent.history, indent=1) + "\n")
    save_policy(policy, tokenizer, args.out / "policy")
    last = agent.history[-1] if agent.history else {}
    score, kl = last.get("rollout/score", float("nan")), last.get("rollout/kl", float("nan"))
    print(
        f"{agent.num_timesteps} tokens in {agent.iterations} updates; last rollout: score "
        f"{score:.3f}, KL {kl:.2f} nats; policy in {args.out / 'policy'}"
    )
    return 0


def register(commands: Any) -> None:
    """Add ``train``."""
    from rlhf_agents import PPOConfig, RLOOConfig

    parser = commands.add_parser(
        "train",
        help="train a policy with an agent in the vector env",
        description="Train --policy with PPO, RLOO or GRPO against --reward (an oracle or a "
        "reward model from train-rm) minus beta * KL to the initial policy. Checkpoints go to "
        "OUT/rl (the same command resumes from them), the policy to OUT/policy. Agent options "
        "left out keep the agent's defaults. Under torchrun or accelerate launch, each process "
        "runs --num-envs sub-envs on its share of the prompts and the gradients are averaged.",
    )
    parser.add_argument("--config", help="YAML or JSON file of the options below")
    parser.add_argument("--agent", choices=LEARNING_AGENTS, default="ppo")
    parser.add_argument("--out", type=Path, required=True, help="run folder")
    parser.add_argument(
        "--training-setup",
        type=check_training_setup,
        default="full",
        help=f"what trains: {TRAINING_SETUP_HELP} (default full)",
    )
    parser.add_argument("--total-timesteps", type=int, default=16_384, help="generated tokens")
    # beta is the agent's --kl-coef (its initial value under adaptive KL control)
    _add_env_arguments(parser, prompt_offset=0, reward_required=True, skip=frozenset({"kl_coef"}))
    # --share-trunk is the env's option, and sets the agent's field of that name as well
    shared = {"share_trunk"}
    add_dataclass_arguments(parser, PPOConfig, skip=shared, suppress_defaults=True)
    add_dataclass_arguments(
        parser, RLOOConfig, skip=shared | {f.name for f in dataclasses.fields(PPOConfig)},
        suppress_defaults=True,
    )  # fmt: skip
    parser.set_defaults(handler=train, command_parser=parser)
