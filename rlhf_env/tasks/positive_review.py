"""``rlhf_env/PositiveReview-v0``: continue IMDB review openings so that they read positive.

The classic RLHF sentiment task (Ziegler et al. 2019), built as the InstructGPT recipe does:

- **gold judge**: all-MiniLM-L6-v2 with a scalar head, trained with the package's reward-model
  tools (Bradley-Terry on pairs of one positive and one negative labelled text) on Rotten
  Tomatoes sentences and the last words of IMDB reviews (where reviewers give their verdict);
  its held-out accuracy, and VADER's on the same texts, are in ``task.details["judge"]``. The
  judge stands in for the human labeller and measures the true objective;
- **training reward**: a second MiniLM reward model learned from pairs of the policy's own
  sampled continuations labelled by the judge (as the demo does), so the policy optimises a
  learned proxy of the gold, which it can over-optimise;
- **gold metrics**: ``judge`` (the judge's score squashed to (0, 1): sigmoid of its
  standardised logit), ``judge_fluent`` (the judge's score times a fluency factor that punishes
  text the frozen initial policy finds improbable, so that strings of positive words do not
  win) and ``vader`` (VADER compound, the classic but hackable lexicon judge);
- **prompts**: the first 8 words of IMDB reviews, half from negative reviews, in disjoint
  training and held-out sets; no chat template (a continuation task).

Both MiniLM models are trained once and cached (:mod:`rlhf_env.tasks.cache`): the judge in
about 3 minutes on two CPU cores, the reward model (sampling 1,280 continuations, labelling,
training) in about 6.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf_env.data.preferences import PreferencePair, write_jsonl_pairs
from rlhf_env.data.prompts import balanced_imdb_prompt_sets
from rlhf_env.data.reviews import movie_reviews
from rlhf_env.data.synthetic import label_pairs, sample_responses
from rlhf_env.models.loading import frozen_copy
from rlhf_env.rewards.model import RewardModel
from rlhf_env.rewards.oracles import VaderSentiment
from rlhf_env.rewards.training import RewardTrainingConfig, train_reward_model
from rlhf_env.tasks.base import SuiteBudget, Task, TaskContext, TaskSpec
from rlhf_env.tasks.cache import TINY_BACKBONE, backbone_folder, cached_folder, policy_fingerprint
from rlhf_env.text_metrics import response_perplexity

NAME = "PositiveReview"
#: Words of an IMDB review's end that make one judge training text.
VERDICT_WORDS = 48


class SentimentJudge:
    """The gold judge: a reward model trained on labelled reviews, read as a score in (0, 1).

    ``score = sigmoid(z)`` with ``z`` the reward model's standardised output (mean 0, std 1
    over its balanced training texts, so 0.5 is the boundary between the labels).
    """

    def __init__(self, reward_model: RewardModel) -> None:
        self.reward_model = reward_model

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One score in (0, 1) per response (the response alone is judged)."""
        return [1 / (1 + math.exp(-z)) for z in self.reward_model(prompts, responses)]


class FluencyWeighted:
    """A gold score that punishes degenerate text: ``score * min(1, ppl_0 / ppl)``.

    ``ppl`` is the response's perplexity under a frozen language model (the initial policy) and
    ``ppl_0`` a typical perplexity of fluent text for it (the 90th percentile over the initial
    policy's own samples): text as fluent as most of what the untrained model writes keeps its
    score; text the model finds k times more perplexing keeps 1/k of it.
    """

    def __init__(self, score: Any, model: torch.nn.Module, tokenizer: Any, ppl_0: float) -> None:
        self.score, self.model, self.tokenizer, self.ppl_0 = score, model, tokenizer, ppl_0

    def __call__(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One fluency-weighted score per response."""
        scores = self.score(prompts, responses)
        perplexities = response_perplexity(
            self.model, self.tokenizer, prompts, responses
        ).per_response
        return [
            float(s) * min(1.0, self.ppl_0 / p) if np.isfinite(p) else 0.0
            for s, p in zip(scores, perplexities, strict=True)
        ]


def judge_texts(count: int, held_out: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Labelled texts for the judge: ``(positive, negative)`` lists of ``count + held_out``
    each, half Rotten Tomatoes sentences and half the last :data:`VERDICT_WORDS` words of IMDB
    reviews from the end of the file (the prompts come from its start), shuffled."""
    per_source = (count + held_out + 1) // 2
    texts: dict[str, list[str]] = {}
    for label in ("positive", "negative"):
        sentences = list(movie_reviews("rotten_tomatoes", label))[:per_source]
        reviews = list(movie_reviews("imdb", label))[-per_source:]
        verdicts = [" ".join(text.split()[-VERDICT_WORDS:]) for text in reviews]
        mixed = [text for pair in zip(sentences, verdicts, strict=True) for text in pair]
        random.Random(seed).shuffle(mixed)
        texts[label] = mixed[: count + held_out]
    return texts["positive"], texts["negative"]


def train_judge(
    folder: Path,
    backbone: str,
    texts: int,
    held_out: int,
    max_length: int,
    device: torch.device,
    progress: bool,
    seed: int = 0,
) -> None:
    """Train the judge into ``folder`` and write its held-out accuracies (the judge's, and
    VADER's on the same texts) to ``metrics.json``."""
    positive, negative = judge_texts(texts, held_out, seed)
    pairs = [
        PreferencePair("", p, n) for p, n in zip(positive[:texts], negative[:texts], strict=True)
    ]
    judge = RewardModel.from_backbone(
        backbone_folder(backbone), device=device, max_length=max_length, seed=seed,
        include_prompt=False,
    )  # fmt: skip
    config = RewardTrainingConfig(
        epochs=1, batch_size=32, learning_rate=5e-5, eval_fraction=0, seed=seed
    )
    metrics = train_reward_model(judge, pairs, config, progress)
    test_positive, test_negative = positive[texts:], negative[texts:]
    metrics["held_out_texts"] = len(test_positive) + len(test_negative)
    metrics["held_out_accuracy"] = _accuracy(
        SentimentJudge(judge), test_positive, test_negative, 0.5
    )
    metrics["vader_held_out_accuracy"] = _accuracy(
        VaderSentiment(), test_positive, test_negative, 0.0
    )
    judge.save_pretrained(folder / "judge")
    _write_json(folder / "metrics.json", metrics)


def _accuracy(judge: Any, positive: list[str], negative: list[str], boundary: float) -> float:
    """Share of texts on the right side of ``boundary`` (positive above, negative below)."""
    texts = positive + negative
    scores = np.asarray(judge([""] * len(texts), texts))
    truth = np.array([True] * len(positive) + [False] * len(negative))
    return float(np.mean((scores > boundary) == truth))


def train_proxy_reward(
    folder: Path,
    context: TaskContext,
    judge: SentimentJudge,
    prompts: Sequence[str],
    backbone: str,
    responses_per_prompt: int,
    max_new_tokens: int,
    seed: int,
) -> None:
    """The training reward: the policy's sampled continuations of ``prompts``, pairs labelled
    by the judge, a reward model trained on them; writes ``reward_model/``, ``pairs.jsonl``,
    ``metrics.json`` and the fluency threshold (``ppl_0``) of the samples."""
    responses = sample_responses(
        context.policy, context.tokenizer, list(prompts), responses_per_prompt, max_new_tokens,
        seed=seed, progress=context.progress,
    )  # fmt: skip
    pairs = label_pairs(list(prompts), responses, judge, seed=seed)
    write_jsonl_pairs(pairs, folder / "pairs.jsonl")
    reward_model = RewardModel.from_backbone(
        backbone_folder(backbone), device=context.device, max_length=max_new_tokens * 3,
        seed=seed, include_prompt=False, pooling="sum",
    )  # fmt: skip
    config = RewardTrainingConfig(epochs=2, batch_size=32, learning_rate=1e-4, seed=seed)
    metrics = train_reward_model(reward_model, pairs, config, context.progress)
    flat_prompts = [p for p, group in zip(prompts, responses, strict=True) for _ in group]
    flat = [response for group in responses for response in group]
    perplexities = response_perplexity(
        context.policy, context.tokenizer, flat_prompts, flat
    ).per_response
    finite = perplexities[np.isfinite(perplexities)]
    metrics["ppl_0"] = float(np.percentile(finite, 90)) if finite.size else 1.0
    metrics["initial_judge_mean"] = float(np.mean(judge(flat_prompts, flat)))
    reward_model.save_pretrained(folder / "reward_model")
    _write_json(folder / "metrics.json", metrics)


def build(
    context: TaskContext,
    train_prompts: int = 4096,
    eval_prompts: int = 128,
    preference_prompts: int = 320,
    responses_per_prompt: int = 4,
    prompt_words: int = 8,
    judge_backbone: str = "all-minilm-l6-v2",
    judge_texts_per_label: int = 2000,
    judge_max_length: int = 64,
    reward_backbone: str = "all-minilm-l6-v2",
    sample_tokens: int = 16,
    seed: int = 0,
) -> Task:
    """The PositiveReview task for ``context.policy`` (see the module docstring).

    Args:
        train_prompts, eval_prompts, preference_prompts: sizes of the three disjoint prompt sets
            (RL training, held-out evaluation, the reward model's sampled pairs).
        responses_per_prompt: continuations sampled per preference prompt.
        prompt_words: words of a review that make a prompt.
        judge_backbone, reward_backbone: backbones of the judge and of the training reward
            (``"tiny"``: a tiny random GPT-2, for smoke runs).
        judge_texts_per_label: labelled training texts per label for the judge (400 more per
            label are held out for its accuracy).
        judge_max_length: tokens of a text the judge reads.
        sample_tokens: tokens per sampled continuation for the reward model's pairs.
        seed: seed of the splits, the samples and the trainings.
    """
    train, held_out, preference = balanced_imdb_prompt_sets(
        [train_prompts, eval_prompts, preference_prompts], words=prompt_words
    )
    judge_held_out = min(400, judge_texts_per_label)
    judge_settings = {
        "backbone": judge_backbone, "texts": judge_texts_per_label, "held_out": judge_held_out,
        "max_length": judge_max_length, "seed": seed,
    }  # fmt: skip
    judge_folder = cached_folder(
        NAME, "judge", judge_settings,
        lambda folder: train_judge(
            folder, judge_backbone, judge_texts_per_label, judge_held_out, judge_max_length,
            context.device, context.progress, seed,
        ),
    )  # fmt: skip
    judge = SentimentJudge(
        RewardModel.from_pretrained(judge_folder / "judge", device=context.device)
    )
    proxy_settings = {
        "judge": judge_folder.name, "policy": policy_fingerprint(context.policy),
        "backbone": reward_backbone, "prompts": preference_prompts,
        "per_prompt": responses_per_prompt, "tokens": sample_tokens, "words": prompt_words,
        # The preference prompts follow the training and held-out ones in the review file.
        "prompts_before": train_prompts + eval_prompts, "seed": seed,
    }  # fmt: skip
    proxy_folder = cached_folder(
        NAME, "reward_model", proxy_settings,
        lambda folder: train_proxy_reward(
            folder, context, judge, preference, reward_backbone, responses_per_prompt,
            sample_tokens, seed,
        ),
    )  # fmt: skip
    reward_model = RewardModel.from_pretrained(proxy_folder / "reward_model", device=context.device)
    proxy_metrics = _read_json(proxy_folder / "metrics.json")
    fluency_model = frozen_copy(context.policy)
    return Task(
        name=NAME,
        train_prompts=train,
        eval_prompts=held_out,
        reward_fn=reward_model,
        gold={
            "judge": judge,
            "judge_fluent": FluencyWeighted(
                judge, fluency_model, context.tokenizer, proxy_metrics["ppl_0"]
            ),
            "vader": VaderSentiment(),
        },
        env_options=dict(ENV_OPTIONS),
        details={
            "judge": _read_json(judge_folder / "metrics.json") | {"folder": str(judge_folder)},
            "reward_model": {
                key: proxy_metrics.get(key)
                for key in (
                    "eval_accuracy",
                    "initial_eval_accuracy",
                    "train_pairs",
                    "eval_pairs",
                    "ppl_0",
                    "initial_judge_mean",
                )
            }
            | {"folder": str(proxy_folder)},
        },
        reference=fluency_model,
    )


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=float))


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


#: The env's settings on this task: 16-token continuations of prompts of at most 48 tokens, and
#: beta 0.2, the demo's (its PPO run raised the held-out judge by +0.16 at 5.6 nats of KL:
#: benchmarks/RESULTS.md, issue 18).
ENV_OPTIONS: dict[str, Any] = {"max_new_tokens": 16, "max_prompt_tokens": 48, "kl_coef": 0.2}

#: PPO, RLOO and GRPO at lr 2e-4, two epochs: each raised the held-out judge by 0.06-0.09 in
#: 2,048 tokens on ``frozen:24``, three seeds (benchmarks/RESULTS.md, issue 28's 90-minute
#: suite; GRPO's gain at Holm p = 0.016).
RECIPE: dict[str, Any] = {"learning_rate": 2e-4, "epochs": 2, "minibatch_size": 8}

#: A suite run's budget: 2,048 tokens of the top 6 blocks at beta 0.05 (issue 28's 90-minute
#: suite, where the agents gained +0.06 to +0.09 at that beta).
BUDGET = SuiteBudget(timesteps=2048, training_setup="frozen:24", options={"kl_coef": 0.05})

SPEC = TaskSpec(
    name=NAME,
    description="continue IMDB review openings positively; learned reward from a MiniLM "
    "judge's labels, gold = that judge (and VADER)",
    build=build,
    smoke_options={
        "train_prompts": 16,
        "eval_prompts": 8,
        "preference_prompts": 8,
        "responses_per_prompt": 2,
        "judge_backbone": TINY_BACKBONE,
        "judge_texts_per_label": 32,
        "judge_max_length": 16,
        "reward_backbone": TINY_BACKBONE,
        "sample_tokens": 4,
        "max_new_tokens": 6,
        "max_prompt_tokens": 48,
    },
    recipes={"ppo": RECIPE, "rloo": RECIPE, "grpo": RECIPE},
    budget=BUDGET,
)

__all__ = [
    "BUDGET",
    "ENV_OPTIONS",
    "RECIPE",
    "SPEC",
    "FluencyWeighted",
    "SentimentJudge",
    "build",
    "judge_texts",
]
