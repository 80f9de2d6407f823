"""The RLHF pipeline end to end (the ``rlhf-env demo`` command) on the ``PositiveReview`` task:
a gold judge, preferences it labels, a learned reward model, RL fine-tuning with KL control,
evaluation with the task's gold metrics before and after, and a report.

This is the application layer, above the core (:mod:`rlhf_env`) and the agents
(:mod:`rlhf_agents`); neither imports it. It holds the demo pipeline and, in
:mod:`rlhf_pipeline.cli`, the ``rlhf-env`` command line.
"""

from rlhf_pipeline.config import DemoConfig
from rlhf_pipeline.demo import run_demo

__all__ = ["DemoConfig", "run_demo"]
