"""``rlhf_env/Dialogue-v0``: hold real multi-turn HH-RLHF conversations, turn by turn, for the
Harmless task's reward model.

- **episodes**: dialogues of ``max_turns`` assistant turns (default 3): the user's turns are the
  human turns of a packaged HH-RLHF harmless-base conversation with at least that many (835 of
  the 1,800), inserted by the env after each assistant turn; the assistant's turns are the
  policy's (see the dialogue mode of :class:`rlhf_env.TextGenerationEnv`). A turn that reaches
  ``max_new_tokens`` (32) is ended by the env (``turn_cut="end_turn"``: it inserts the
  end-of-turn token) and the conversation goes on: SmolLM2-135M ends fewer than one turn in six
  within 32 (or 64) tokens, so with ``"truncate"`` most episodes would stop after one turn;
- **reward model**: the Harmless task's (all-MiniLM-L6-v2 with a scalar head trained on the
  training pairs; the same cached model), reading the transcript of the conversation so far in
  HH's ``"\\n\\nHuman: ...\\n\\nAssistant:"`` form and the turn; every assistant turn is scored
  when it ends (``turn_rewards="turn"``);
- **split**: the reward model's, by conversation: held-out conversations are neither in the
  reward model's training pairs nor among RL's scripts;
- **gold**: the Harmless task's gold model (a linear probe on SmolLM2's hidden states, the
  same cached fit, stronger than the reward model on held-out human pairs) on the last turn
  given the whole conversation, on held-out conversations; ``gold_turn/<k>`` gives it for
  every turn, beside the reward model's per-turn scores (``turn_score/<k>``), KL and fluency.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_env.data.hh import hh_harmless_pairs
from rlhf_env.data.preferences import PreferencePair
from rlhf_env.dialogue.script import DialogueScript, as_script
from rlhf_env.rewards.base import RewardFunction
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.training import split_pairs
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.cache import TINY_BACKBONE
from rlhf_env.tasks.harmless import (
    RECIPE,
    gold_folder,
    gold_model_details,
    keep_latest_turns,
    load_gold,
    reward_model_details,
    reward_model_folder,
)

NAME = "Dialogue"


class TranscriptReward:
    """A reward model trained on HH pairs, read on a dialogue env's transcripts: the prompt is
    the conversation so far (``"\\n\\nHuman: ...\\n\\nAssistant:"``), the response the turn
    (a long transcript loses its first turns, not its last: :func:`keep_latest_turns`)."""

    def __init__(self, reward_model: RewardFunction) -> None:
        self.reward_model = keep_latest_turns(reward_model)

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per turn."""
        return self.reward_model(prompts, [" " + response.strip() for response in responses])


def build(
    context: TaskContext,
    max_turns: int = 3,
    eval_prompts: int = 64,
    eval_fraction: float = 0.1,
    max_prompt_tokens: int = 128,
    reward_backbone: str = "all-minilm-l6-v2",
    reward_max_length: int = 192,
    reward_epochs: int = 1,
    gold_backbone: str = "smollm2-135m-instruct",
    gold_layer: int = 20,
    gold_max_length: int = 192,
    gold_max_response_tokens: int = 96,
    max_pairs: int | None = None,
    seed: int = 0,
) -> Task:
    """The Dialogue task for ``context.policy`` (see the module docstring).

    Args:
        max_turns: assistant turns per conversation (also the env's setting); conversations
            with fewer human turns are left out.
        eval_prompts: held-out conversations evaluated (at most those the split holds out).
        eval_fraction, reward_backbone, reward_max_length, reward_epochs, gold_backbone,
            gold_layer, gold_max_length, gold_max_response_tokens, max_pairs, seed: the
            Harmless task's reward model, gold model and split (the same settings share one
            cached model).
        max_prompt_tokens: longest first prompt (the template with the first user turn) kept.
    """
    pairs = hh_harmless_pairs()[:max_pairs]
    folder = reward_model_folder(
        context, pairs, reward_backbone, reward_max_length, reward_epochs, eval_fraction, seed
    )
    gold = gold_folder(
        context, pairs, gold_backbone, gold_layer, gold_max_length, gold_max_response_tokens,
        eval_fraction, seed,
    )  # fmt: skip
    train_pairs, held_out_pairs = split_pairs(pairs, eval_fraction, seed)  # the models' split
    train = _scripts(context, train_pairs, max_turns, max_prompt_tokens)
    held_out = _scripts(context, held_out_pairs, max_turns, max_prompt_tokens)
    if not train or not held_out:
        raise ValueError(
            f"no conversation has {max_turns} human turns and a first prompt within "
            f"max_prompt_tokens={max_prompt_tokens}; lower max_turns or raise max_prompt_tokens"
        )
    reward = TranscriptReward(
        RewardModel.from_pretrained(folder / "reward_model", device=context.device)
    )
    return Task(
        name=NAME,
        train_prompts=train,
        eval_prompts=held_out[:eval_prompts],
        reward_fn=reward,
        gold={"gold_model": TranscriptReward(load_gold(gold, context.device))},
        env_options={
            "max_turns": max_turns,
            "max_new_tokens": 32,
            "max_prompt_tokens": max_prompt_tokens,
            "max_total_tokens": max_turns * 32 + (max_turns - 1) * 96,
            "turn_rewards": "turn",
            "turn_cut": "end_turn",
        },
        details={
            "gold_model": gold_model_details(gold),
            "reward_model": reward_model_details(folder),
            "train_conversations": len(train),
            "held_out_conversations": len(held_out),
        },
    )


def _scripts(
    context: TaskContext, pairs: Sequence[PreferencePair], max_turns: int, max_tokens: int
) -> list[DialogueScript]:
    """The pairs' conversations with at least ``max_turns`` human turns, cut to their first
    ``max_turns``, whose first prompt fits ``max_tokens``."""
    scripts = []
    for pair in pairs:
        script = as_script(pair.prompt)
        if len(script.user_turns) < max_turns:
            continue
        script = DialogueScript(script.user_turns[:max_turns], script.system)
        text = context.chat_prompt(script.opening())
        if len(context.tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            scripts.append(script)
    return scripts


#: A suite run's budget: 4,096 tokens of the top 6 blocks, the issue-19 run's (about 9 minutes
#: of PPO on 2 cores, at Harmless's recipe; benchmarks/RESULTS.md). Dialogue is not in the
#: 90-minute suite.
BUDGET = SuiteBudget(timesteps=4096, training_setup="frozen:24")

SPEC = TaskSpec(
    name=NAME,
    description="hold 3-turn HH-RLHF conversations turn by turn (the env inserts the human "
    "turns); every turn scored by the Harmless reward model",
    build=build,
    smoke_options={
        "max_pairs": 120,
        "eval_prompts": 4,
        "eval_fraction": 0.2,
        "max_turns": 2,
        "max_prompt_tokens": 96,
        "reward_backbone": TINY_BACKBONE,
        "reward_max_length": 64,
        "gold_backbone": TINY_BACKBONE,
        "gold_layer": 1,
        "gold_max_length": 64,
        "gold_max_response_tokens": 16,
        "max_new_tokens": 6,
        "max_total_tokens": 160,
    },
    chat_template=True,
    recipes={"ppo": RECIPE, "rloo": RECIPE, "grpo": RECIPE},
    budget=BUDGET,
)

__all__ = ["BUDGET", "SPEC", "TranscriptReward", "build"]
