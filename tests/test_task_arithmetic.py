"""The Arithmetic task: strict answers, the reward, disjoint problem sets, the curriculum, the
registered env, and a tiny policy whose held-out exact match rises under RL."""

from __future__ import annotations

import ast
import doctest
import inspect
import sys
import warnings

import gymnasium as gym
import learning
import numpy as np
import pytest
import torch
from helpers import check_env_strictly

import rlhf_env  # noqa: F401  (registers the tasks)
from rlhf_env.dialogue import turn_level
from rlhf_env.extras import MissingExtraError
from rlhf_env.hubs import reasoning_gym_env, reasoning_gym_problems
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.rewards.base import RewardError
from rlhf_env.tasks import Task, arithmetic, build_task, reasoning_gym, smoke_arguments
from rlhf_env.tasks.arithmetic import UnknownPromptError
from rlhf_env.tasks.base import TaskContext

ENV_ID = "rlhf_env/Arithmetic-v0"


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tiny_tokenizer()
    return build_tiny_gpt2(tokenizer, seed=0), tokenizer


def make_task(tiny, **options) -> Task:
    policy, tokenizer = tiny
    options = {"demonstrations": 0, "eval_size": 16, **options}
    return build_task("Arithmetic", policy, tokenizer, device="cpu", **options)[0]


# -- the module ---------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [arithmetic.allocate, arithmetic.strata])
def test_docstring_examples_hold(function):
    results = [doctest.DocTestRunner().run(test) for test in doctest.DocTestFinder().find(function)]
    assert sum(result.attempted for result in results) >= 1  # the examples are there...
    assert sum(result.failed for result in results) == 0  # ...and hold


@pytest.mark.parametrize(
    "module", [arithmetic, reasoning_gym, reasoning_gym_env, reasoning_gym_problems]
)
def test_reasoning_gym_is_imported_only_by_the_builder(module):
    """reasoning-gym is an extra: the task's modules import it when a task is built, not when
    they are imported."""
    tree = ast.parse(inspect.getsource(module))
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
    names += [a.name for node in top_level if isinstance(node, ast.Import) for a in node.names]
    assert not [name for name in names if name.split(".")[0] == "reasoning_gym"]


def test_missing_reasoning_gym_names_the_tasks_extra(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # makes the import fail
    with pytest.raises(MissingExtraError, match=r"rlhf_env\[tasks\]"):
        make_task(tiny)


# -- reward and problems -----------------------------------------------------------------------


def answers_of(task: Task, prompts: list[str]) -> list[int]:
    return [answer for answer, _ in task.reward_fn.problems.answers(prompts)]


def test_reward_is_exact_match_plus_the_format_term(tiny):
    for weight in (0.0, 0.5):
        task = make_task(tiny, format_weight=weight)
        prompts = task.eval_prompts[:4]
        a, b, c, d = answers_of(task, prompts)
        responses = [
            f"<answer>{a}</answer>",  # right
            f"<answer>{b + 1}</answer>",  # wrong but well formed
            f"{c}",  # right number, no tag
            f"<answer>{d}.</answer>",  # right number, malformed
        ]
        assert task.reward_fn(prompts, responses) == [1.0 + weight, weight, 0.0, 0.0]
        assert task.gold_name == "exact_match"
        gold = task.gold_scores(prompts, responses)
        assert gold["exact_match"] == [1.0, 0.0, 0.0, 0.0]
        assert gold["format"] == [1.0, 1.0, 0.0, 0.0]
        # by the sign of the answer: the exact match where the sign is the metric's, else NaN
        for sign, negative in (("negative", True), ("non_negative", False)):
            expected = [
                match if (answer < 0) == negative else None
                for match, answer in zip(gold["exact_match"], (a, b, c, d), strict=True)
            ]
            found = [None if np.isnan(v) else v for v in gold[f"exact_match_{sign}"]]
            assert found == expected


def test_unknown_or_cut_prompt_says_to_raise_max_prompt_tokens(tiny):
    task = make_task(tiny)
    with pytest.raises(UnknownPromptError, match="raise max_prompt_tokens"):
        task.reward_fn(["What is 2 + 2?"], ["<answer>4</answer>"])
    with pytest.raises(UnknownPromptError, match="raise max_prompt_tokens"):
        task.gold_scores([task.eval_prompts[0][5:]], ["<answer>4</answer>"])
    # Through the env: a prompt cut by max_prompt_tokens is reported when it is scored.
    arguments = {**smoke_arguments("Arithmetic"), "max_prompt_tokens": 24, "max_new_tokens": 1}
    env = gym.make(ENV_ID, **arguments)
    with pytest.warns(UserWarning, match="exceeds max_prompt_tokens"):
        env.reset(seed=0)
    with pytest.raises(RewardError, match="raise max_prompt_tokens"):
        env.step(0)


def test_held_out_and_training_problems_are_disjoint(tiny):
    # 1-digit sums of two terms: 200 distinct problems, 120 of them held out (as reasoning-gym
    # draws them: a balanced set would need more than the 45 with a negative answer).
    unbalanced = {"negative_share": None, "harder_share": 0.0}
    task = make_task(tiny, terms=2, digits=1, eval_size=120, **unbalanced)
    held_out = set(task.eval_prompts)
    assert len(held_out) == 120  # distinct
    rng = np.random.default_rng(0)
    drawn = {task.train_prompts(rng) for _ in range(600)}
    assert not drawn & held_out
    assert len(drawn) == 80  # every other problem is drawn: 200 - 120
    again = make_task(tiny, terms=2, digits=1, eval_size=120, **unbalanced)
    assert again.eval_prompts == task.eval_prompts  # a fixed list
    other = make_task(tiny, terms=2, digits=1, eval_size=120, eval_seed=1, **unbalanced)
    assert other.eval_prompts != task.eval_prompts
    # Seeded draws are reproducible (the env's generator decides them).
    first = [task.train_prompts(np.random.default_rng(5)) for _ in range(3)]
    assert first == [again.train_prompts(np.random.default_rng(5)) for _ in range(3)]
    with pytest.raises(ValueError, match="lower eval_size"):
        make_task(tiny, terms=1, digits=1, eval_size=11, **unbalanced)  # only 10 problems


def test_problems_are_balanced_by_sign_and_mix_difficulties(tiny):
    """The defaults: half the answers negative, a quarter of the problems one operand longer,
    in the held-out set (exactly, by largest remainders) and in the training draws (by
    their shares); the untrained SmolLM2's shortcut, dropping minus signs, cannot pay."""
    task = make_task(tiny, eval_size=64)

    def kind(prompt: str, answer: int) -> tuple[int, bool]:
        question = prompt.rsplit("problem: ", 1)[1]
        return question.count(" + ") + question.count(" - ") + 1, answer < 0

    held_out = [kind(p, a) for p, a in zip(task.eval_prompts, answers_of(task, task.eval_prompts),
                                           strict=True)]  # fmt: skip
    counts = {k: held_out.count(k) for k in set(held_out)}
    assert counts == {(2, True): 24, (2, False): 24, (3, True): 8, (3, False): 8}
    assert task.details["eval_negative"] == 32 and task.details["eval_harder"] == 16
    assert 4 <= sum(negative for _, negative in held_out[:16]) <= 12  # any prefix mixes them
    rng = np.random.default_rng(0)
    prompts = [task.train_prompts(rng) for _ in range(2000)]
    assert not set(prompts) & set(task.eval_prompts)
    drawn = [kind(p, a) for p, a in zip(prompts, answers_of(task, prompts), strict=True)]
    negative = np.mean([n for _, n in drawn])
    harder = np.mean([terms == 3 for terms, _ in drawn])
    assert abs(negative - 0.5) < 0.05 and abs(harder - 0.25) < 0.04  # ~4 standard errors
    # the options: unbalanced and one kind; nonsense refused with what to do
    plain = make_task(tiny, eval_size=64, negative_share=None, harder_share=0.0)
    assert plain.details["eval_harder"] == 0 and plain.details["eval_negative"] < 20
    with pytest.raises(ValueError, match="negative_share=None"):
        make_task(tiny, terms=1)
    with pytest.raises(ValueError, match="harder_share must be between 0 and 1"):
        make_task(tiny, harder_share=1.5)
    with pytest.raises(ValueError, match=r"a negative answer.*lower eval_size"):
        make_task(tiny, eval_size=120, harder_share=0.0)  # 60 negative of the 45 there are
    small = make_task(tiny, eval_size=4)  # the harder kinds' share rounds to no problem
    assert len(small.eval_prompts) == 4 and small.details["eval_harder"] == 0


def test_prompts_follow_the_chat_format_and_env_options_fit(tiny):
    task = make_task(tiny, terms=3, digits=2)
    prompt = task.eval_prompts[0]
    assert prompt.startswith(f"System: {arithmetic.INSTRUCTION}\nUser: State the final answer")
    assert prompt.endswith(" =\nAssistant:")
    assert prompt.count(arithmetic.INSTRUCTION) == 1  # stated once, not after each question
    assert prompt.count(" + ") + prompt.count(" - ") == 2  # three operands
    limit = task.env_options["max_prompt_tokens"]
    assert task.details["longest_eval_prompt_tokens"] <= limit - 16
    with_demonstrations = make_task(tiny, demonstrations=2).eval_prompts[0]
    assert with_demonstrations.count("<answer>8</answer>") == 1
    assert with_demonstrations.count(arithmetic.INSTRUCTION) == 1


def feed(task: Task, correct: bool, count: int) -> None:
    """Score ``count`` fresh training prompts, answered right or wrong."""
    rng = np.random.default_rng(0)
    prompts = [task.train_prompts(rng) for _ in range(count)]
    responses = [f"<answer>{a if correct else a + 1}</answer>" for a in answers_of(task, prompts)]
    task.reward_fn(prompts, responses)


def test_curriculum_raises_the_level_on_successes_only(tiny):
    task = make_task(
        tiny, curriculum=True, curriculum_window=8, curriculum_max_level=1, harder_share=0.0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no raise, no warning
        feed(task, correct=False, count=40)
        # Held-out successes do not count.
        prompts = task.eval_prompts
        task.reward_fn(prompts, [f"<answer>{a}</answer>" for a in answers_of(task, prompts)])
    assert task.details["level"] == 0 and task.reward_fn.level == 0
    with pytest.warns(UserWarning, match="level 0 -> 1"):
        feed(task, correct=True, count=8)
    assert task.details["level"] == 1 and task.reward_fn.level == 1
    rng = np.random.default_rng(1)
    harder = task.train_prompts(rng)
    assert harder.count(" + ") + harder.count(" - ") == 2  # one more operand
    held_out = task.eval_prompts[0]
    assert held_out.count(" + ") + held_out.count(" - ") == 1  # the base difficulty
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feed(task, correct=True, count=40)  # at curriculum_max_level: no more raises
    assert task.details["level"] == 1
    # Without the curriculum nothing moves.
    fixed = make_task(tiny, harder_share=0.0)
    feed(fixed, correct=True, count=300)
    assert fixed.reward_fn.level == 0


# -- one configuration of ReasoningGym ----------------------------------------------------------


def test_it_is_one_configuration_of_reasoning_gym():
    """``rlhf_env/ReasoningGym-v0`` with :func:`reasoning_gym_options` asks the same held-out
    and training problems in the same chat as ``Arithmetic-v0`` and pays the same for any
    answer; Arithmetic-v0 serves them one prompt at a time."""
    tokenizer = build_tiny_tokenizer(chat_template=True)
    policy = build_tiny_gpt2(tokenizer, seed=0, n_positions=2048)
    options = {"eval_size": 16, "format_weight": 0.5, "harder_share": 0.5}
    task, *_ = build_task("Arithmetic", policy, tokenizer, device="cpu", **options)
    configuration = arithmetic.reasoning_gym_options(**options)
    same, *_ = build_task("ReasoningGym", policy, tokenizer, device="cpu", **configuration)
    context = TaskContext(policy, tokenizer, torch.device("cpu"))
    for episode, prompt in zip(same.eval_prompts, task.eval_prompts, strict=True):
        started = turn_level.start(episode)
        assert context.chat_prompt(started.messages()) == prompt
        answer = int(started.env.problem["answer"])
        for response in (f"<answer>{answer}</answer>", f"<answer>{answer + 1}</answer>",
                         f"{answer}", f"<answer>{answer}.</answer>"):  # fmt: skip
            step = turn_level.play_turn(started.env, response)
            assert step.reward == task.reward_fn([prompt], [response])[0]
            gold = task.gold_scores([prompt], [response])
            assert step.outcome["correct"] == gold["exact_match"][0]
            assert step.outcome["formatted"] == gold["format"][0]
    for seed in range(8):
        episode = same.train_prompts(np.random.default_rng(seed))
        prompt = context.chat_prompt(turn_level.start(episode).messages())
        assert prompt == task.train_prompts(np.random.default_rng(seed))
    env = gym.make("rlhf_env/ReasoningGym-v0", policy=policy, tokenizer=tokenizer, **configuration)
    assert env.unwrapped.task.details["checker"] == "integer"


# -- the registered env -------------------------------------------------------------------------


def test_gym_make_with_smoke_arguments_passes_the_env_checker():
    env = gym.make(ENV_ID, **smoke_arguments("Arithmetic"))
    assert isinstance(env.unwrapped.task, Task)
    check_env_strictly(env.unwrapped)
    _, info = env.reset(seed=0)
    assert info["prompt"] not in env.unwrapped.task.eval_prompts
    vector = gym.make_vec(ENV_ID, num_envs=4, **smoke_arguments("Arithmetic"))
    assert isinstance(vector.task, Task)
    vector.reset(seed=0)
    _, rewards, *_ = vector.step(np.zeros(4, dtype=np.int64))
    assert rewards.shape == (4,)


# -- learning -----------------------------------------------------------------------------------


def test_rl_raises_held_out_exact_match_of_a_tiny_policy(learning_threads):
    """One-term problems ("37 =") answered by copying the number: a skill a tiny GPT-2 picks up
    from a short warm start on training problems, which answers half the time in tags and half
    the time bare. The strict reward pays only the tagged answers, so RLOO (3,000 tokens,
    learning rate 2e-3 decaying linearly to 0) must make the policy use the tags; its exact
    match and format on the held-out problems (never seen in warm start or training; 16
    problems x 8 samples) must rise by the thresholds and by three standard errors of the gain,
    the problem as the unit (``learning.arithmetic_exact_match``). The thresholds are the
    lowest gain of ``scripts/learning_sweep.py`` minus three standard deviations of its gains
    (seeds 0-4 x 1 and 2 threads, 10 runs; 2-core machine shared with other jobs, 2026-12-06);
    both figures start at 0.570:

    ===========  ========================  =====  =========  ================
    figure       gain min / mean / max     sigma  threshold  seed 0, 1 thread
    ===========  ========================  =====  =========  ================
    exact match  0.266 / 0.348 / 0.406     0.042  0.14       0.906
    format       0.367 / 0.405 / 0.422     0.019  0.31       0.992
    ===========  ========================  =====  =========  ================

    Standard errors of the gains 0.040-0.073. This test runs seed 0 at one thread: about 40 s
    on that machine."""
    figures = learning.arithmetic_exact_match(seed=0, threads=learning_threads)
    before, after, noise = figures["before"], figures["after"], figures["noise"]
    assert 0.2 < before["format"] < 0.8, before  # the warm start tags about half its answers
    for name, threshold in {"exact_match": 0.14, "format": 0.31}.items():
        gain = after[name] - before[name]
        assert gain > max(threshold, 3 * noise[name]), (name, before, after, noise)


# -- the packaged policy ------------------------------------------------------------------------


@pytest.mark.slow
def test_gym_make_with_no_arguments_builds_on_smollm2_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = gym.make(ENV_ID)
    task = env.unwrapped.task
    assert task.details["demonstrations"] == 2 and len(task.eval_prompts) == 64
    assert env.unwrapped.tokenizer.chat_template
    check_env_strictly(env.unwrapped)
    _, info = env.reset(seed=0)
    assert info["prompt"].rstrip().endswith("assistant")


#: Issue 18's Arithmetic run (``benchmarks/RESULTS.md``), as suite settings: RLOO with groups of
#: 8 on the top 6 of SmolLM2's 30 blocks, 64 held-out problems answered twice each, the
#: problems as reasoning-gym draws them (the task's default since issue 28 balances the signs:
#: there the same recipe gains less and drops the minus signs, RESULTS.md).
RLOO_RUN = {
    "agents": ("rloo",), "seeds": (0,), "timesteps": 10_240, "eval_points": (0.0, 1.0),
    "curve_prompts": None, "eval_prompts": None, "eval_samples": 2, "num_envs": 32,
    "learning_rate": 1e-4, "epochs": 1, "minibatch_size": 16, "training_setup": "frozen:24",
    "options": {"kl_coef": 0.01, "negative_share": None, "harder_share": 0.0},
    "agent_options": {"rloo": {"group_size": 8}},
}  # fmt: skip


@pytest.mark.slow
def test_rloo_raises_smollm2_held_out_exact_match_by_15_points(tmp_path):
    """The initial exact match on the held-out problems lies in 10-60% and RLOO raises it by at
    least 15 points. Measured with these settings (``benchmarks/suite.py``, one thread, another
    job on the other core): 0.383 -> 0.625 (standard error 0.043), format 0.94 -> 0.99, KL
    1.05 nats, 22 min of training, 32 min in all. What it learned is mostly to drop the
    spurious minus signs of the untrained policy: after training it answers the held-out
    problems with a negative answer wrong (0 of 20 samples) and the others right 74% of the
    time."""
    from rlhf_pipeline.suite import run_suite

    (run,) = run_suite(tasks=["Arithmetic"], out=tmp_path / "suite.json", **RLOO_RUN).runs
    before, after = run.curve[0]["metrics"], run.final
    assert before["episodes"] == after["episodes"] == 128
    assert 0.10 <= before["gold"] <= 0.60
    assert after["gold"] - before["gold"] >= 0.15, (before["gold"], after["gold"])
