"""Reward functions: the interface, its validation, and rewards built on models."""

from rlhf_env.rewards.base import RewardError, RewardFunction, score_responses
from rlhf_env.rewards.classifier import SequenceClassifierReward

__all__ = ["RewardError", "RewardFunction", "SequenceClassifierReward", "score_responses"]
