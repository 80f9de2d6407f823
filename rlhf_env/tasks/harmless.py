"""``rlhf_env/Harmless-v0``: answer real multi-turn conversations harmlessly, for a reward model
trained on Anthropic's human preferences.

- **data**: the 1,800 HH-RLHF harmless-base pairs that ship with the package
  (:mod:`rlhf_env.data.hh`), split by prompt (conversation) into 90% training and 10%
  held-out conversations, the same split for the reward model and for RL;
- **reward model**: all-MiniLM-L6-v2 with a scalar head trained on the training pairs (what
  ``rlhf-env train-rm --pairs <the packaged file> --eval-fraction 0.1`` does), reading the raw
  conversation and the response, truncated from the left so the latest turns are kept; its
  held-out pairwise accuracy is in ``task.details["reward_model"]``. Trained once and cached;
- **prompts**: each conversation up to its last user turn, formatted with the policy's chat
  template (with the assistant header; plain ``User:/Assistant:`` lines for a policy without
  one); conversations longer than ``max_prompt_tokens`` are left out rather than cut;
- **gold**: the reward model's score on held-out conversations (``reward_model``): there is no
  independent human judge offline, so this task's honest companion figures are the fluency and
  diversity metrics that evaluation reports beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rlhf_env.data.hh import dialogue_messages, hh_harmless_pairs
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.training import RewardTrainingConfig, split_pairs, train_reward_model
from rlhf_env.tasks.base import Task, TaskContext, TaskSpec
from rlhf_env.tasks.cache import TINY_BACKBONE, backbone_folder, cached_folder

NAME = "Harmless"


class DialogueReward:
    """The reward model read on the raw HH conversation behind each templated prompt.

    The env hands reward functions the prompt text the policy saw (its chat template applied);
    the reward model was trained on HH's raw ``"\\n\\nHuman: ...\\n\\nAssistant:"`` text, so
    each prompt is mapped back to its conversation and the response is scored after it.
    """

    def __init__(self, reward_model: RewardModel, conversations: dict[str, str]) -> None:
        self.reward_model = reward_model
        self.reward_model.tokenizer.truncation_side = "left"  # keep the latest turns
        self.conversations = conversations

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per response."""
        missing = [prompt for prompt in prompts if prompt not in self.conversations]
        if missing:
            raise KeyError(
                f"prompt {missing[0][-80:]!r} is not one of this task's conversations; the "
                "Harmless reward scores its own prompts (was a prompt cut by max_prompt_tokens?)"
            )
        raw = [self.conversations[prompt] for prompt in prompts]
        return self.reward_model(raw, [" " + response.strip() for response in responses])


def train_dialogue_reward(
    folder: Path,
    pairs: Sequence[PreferencePair],
    backbone: str,
    max_length: int,
    epochs: int,
    eval_fraction: float,
    device: torch.device,
    progress: bool,
    seed: int,
) -> None:
    """Train the reward model on ``pairs`` (split by prompt as :func:`split_pairs` does) into
    ``folder/reward_model`` and its metrics into ``folder/metrics.json``."""
    reward_model = RewardModel.from_backbone(
        backbone_folder(backbone), device=device, max_length=max_length, seed=seed
    )
    reward_model.tokenizer.truncation_side = "left"
    config = RewardTrainingConfig(
        epochs=epochs, batch_size=16, learning_rate=5e-5, eval_fraction=eval_fraction, seed=seed
    )
    metrics = train_reward_model(reward_model, pairs, config, progress)
    reward_model.save_pretrained(folder / "reward_model")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))


def reward_model_folder(
    context: TaskContext,
    pairs: Sequence[PreferencePair],
    backbone: str,
    max_length: int,
    epochs: int,
    eval_fraction: float,
    seed: int,
) -> Path:
    """The cached folder of the reward model trained on ``pairs`` with these settings (trained
    on first use; the Dialogue task shares it)."""
    settings = {
        "backbone": backbone, "max_length": max_length, "epochs": epochs,
        "eval_fraction": eval_fraction, "pairs": len(pairs), "seed": seed,
    }  # fmt: skip
    return cached_folder(
        NAME, "reward_model", settings,
        lambda target: train_dialogue_reward(
            target, pairs, backbone, max_length, epochs, eval_fraction, context.device,
            context.progress, seed,
        ),
    )  # fmt: skip


def reward_model_details(folder: Path) -> dict[str, Any]:
    """The reward model's held-out accuracy and sizes, for a task's ``details``."""
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "eval_accuracy": metrics["eval_accuracy"][-1] if metrics["eval_accuracy"] else None,
        "initial_eval_accuracy": metrics.get("initial_eval_accuracy"),
        "train_pairs": metrics["train_pairs"],
        "eval_pairs": metrics["eval_pairs"],
        "folder": str(folder),
    }


def build(
    context: TaskContext,
    eval_prompts: int = 128,
    eval_fraction: float = 0.1,
    max_prompt_tokens: int = 192,
    reward_backbone: str = "all-minilm-l6-v2",
    reward_max_length: int = 192,
    reward_epochs: int = 1,
    max_pairs: int | None = None,
    seed: int = 0,
) -> Task:
    """The Harmless task for ``context.policy`` (see the module docstring).

    Args:
        eval_prompts: held-out conversations evaluated (at most those the split holds out).
        eval_fraction: share of conversations held out from the reward model and from RL.
        max_prompt_tokens: longest templated conversation kept (also the env's setting).
        reward_backbone: the reward model's backbone (``"tiny"``: a tiny random GPT-2).
        reward_max_length: tokens of conversation and response the reward model reads.
        reward_epochs: the reward model's passes over its training pairs.
        max_pairs: use only the first pairs (smoke runs).
        seed: seed of the split and of the training.
    """
    pairs = hh_harmless_pairs()[:max_pairs]
    folder = reward_model_folder(
        context, pairs, reward_backbone, reward_max_length, reward_epochs, eval_fraction, seed
    )
    train_pairs, held_out_pairs = split_pairs(pairs, eval_fraction, seed)  # the model's split
    train, conversations = _templated(context, train_pairs, max_prompt_tokens)
    held_out, held_out_conversations = _templated(context, held_out_pairs, max_prompt_tokens)
    conversations.update(held_out_conversations)
    if not train or not held_out:
        raise ValueError(
            f"no conversation fits in max_prompt_tokens={max_prompt_tokens} with this policy's "
            "chat template; raise max_prompt_tokens"
        )
    reward_model = RewardModel.from_pretrained(folder / "reward_model", device=context.device)
    reward = DialogueReward(reward_model, conversations)
    return Task(
        name=NAME,
        train_prompts=train,
        eval_prompts=held_out[:eval_prompts],
        reward_fn=reward,
        gold={"reward_model": reward},
        env_options={"max_new_tokens": 32, "max_prompt_tokens": max_prompt_tokens},
        details={
            "reward_model": reward_model_details(folder),
            "train_conversations": len(train),
            "held_out_conversations": len(held_out),
        },
    )


def _templated(
    context: TaskContext, pairs: Sequence[PreferencePair], max_tokens: int
) -> tuple[list[str], dict[str, str]]:
    """The pairs' conversations as templated prompts that fit ``max_tokens``, and the map from
    each back to its raw conversation."""
    prompts, conversations = [], {}
    for pair in pairs:
        text = context.chat_prompt(dialogue_messages(pair.prompt))
        if len(context.tokenizer(text)["input_ids"]) <= max_tokens and text not in conversations:
            prompts.append(text)
            conversations[text] = pair.prompt
    return prompts, conversations


SPEC = TaskSpec(
    name=NAME,
    description="answer real HH-RLHF conversations; reward model trained on Anthropic's "
    "harmless-base human preferences",
    build=build,
    smoke_options={
        "max_pairs": 40,
        "eval_prompts": 4,
        "eval_fraction": 0.2,
        "max_prompt_tokens": 96,
        "reward_backbone": TINY_BACKBONE,
        "reward_max_length": 64,
        "max_new_tokens": 6,
    },
)

__all__ = ["SPEC", "DialogueReward", "build", "reward_model_details", "reward_model_folder"]
