"""``rlhf_env/Harmless-v0``: answer real multi-turn conversations harmlessly, for a reward model
trained on Anthropic's human preferences, judged by a stronger gold model.

- **data**: the 1,800 HH-RLHF harmless-base pairs that ship with the package
  (:mod:`rlhf_env.data.hh`), split by prompt (conversation) into 90% training and 10%
  held-out conversations, the same split for both models and for RL;
- **training reward model** (the proxy RL optimises): all-MiniLM-L6-v2 with a scalar head
  trained on the training pairs (what ``rlhf-env train-rm --pairs <the packaged file>
  --eval-fraction 0.1`` does), reading the raw conversation and the response, truncated from
  the left so the latest turns are kept; its held-out pairwise accuracy is in
  ``task.details["reward_model"]``. Trained once and cached;
- **gold model** (what the result is judged by; Gao et al., 2022): a
  :class:`~rlhf_env.rewards.probe.ProbeRewardModel`, SmolLM2-135M frozen, its hidden states
  after block 20 of 30 averaged over the response, read by a linear Bradley-Terry head fitted
  on the same training pairs (L2 weight by 5-fold cross-validation). It is the stronger judge
  of people's preferences (held-out pairwise accuracy in ``task.details["gold_model"]``:
  0.650 against the proxy's 0.567 on the 180 held-out pairs) and a different function from
  the proxy; but it learned from the same pairs, so it shares their taste (both reward the
  short canned replies a long run converges to: ``benchmarks/RESULTS.md``), and the
  diversity figures evaluation reports beside it are part of the reading. Fitted once and
  cached (about 11 minutes on 2 CPU cores: one forward per distinct response);
- **prompts**: each conversation up to its last user turn, formatted with the policy's chat
  template (with the assistant header; plain ``User:/Assistant:`` lines for a policy without
  one); conversations longer than ``max_prompt_tokens`` are left out rather than cut;
- **gold**: ``gold_model``, the gold model's score of the response on held-out conversations;
  evaluation reports the proxy beside it (``learned``), with the KL, fluency and diversity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.data.hh import dialogue_messages, hh_harmless_pairs
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.models.loading import load_causal_lm, load_tokenizer
from rlhf_env.rewards.base import RewardFunction
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.probe import ProbeRewardModel, fit_probe_reward
from rlhf_env.rewards.training import RewardTrainingConfig, split_pairs, train_reward_model
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.cache import TINY_BACKBONE, backbone_folder, cached_folder

NAME = "Harmless"


class RawConversationReward:
    """A reward model read on the raw HH conversation behind each templated prompt.

    The env hands reward functions the prompt text the policy saw (its chat template applied);
    the reward models were trained on HH's raw ``"\\n\\nHuman: ...\\n\\nAssistant:"`` text, so
    each prompt is mapped back to its conversation and the response is scored after it. A
    :class:`RewardModel` is set to truncate from the left (the latest turns stay); a
    :class:`ProbeRewardModel` always does.
    """

    def __init__(self, reward_model: RewardFunction, conversations: dict[str, str]) -> None:
        self.reward_model = keep_latest_turns(reward_model)
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
    options: HHModelOptions,
    context: TaskContext,
) -> None:
    """Train the reward model of ``options`` on ``pairs`` (split by prompt as
    :func:`split_pairs` does) into ``folder/reward_model`` and its metrics into
    ``folder/metrics.json``."""
    reward_model = RewardModel.from_backbone(
        backbone_folder(options.reward_backbone), device=context.device,
        max_length=options.reward_max_length, seed=options.seed,
    )  # fmt: skip
    reward_model.tokenizer.truncation_side = "left"
    config = RewardTrainingConfig(
        epochs=options.reward_epochs, batch_size=16, learning_rate=5e-5,
        eval_fraction=options.eval_fraction, seed=options.seed,
    )  # fmt: skip
    metrics = train_reward_model(reward_model, pairs, config, context.progress)
    reward_model.save_pretrained(folder / "reward_model")
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))


def keep_latest_turns(reward_model: RewardFunction) -> RewardFunction:
    """``reward_model``, set to cut a long conversation's first tokens rather than its last
    (a :class:`RewardModel`'s tokenizer truncates from the left; other scorers as they are)."""
    if isinstance(reward_model, RewardModel):
        reward_model.tokenizer.truncation_side = "left"
    return reward_model


def load_backbone(
    name: str, device: torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer by backbone name (:func:`backbone_folder`), in float32."""
    folder = backbone_folder(name)
    model = load_causal_lm(folder, device=device, dtype=torch.float32)
    return model, load_tokenizer(folder)


@dataclass(frozen=True)
class HHModelOptions:
    """The options of the two models the Harmless and Dialogue tasks share, and of the split
    both were trained on: task options of both tasks (the same values share one cached model).

    Attributes:
        eval_fraction: share of conversations held out from both models and from RL.
        reward_backbone: the training reward model's backbone (``"tiny"``: a tiny random GPT-2).
        reward_max_length: tokens of conversation and response the reward model reads.
        reward_epochs: the reward model's passes over its training pairs.
        gold_backbone: the frozen LM under the gold model's linear head (``"tiny"`` as above).
        gold_layer: the block whose hidden states the gold's head reads.
        gold_max_length, gold_max_response_tokens: tokens the gold reads in all, and of the
            response.
        max_pairs: use only the first pairs (smoke runs).
        seed: seed of the split and of the trainings.
    """

    eval_fraction: float = 0.1
    reward_backbone: str = "all-minilm-l6-v2"
    reward_max_length: int = 192
    reward_epochs: int = 1
    gold_backbone: str = "smollm2-135m-instruct"
    gold_layer: int = 20
    gold_max_length: int = 192
    gold_max_response_tokens: int = 96
    max_pairs: int | None = None
    seed: int = 0


@dataclass(frozen=True)
class HHModels:
    """The trained models of :class:`HHModelOptions` (:func:`hh_models`): the split of the
    packaged pairs, and the cached folders of the training reward model and the gold model."""

    train_pairs: list[PreferencePair]
    held_out_pairs: list[PreferencePair]
    reward_folder: Path
    gold_folder: Path

    def reward_model(self, device: torch.device) -> RewardModel:
        """The training reward model (the proxy RL optimises)."""
        return RewardModel.from_pretrained(self.reward_folder / "reward_model", device=device)

    def gold_model(self, device: torch.device) -> ProbeRewardModel:
        """The gold model (what the result is judged by)."""
        return ProbeRewardModel.from_pretrained(
            self.gold_folder / "gold_model", lambda name: load_backbone(name, device)
        )

    def details(self) -> dict[str, Any]:
        """Each model's held-out pairwise accuracy, sizes and folder, for a task's ``details``
        (``gold_model``: also how it was fitted)."""
        reward = json.loads((self.reward_folder / "metrics.json").read_text())
        gold = json.loads((self.gold_folder / "metrics.json").read_text())
        return {
            "gold_model": gold | {"folder": str(self.gold_folder)},
            "reward_model": {
                "eval_accuracy": reward["eval_accuracy"][-1] if reward["eval_accuracy"] else None,
                "initial_eval_accuracy": reward.get("initial_eval_accuracy"),
                "train_pairs": reward["train_pairs"],
                "eval_pairs": reward["eval_pairs"],
                "folder": str(self.reward_folder),
            },
        }


def hh_models(context: TaskContext, options: HHModelOptions) -> HHModels:
    """The packaged HH pairs split by prompt, and the two models trained on the training side
    (each trained on first use and cached by its settings)."""
    pairs = hh_harmless_pairs()[: options.max_pairs]
    train, held_out = split_pairs(pairs, options.eval_fraction, options.seed)
    reward_settings = {
        "backbone": options.reward_backbone, "max_length": options.reward_max_length,
        "epochs": options.reward_epochs, "eval_fraction": options.eval_fraction,
        "pairs": len(pairs), "seed": options.seed,
    }  # fmt: skip
    reward_folder = cached_folder(
        NAME, "reward_model", reward_settings,
        lambda target: train_dialogue_reward(target, pairs, options, context),
    )  # fmt: skip
    gold_settings = {
        "backbone": options.gold_backbone, "layer": options.gold_layer,
        "max_length": options.gold_max_length,
        "max_response_tokens": options.gold_max_response_tokens,
        "eval_fraction": options.eval_fraction, "pairs": len(pairs), "seed": options.seed,
    }  # fmt: skip

    def fit(folder: Path) -> None:
        model, tokenizer = load_backbone(options.gold_backbone, context.device)
        probe, metrics = fit_probe_reward(
            model, tokenizer, _as_scored(train), _as_scored(held_out), layer=options.gold_layer,
            backbone=options.gold_backbone, max_length=options.gold_max_length,
            max_response_tokens=options.gold_max_response_tokens, seed=options.seed,
            progress=context.progress,
        )  # fmt: skip
        probe.save_pretrained(folder / "gold_model")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))

    gold_folder = cached_folder(NAME, "gold_model", gold_settings, fit)
    return HHModels(train, held_out, reward_folder, gold_folder)


def _as_scored(pairs: Sequence[PreferencePair]) -> list[PreferencePair]:
    """The pairs with their responses as the tasks score them: one leading space, stripped."""
    return [
        PreferencePair(pair.prompt, " " + pair.chosen.strip(), " " + pair.rejected.strip())
        for pair in pairs
    ]


def build(
    context: TaskContext,
    eval_prompts: int = 128,
    max_prompt_tokens: int = 192,
    **model_options: Any,
) -> Task:
    """The Harmless task for ``context.policy`` (see the module docstring).

    Args:
        eval_prompts: held-out conversations evaluated (at most those the split holds out).
        max_prompt_tokens: longest templated conversation kept (also the env's setting).
        model_options: the fields of :class:`HHModelOptions` (the split, the reward model, the
            gold model).
    """
    models = hh_models(context, HHModelOptions(**model_options))
    train, conversations = _templated(context, models.train_pairs, max_prompt_tokens)
    held_out, held_out_conversations = _templated(context, models.held_out_pairs, max_prompt_tokens)
    conversations.update(held_out_conversations)
    if not train or not held_out:
        raise ValueError(
            f"no conversation fits in max_prompt_tokens={max_prompt_tokens} with this policy's "
            "chat template; raise max_prompt_tokens"
        )
    return Task(
        name=NAME,
        train_prompts=train,
        eval_prompts=held_out[:eval_prompts],
        reward_fn=RawConversationReward(models.reward_model(context.device), conversations),
        gold={
            "gold_model": RawConversationReward(models.gold_model(context.device), conversations)
        },
        env_options={"max_new_tokens": 32, "max_prompt_tokens": max_prompt_tokens},
        details={
            **models.details(),
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


#: PPO, RLOO and GRPO at lr 2e-4, two epochs: PPO raised the gold model by +0.39 and RLOO by
#: +0.30 in 4,096 tokens on ``frozen:24`` over two seeds (benchmarks/RESULTS.md, issue 28,
#: item 5); in the 90-minute suite's three seeds the three agents gained +0.06 to +1.06.
RECIPE: dict[str, Any] = {"learning_rate": 2e-4, "epochs": 2, "minibatch_size": 8}

#: A suite run's budget: 4,096 tokens of the top 6 blocks, conversations cut to their last 128
#: tokens and 24-token replies (issue 28's 90-minute suite).
BUDGET = SuiteBudget(
    timesteps=4096,
    training_setup="frozen:24",
    options={"max_prompt_tokens": 128, "max_new_tokens": 24},
)

#: The smoke variants' models (Harmless and Dialogue): tiny random backbones reading short texts.
SMOKE_MODEL_OPTIONS: dict[str, Any] = {
    "eval_fraction": 0.2,
    "reward_backbone": TINY_BACKBONE,
    "reward_max_length": 64,
    "gold_backbone": TINY_BACKBONE,
    "gold_layer": 1,
    "gold_max_length": 64,
    "gold_max_response_tokens": 16,
}

SPEC = TaskSpec(
    name=NAME,
    description="answer real HH-RLHF conversations; reward model trained on Anthropic's "
    "harmless-base human preferences",
    build=build,
    shared_options=HHModelOptions,
    smoke_options={
        **SMOKE_MODEL_OPTIONS,
        "max_pairs": 40,
        "eval_prompts": 4,
        "max_prompt_tokens": 96,
        "max_new_tokens": 6,
    },
    recipes={"ppo": RECIPE, "rloo": RECIPE, "grpo": RECIPE},
    budget=BUDGET,
)

__all__ = [
    "BUDGET",
    "RECIPE",
    "SMOKE_MODEL_OPTIONS",
    "SPEC",
    "HHModelOptions",
    "HHModels",
    "RawConversationReward",
    "build",
    "hh_models",
    "keep_latest_turns",
    "load_backbone",
]
