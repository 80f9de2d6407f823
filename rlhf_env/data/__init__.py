"""Data: prompt sources (and, later, preference pairs)."""

from rlhf_env.data.prompts import PromptsLike, PromptSource

__all__ = ["PromptSource", "PromptsLike"]
