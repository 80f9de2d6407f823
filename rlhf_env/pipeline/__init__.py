"""The RLHF pipeline end to end (the ``rlhf-env demo`` command): preferences from a gold
oracle, a reward model, RL fine-tuning with KL control, evaluation and a report.

This is the entry-point layer: unlike the rest of :mod:`rlhf_env`, it imports :mod:`agents`.
"""

from rlhf_env.pipeline.config import DemoConfig
from rlhf_env.pipeline.demo import run_demo

__all__ = ["DemoConfig", "run_demo"]
