"""Where an RL iteration's time goes: by phase and by the part of the model that spends it.

An agent (RLOO by default) trains on a task (Arithmetic by default) with a ``full`` or
``frozen:N`` training setup. Forward hooks time every decoder block, and each block is filed
under the blocks that policy and reference *share* (the same module objects: the bottom N
under ``frozen:N``, none under ``full``), the policy's own blocks, or the reference's own
copies of them; the rest (embeddings, final norm, LM head, log-softmax and KL, the env's and
the agent's code, and in the update the backward pass and the optimiser) is what the phase's
wall time leaves. Phases: the rollout's prefills and dialogue appends (blocks called with more
than one token), its per-token steps, and the update. The blocks' call counts per layer are
reported too: with ``--no-share-trunk`` both engines run a shared block once per model, so a
rollout calls each shared block twice as often as each of the policy's own; with the shared
trunk (the default, ``share_trunk``) once.

``--no-share-trunk`` is the baseline for computing shared work once (the shared trunk, the
prompt-prefix cache, the update's frozen forward): the seconds under ``shared`` bound what
they can save; ``benchmarks/shared_compute.py`` measures what they do save. On CPU
the hooks add little (the work is synchronous); on CUDA each block is synchronised, which
slows the run: read the shares, not the totals.

    python benchmarks/time_breakdown.py                       # SmolLM2 frozen:24, Arithmetic
    python benchmarks/time_breakdown.py --model tiny --iterations 1 --out /tmp/t.json  # smoke
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from ppo_training import build_models

import rlhf_env  # noqa: F401  (registers the tasks)
from rlhf_agents import make_agent
from rlhf_env.models.efficient import check_training_setup, decoder_layers, freeze_lower_layers
from rlhf_env.tasks import smoke_arguments

RESULTS = Path(__file__).parent / "results"
PARTS = ("shared", "policy_own", "reference_own")
KINDS = ("prefill", "step", "forward")


class BlockTimer:
    """Forward hooks on every decoder block of ``policy`` and ``reference``: seconds and calls
    per ``(phase, kind, part)``, the phase set by the caller; the kind is ``"step"`` (one
    token), else ``"prefill"`` in the rollout (a prefill or a dialogue append) and
    ``"forward"`` in the update (its teacher-forced forward)."""

    def __init__(self, policy: torch.nn.Module, reference: torch.nn.Module) -> None:
        self.phase = "idle"
        self.seconds: dict[tuple[str, str, str], float] = collections.defaultdict(float)
        self.calls: dict[tuple[str, str, str], int] = collections.defaultdict(int)
        policy_layers, reference_layers = decoder_layers(policy), decoder_layers(reference)
        self.layers = {part: 0 for part in PARTS}
        self._started: dict[int, float] = {}
        self._sync = torch.cuda.synchronize if next(policy.parameters()).is_cuda else None
        for mine, theirs in zip(policy_layers, reference_layers, strict=True):
            if mine is theirs:
                self._watch(mine, "shared")
            else:
                self._watch(mine, "policy_own")
                self._watch(theirs, "reference_own")

    def _watch(self, block: torch.nn.Module, part: str) -> None:
        self.layers[part] += 1

        def before(module, args, kwargs):
            if self._sync:
                self._sync()
            self._started[id(module)] = time.perf_counter()

        def after(module, args, kwargs, output):
            if self._sync:
                self._sync()
            hidden = args[0] if args else kwargs["hidden_states"]  # (B, T, H)
            if hidden.shape[1] == 1:
                kind = "step"
            else:
                kind = "forward" if self.phase == "update" else "prefill"
            key = (self.phase, kind, part)
            self.seconds[key] += time.perf_counter() - self._started.pop(id(module))
            self.calls[key] += 1

        block.register_forward_pre_hook(before, with_kwargs=True)
        block.register_forward_hook(after, with_kwargs=True)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--random-init`` and ``--task``: what a task benchmark runs on."""
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="'tiny' (the task's smoke variant), an asset name or a folder",
    )
    parser.add_argument("--random-init", action="store_true", help="architecture only")
    parser.add_argument("--task", default="Arithmetic")


def build_env(args: argparse.Namespace):
    """The task's vector env on ``args.model`` with ``args.training_setup``."""
    kind, _, number = check_training_setup(args.training_setup).partition(":")
    if kind == "lora":
        raise SystemExit(
            "--training-setup lora:R shares every block with the reference (adapters off), "
            "so the split means nothing here: use full or frozen:N"
        )
    options: dict[str, Any] = {}
    if args.model == "tiny":  # the task's smoke variant, its tiny policy included
        options = dict(smoke_arguments(args.task))
        policy, tokenizer = options.pop("policy"), options.pop("tokenizer")
    else:
        policy, tokenizer = build_models(args.model, args.random_init, torch.device("cpu"))
    reference = None
    if kind == "frozen":
        policy, reference = freeze_lower_layers(policy, int(number))
    return gym.make_vec(
        f"rlhf_env/{args.task}-v0", num_envs=args.num_envs, policy=policy,
        tokenizer=tokenizer, reference=reference, kl_coef=0.01, engine=args.engine,
        share_trunk=args.share_trunk, prefix_cache=args.prefix_cache, progress=False,
        **options,
    )  # fmt: skip


def breakdown(timer: BlockTimer, phases: dict[str, float]) -> dict[str, Any]:
    """The iteration's figures: seconds by phase, kind and part, with each phase's remainder."""
    rows: dict[str, Any] = {}
    for phase, wall in phases.items():
        ran = [(kind, part) for kind in KINDS for part in PARTS if timer.calls[(phase, kind, part)]]
        parts = {f"{k}/{p}": round(timer.seconds[(phase, k, p)], 3) for k, p in ran}
        calls = {f"{k}/{p}": timer.calls[(phase, k, p)] // timer.layers[p] for k, p in ran}
        rows[phase] = {
            "seconds": round(wall, 3),
            "blocks": parts,
            "calls_per_layer": calls,
            "rest": round(wall - sum(parts.values()), 3),
        }
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--training-setup", default="frozen:24", help="full or frozen:N")
    parser.add_argument("--agent", default="rloo", choices=["ppo", "rloo", "grpo"])
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=8, help="RLOO / GRPO groups")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--minibatch-size", type=int, default=16)
    parser.add_argument("--engine", choices=["auto", "static", "dynamic"], default="auto")
    parser.add_argument(
        "--share-trunk",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute the shared blocks once (env and agent)",
    )
    parser.add_argument(
        "--prefix-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="prefill a common prompt prefix once (env; the agent's share_prefix)",
    )
    parser.add_argument("--iterations", type=int, default=2, help="the first is a warm-up")
    parser.add_argument("--out", type=Path, help="JSON (default: benchmarks/results/...)")
    args = parser.parse_args(argv)  # fmt: skip

    torch.manual_seed(0)
    env = build_env(args)
    config: dict[str, Any] = {"learning_rate": 1e-4, "epochs": args.epochs,
                              "minibatch_size": args.minibatch_size, "progress_bar": False,
                              "seed": 0, "share_trunk": args.share_trunk,
                              "share_prefix": args.prefix_cache}  # fmt: skip
    if args.agent != "ppo":
        config["group_size"] = args.group_size
    agent = make_agent(args.agent, env, **config)
    timer = BlockTimer(env.policy, env.reference)
    iterations = []
    for _ in range(args.iterations):
        timer.reset()
        timer.phase = "rollout"
        start = time.perf_counter()
        rollout = agent.collect()
        collected = time.perf_counter()
        timer.phase = "update"
        agent.update(rollout)
        updated = time.perf_counter()
        timer.phase = "idle"
        figures = breakdown(timer, {"rollout": collected - start, "update": updated - collected})
        figures["shape"] = {"rows": list(rollout.continuation_ids.shape),
                            "prompt_width": rollout.prompt_ids.shape[1]}  # fmt: skip
        iterations.append(figures)
        print(json.dumps(figures), flush=True)
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "engine": type(env.engine).__name__,
        "layers": timer.layers,
        "iterations": iterations,
    }
    out = args.out or RESULTS / f"time_breakdown_{args.task.lower()}_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    last = iterations[-1]
    for phase in ("rollout", "update"):
        row = last[phase]
        print(f"{phase}: {row['seconds']:.1f} s; blocks {row['blocks']}; rest {row['rest']:.1f} s; "
              f"calls per layer {row['calls_per_layer']}")  # fmt: skip
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
