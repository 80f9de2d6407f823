"""Reward functions behind one interface: ``reward_fn(prompts, responses) -> list[float]``.

- :class:`RewardModel`: the learned Bradley-Terry reward model (train with
  :func:`train_reward_model`);
- :class:`ProbeRewardModel`: a linear Bradley-Terry head on a frozen LM's hidden layer (fit
  with :func:`fit_probe_reward`);
- :class:`SequenceClassifierReward`: a classifier's logit or label probability;
- :class:`VaderSentiment`, :class:`TextBlobPolarity`: gold sentiment oracles;
- :class:`BLEUReward`, :class:`ChrFReward`, :class:`RougeReward`: text metrics vs references;
- :class:`LengthPenalty`, :class:`CompositeReward`: shaping and weighted sums;
- :func:`load_reward`: an oracle or a saved reward model by name. (The
  missing-EOS penalty is the environments' ``missing_eos_penalty``.)
"""

from rlhf_env.rewards.base import RewardError, RewardFunction, score_responses
from rlhf_env.rewards.by_name import load_reward
from rlhf_env.rewards.classifier import SequenceClassifierReward
from rlhf_env.rewards.metrics import (
    BLEUReward,
    ChrFReward,
    CompositeReward,
    LengthPenalty,
    RougeReward,
)
from rlhf_env.rewards.model import RewardModel, RewardModelError
from rlhf_env.rewards.oracles import TextBlobPolarity, VaderSentiment
from rlhf_env.rewards.probe import ProbeRewardModel, fit_probe_reward
from rlhf_env.rewards.training import (
    RewardTrainingConfig,
    bradley_terry_loss,
    pairwise_accuracy,
    train_reward_model,
)

__all__ = [
    "BLEUReward",
    "ChrFReward",
    "CompositeReward",
    "LengthPenalty",
    "ProbeRewardModel",
    "RewardError",
    "RewardFunction",
    "RewardModel",
    "RewardModelError",
    "RewardTrainingConfig",
    "RougeReward",
    "SequenceClassifierReward",
    "TextBlobPolarity",
    "VaderSentiment",
    "bradley_terry_loss",
    "fit_probe_reward",
    "load_reward",
    "pairwise_accuracy",
    "score_responses",
    "train_reward_model",
]
