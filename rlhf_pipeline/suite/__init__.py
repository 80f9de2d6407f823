"""The benchmark suite: agents x tasks x seeds on equal token budgets (the leaderboard per task,
with intervals pooling seeds and held-out prompts and paired comparisons, and the learning
curves of the gold score, are drawn from its results by :mod:`rlhf_pipeline.leaderboard`).

Every run builds a fresh env from its task (:func:`rlhf_env.tasks.make_task_vector_env`; the
policy is loaded or built anew, so no run sees another's trained weights), trains the agent
for ``timesteps`` generated tokens, evaluates the held-out prompts at the ``eval_points``
(fractions of the budget) for the learning curve and finally on the held-out prompts. The
evaluations run in a second env over the same policy and reference modules, with the task's
initial beta, so evaluating never disturbs a training env (SB3 keeps its last observation
between ``learn`` calls) and every agent's ``return`` is measured under the same beta.

What a seed sets: the agent's seed (its sampling, prompt draws and minibatch order), the
global torch / numpy / random seeds at the start of the run, and the evaluation's seed. The
task (its prompts, reward and gold metrics) and the initial policy are the same in every run.

Agents (:data:`BUILTIN_AGENTS`): ``ppo``, ``rloo``, ``grpo`` (:func:`rlhf_agents.make_agent`),
``sb3-ppo`` (:class:`rlhf_agents.sb3_agent.SB3PPOAgent`: stable-baselines3's own PPO on
``SB3VecEnv`` with ``LanguageModelPolicy``), and the baselines ``reference`` (samples from the
frozen reference: the untrained policy) and ``random``, which are not trained. One's own: a
``"package.module:Class"`` spec (the class takes ``(env, **config)``, and ``seed=`` if it
accepts it) or, from Python, a factory ``factory(env, seed) -> Agent``. Either may carry an
``env_options`` dict attribute that its env is built with (``{"autoreset_mode": "SameStep"}``
for an SB3-style agent). Instances of the fixed agents (``ReferenceAgent``, ``RandomAgent``,
``PolicyAgent``) are not trained and have no curve; any other agent is trained: a
policy-gradient agent in one ``learn(budget, callback=...)`` call, evaluated from the
callback, any other in ``learn(point)`` steps, each resuming where the last stopped.

The learning agents share the optimiser settings of :class:`SuiteConfig`
(``learning_rate``, ``epochs``, ``minibatch_size`` responses per step; SB3 gets
``minibatch_size x max_new_tokens`` transitions per step, ``n_steps = max_new_tokens``, gamma
1, GAE 0.95, clip 0.2, value coefficient 0.1 as ``PPOAgent``); ``agent_options`` override
any agent's own arguments. Tasks differ in cost (a long templated conversation costs more per
token than an 8-word review opening): each task declares a suite budget
(:class:`rlhf_env.tasks.SuiteBudget`: tokens, training setup, env options), the one that makes
the three-task suite fit in 90 minutes on 2 CPU cores, which ``timesteps``,
``training_setup`` and ``options`` override for every task and ``task_options`` and
``task_timesteps`` for one (``budgets=False``: the suite's own defaults); every agent of a task
still gets the same one. Every agent stops at the first update boundary at or past the
budget: each run records the tokens it trained on.

The modules: :mod:`~rlhf_pipeline.suite.config` (the settings),
:mod:`~rlhf_pipeline.suite.agents` (agents by name or spec, and their factories),
:mod:`~rlhf_pipeline.suite.runner` (the runs) and :mod:`~rlhf_pipeline.suite.results` (what
they leave, and its JSON); :mod:`rlhf_pipeline.leaderboard` reads the results.

Example:
    >>> result = run_suite(tasks=["Arithmetic"], agents=["ppo", "reference"], seeds=[0, 1],
    ...                    smoke=True, out="suite.json")
    >>> from rlhf_pipeline.leaderboard import format_leaderboard, plot_curves
    >>> print(format_leaderboard(result))
    >>> plot_curves(result, "curves.png")
"""

from rlhf_pipeline.suite.agents import (
    BASELINES,
    BUILTIN_AGENTS,
    FIXED_AGENTS,
    AgentFactory,
    agent_factory,
    agent_name,
    load_agent_class,
)
from rlhf_pipeline.suite.config import DEFAULT_TIMESTEPS, SMOKE_SETTINGS, SuiteConfig
from rlhf_pipeline.suite.results import (
    RunResult,
    SuiteResult,
    as_float,
    machine_info,
    rank_metric,
)
from rlhf_pipeline.suite.runner import SAMPLES, run_one, run_suite

__all__ = [
    "BASELINES",
    "BUILTIN_AGENTS",
    "DEFAULT_TIMESTEPS",
    "FIXED_AGENTS",
    "SAMPLES",
    "SMOKE_SETTINGS",
    "AgentFactory",
    "RunResult",
    "SuiteConfig",
    "SuiteResult",
    "agent_factory",
    "agent_name",
    "as_float",
    "load_agent_class",
    "machine_info",
    "rank_metric",
    "run_one",
    "run_suite",
]
