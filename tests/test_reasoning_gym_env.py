"""ReasoningGymEnv: reasoning-gym's datasets as turn-level envs (the question, an answer in
tags scored by the dataset's checker), seeds to problems, held-out problems, forks, errors."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
import reasoning_gym

from rlhf_env.dialogue import turn_level
from rlhf_env.hubs import reasoning_gym_env, reasoning_gym_problems
from rlhf_env.hubs.reasoning_gym_env import (
    FEEDBACK,
    INSTRUCTION,
    ReasoningGymEnv,
    dataset_names,
    dataset_options,
)
from rlhf_env.hubs.reasoning_gym_problems import Problem, extract_integer

#: Datasets that build offline with their defaults and whose checkers score the reference
#: answer 1 and "not the answer" below 1 (docs/reasoning_gym_datasets.md): numbers, words,
#: lists, multi-line grids.
DOCS = Path(__file__).resolve().parents[1] / "docs" / "reasoning_gym_datasets.md"

WORKING = (
    "basic_arithmetic",
    "caesar_cipher",
    "chain_sum",
    "count_bits",
    "family_relationships",
    "game_of_life",
    "gcd",
    "letter_counting",
    "maze",
    "number_sorting",
    "simple_equations",
    "spell_backward",
    "sudoku",
    "word_sorting",
)


def tagged(answer: object) -> str:
    return f"I think so. <answer>{answer}</answer>"


@pytest.fixture(scope="module")
def envs() -> dict[str, ReasoningGymEnv]:
    return {name: ReasoningGymEnv(name, size=50, eval_size=4) for name in WORKING}


# -- the protocol, dataset by dataset -------------------------------------------------------


@pytest.mark.parametrize("name", WORKING)
def test_reset_states_the_format_and_asks_the_question(envs, name):
    env = envs[name].fork()
    question, info = env.reset(seed=1)
    assert info["system_prompt"] == INSTRUCTION
    assert "<answer></answer>" in info["system_prompt"]
    assert question == env.problem["question"] and question.strip()
    assert (info["dataset"], info["split"]) == (name, "train")


@pytest.mark.parametrize("name", WORKING)
def test_the_reference_answer_scores_one_and_ends_the_episode(envs, name):
    env = envs[name].fork()
    env.reset(seed=2)
    observation, reward, terminated, truncated, info = env.step(tagged(env.problem["answer"]))
    assert (reward, terminated, truncated, observation) == (1.0, True, False, "")
    assert info["outcome"] == {"score": 1.0, "correct": 1.0, "formatted": 1.0}


@pytest.mark.parametrize("name", WORKING)
def test_a_wrong_answer_scores_below_one_and_no_answer_zero(envs, name):
    env = envs[name].fork()
    env.reset(seed=3)
    _, reward, terminated, _, info = env.fork().step(tagged("not the answer"))
    assert reward < 1.0 and terminated
    assert info["outcome"]["correct"] == 0.0 and info["outcome"]["formatted"] == 1.0
    # the reference answer without the tags is no answer: 0, whatever the checker would say
    _, reward, terminated, _, info = env.step(str(env.problem["answer"]))
    assert (reward, terminated, info["answer"]) == (0.0, True, None)
    assert info["outcome"] == {"score": 0.0, "correct": 0.0, "formatted": 0.0}


def test_no_answer_scores_zero_even_where_the_checker_pays_for_none():
    """puzzle24's checker gives 0.01 to a None answer; the env never asks it."""
    env = ReasoningGymEnv("puzzle24", size=8, eval_size=2)
    env.reset(seed=0)
    checker = reasoning_gym.get_score_answer_fn("puzzle24")
    assert checker(None, env.problem) > 0  # what the env must not pay
    assert env.step("24, I am sure")[1] == 0.0


def test_a_checker_that_raises_on_free_text_scores_zero():
    """prime_factorization's checker parses integers and raises on words: a wrong answer."""
    env = ReasoningGymEnv("prime_factorization", size=8, eval_size=2)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(tagged("seven"))
    assert (reward, terminated) == (0.0, True)
    assert "ValueError" in info["score_error"]


def test_the_last_answer_tag_counts(envs):
    env = envs["chain_sum"].fork()
    env.reset(seed=4)
    answer = env.problem["answer"]
    _, reward, *_ = env.fork().step(f"<answer>{answer}</answer> no: <answer>x</answer>")
    assert reward < 1.0
    _, reward, *_ = env.step(f"<answer>x</answer> no: <answer>{answer}</answer>")
    assert reward == 1.0


# -- seeds and problems ---------------------------------------------------------------------


def test_the_same_seed_gives_the_same_problem_in_any_env():
    first = ReasoningGymEnv("maze", size=50, eval_size=4)
    second = ReasoningGymEnv("maze", size=50, eval_size=4)
    questions = [first.reset(seed=s)[0] for s in (7, 8, 7)]
    assert questions[0] == questions[2] != questions[1]
    assert second.reset(seed=7)[0] == questions[0]
    assert first.reset(seed=57)[0] == questions[0]  # indices wrap around size


def test_a_seed_asks_its_problem_again_even_of_a_generator_that_varies():
    """list_functions draws another problem 0 at each call; the env and its forks remember."""
    raw = reasoning_gym.create_dataset("list_functions", seed=0, size=8)
    assert raw[0]["question"] != raw[0]["question"], "the test needs a varying generator"
    env = ReasoningGymEnv("list_functions", size=8, eval_size=2)
    question, _ = env.reset(seed=0)
    assert env.fork().reset(seed=0)[0] == question == env.reset(seed=8)[0]
    assert env.step(tagged(env.problem["answer"]))[1] == 1.0


def test_held_out_problems_are_never_training_draws():
    """Two one-digit terms make ~200 distinct sums, so 400 training problems repeat held-out
    questions: the env must skip every one, and must not skip anything else."""
    options = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    env = ReasoningGymEnv("chain_sum", size=400, eval_size=32, **options)
    held_out = {p["question"] for p in env.eval_problems}
    assert len(held_out) == 32  # distinct
    raw = reasoning_gym.create_dataset("chain_sum", seed=0, size=400, **options)
    colliding = [i for i in range(400) if raw[i]["question"] in held_out]
    assert colliding, "the test needs training problems that repeat held-out questions"
    for seed in range(400):
        question, info = env.reset(seed=seed)
        assert question not in held_out
        if seed not in colliding:
            assert (info["problem"], question) == (seed, raw[seed]["question"])
    evaluation = env.with_split("eval")
    assert [evaluation.reset(seed=s)[0] for s in range(32)] == [
        p["question"] for p in env.eval_problems
    ]
    assert evaluation.reset(seed=0)[1]["split"] == "eval"


def test_seed_none_draws_a_problem_of_the_split():
    env = ReasoningGymEnv("gcd", size=50, eval_size=4).with_split("eval")
    held_out = {p["question"] for p in env.eval_problems}
    assert all(env.reset()[0] in held_out for _ in range(8))


# -- forks and episodes ---------------------------------------------------------------------


def test_a_fork_leaves_the_original_unchanged():
    env = ReasoningGymEnv("word_sorting", size=50, eval_size=4, max_turns=2)
    question, _ = env.reset(seed=5)
    answer = env.problem["answer"]
    forked = env.fork()
    assert forked.step(tagged("wrong"))[1:3] == (0.0, False)  # one attempt of two spent
    forked.reset(seed=6)  # and a new episode started on the fork
    assert env.problem["question"] == question
    _, reward, terminated, _, info = env.step(tagged("wrong"))  # the original's first attempt
    assert (reward, terminated) == (0.0, False)
    _, reward, terminated, _, info = env.step(tagged(answer))
    assert (reward, terminated, info["outcome"]["attempts"]) == (1.0, True, 2.0)


def test_max_turns_gives_feedback_and_pays_the_last_attempt():
    env = ReasoningGymEnv("gcd", size=50, eval_size=4, max_turns=2)
    env.reset(seed=0)
    observation, reward, terminated, truncated, info = env.step("no tags")
    assert (observation, reward, terminated, truncated) == (FEEDBACK, 0.0, False, False)
    assert "outcome" not in info
    _, reward, terminated, _, info = env.step(tagged("not a number"))
    assert (reward, terminated) == (0.0, True)
    assert info["outcome"] == {"score": 0.0, "correct": 0.0, "formatted": 1.0, "attempts": 2.0}
    with pytest.raises(RuntimeError, match="reset"):
        env.step(tagged(1))


def test_the_dialogue_bridge_plays_it(envs):
    """turn_level.start and play_turn (the token env's path) accept the env as it is."""
    env = envs["chain_sum"].with_split("eval")
    (episode,) = env.episodes([1])
    started = turn_level.start(episode)
    assert started.system == INSTRUCTION
    assert started.user_turn == env.eval_problems[1]["question"]
    answer = started.env.problem["answer"]
    step = turn_level.play_turn(started.env, tagged(answer))
    assert (step.reward, step.terminated, step.outcome["correct"]) == (1.0, True, 1.0)
    assert turn_level.play_turn(started.env, "no idea").reward == 0.0  # the start unchanged


# -- errors and metadata --------------------------------------------------------------------


def test_an_unknown_dataset_names_close_matches():
    with pytest.raises(ValueError, match=r"'chainsum' is not .*'chain_sum'"):
        ReasoningGymEnv("chainsum")


def test_a_dataset_that_cannot_be_built_says_why(monkeypatch):
    with pytest.raises(ValueError, match=r"'composite' cannot be built.*DatasetSpec"):
        ReasoningGymEnv("composite")
    with pytest.raises(ValueError, match=r"'gcd' cannot be built.*min_value=1"):
        ReasoningGymEnv("gcd", colour="blue")

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'pyfiglet'", name="pyfiglet")

    monkeypatch.setattr(reasoning_gym, "create_dataset", missing)
    with pytest.raises(ValueError, match=r"'figlet_font' cannot be built.*'pyfiglet'"):
        ReasoningGymEnv("figlet_font")


def test_composite_builds_with_its_datasets():
    from reasoning_gym.composite import DatasetSpec

    specs = [DatasetSpec("gcd", 1.0, {}), DatasetSpec("lcm", 1.0, {})]
    env = ReasoningGymEnv("composite", size=20, eval_size=4, datasets=specs)
    env.reset(seed=0)
    assert env.step(tagged(env.problem["answer"]))[1] == 1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seed": 3, "eval_seed": 3}, "held-out problems would be the training"),
        ({"eval_size": 0}, "must all be >= 1"),
        ({"split": "test"}, "split must be one of"),
        ({"instruction": "Answer."}, "does not mention <answer>"),
        ({"demonstrations": 1, "worked_answer": "{working}"}, "does not fill from the problem"),
        ({"demonstrations": 1, "worked_answer": "<answer>1{answer}</answer>"}, "do not hold the"),
    ],
)
def test_bad_arguments_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ReasoningGymEnv("gcd", **options)


def test_demonstrations_are_earlier_turns_answered_as_the_template_says():
    """The first training problems as worked examples: the tagged answer alone by default, or
    the template over the problem's fields; never a held-out question."""
    plain = ReasoningGymEnv("chain_sum", size=50, eval_size=8, demonstrations=2)
    worked = ReasoningGymEnv(
        "chain_sum", size=50, eval_size=8, demonstrations=2,
        worked_answer="{metadata[expression]} = {answer}, so <answer>{answer}</answer>",
    )  # fmt: skip
    _, info = worked.reset(seed=0)
    assert [turn["role"] for turn in info["history"]] == ["user", "assistant"] * 2
    for shown, (user, answer) in zip(
        (plain, worked), (plain.history[:2], worked.history[:2]), strict=True
    ):
        problem = next(
            shown.problem_at("train", i).entry
            for i in range(50)
            if shown.problem_at("train", i).question == user["content"]
        )
        assert user["content"] not in {p["question"] for p in shown.eval_problems}
        expression = problem["metadata"]["expression"]
        expected = f"<answer>{problem['answer']}</answer>"
        if shown is worked:
            expected = f"{expression} = {problem['answer']}, so {expected}"
        assert answer == {"role": "assistant", "content": expected}


def test_dataset_metadata():
    names = dataset_names()
    assert len(names) >= 100 and set(WORKING) <= set(names) and names == sorted(names)
    assert dataset_options("chain_sum")["max_terms"] == 6
    with pytest.raises(ValueError, match="'chain_sum'"):
        dataset_options("chain-sum")


def test_docstring_examples_run():
    results = doctest.testmod(reasoning_gym_env)
    assert results.attempted > 0 and results.failed == 0


def test_the_docs_example_runs_and_its_table_lists_every_dataset(capsys):
    text = DOCS.read_text()
    block = re.search(r"```python\n(.*?)```", text, re.DOTALL).group(1)
    namespace: dict = {}
    exec(compile(block, str(DOCS), "exec"), namespace)
    assert capsys.readouterr().out.startswith("1.0 {'score': 1.0, 'correct': 1.0")
    assert len(namespace["held_out"]) == 8
    rows = re.findall(r"^\| (\w+) \| (?:yes|no) \|", text, re.MULTILINE)
    assert rows == dataset_names(), "rerun benchmarks/reasoning_gym_survey.py and paste its table"


# -- mixes, fixed demonstrations, checkers --------------------------------------------------

ONE_DIGIT = {"min_digits": 1, "max_digits": 1, "min_terms": 2, "max_terms": 2}
THREE_TERMS = {"min_terms": 3, "max_terms": 3}
MIX = [
    {"share": 3, "answer_sign": "negative"},  # two-term sums with a negative answer
    {"share": 1, "options": THREE_TERMS},  # three-term sums, either sign
]


def kind(entry: dict) -> tuple[int, bool]:
    return entry["metadata"]["num_terms"], int(entry["answer"]) < 0


def test_a_mix_takes_each_kinds_share_of_the_held_out_set_and_of_training():
    env = ReasoningGymEnv("chain_sum", size=10_000, eval_size=16, mix=MIX, **ONE_DIGIT)
    held_out = [kind(entry) for entry in env.eval_problems]
    assert sum(k == (2, True) for k in held_out) == 12  # exactly its share (3/4 of 16)
    assert sum(terms == 3 for terms, _ in held_out) == 4
    assert held_out[:12] != [(2, True)] * 12  # shuffled: any prefix mixes the kinds
    questions = {entry["question"] for entry in env.eval_problems}
    strata = []
    for seed in range(400):
        question, info = env.reset(seed=seed)
        assert question not in questions
        terms, negative = kind(env.problem)
        assert (terms, negative) == (2, True) if info["stratum"] == 0 else terms == 3
        strata.append(info["stratum"])
    assert abs(strata.count(0) / 400 - 0.75) < 0.07  # ~3 standard errors
    other = ReasoningGymEnv("chain_sum", size=10_000, eval_size=16, mix=MIX, **ONE_DIGIT)
    assert [other.reset(seed=s)[0] for s in (5, 9)] == [env.reset(seed=s)[0] for s in (5, 9)]
    assert other.eval_problems == env.eval_problems


def test_a_kind_with_too_few_problems_says_which():
    with pytest.raises(ValueError, match=r"kind 'a negative answer'.*lower eval_size"):
        ReasoningGymEnv(
            "chain_sum",
            eval_size=120,
            mix=[{"share": 1, "answer_sign": "negative"}],
            **ONE_DIGIT,
        )  # fmt: skip  (two one-digit terms make 45 negative sums)


def test_fixed_demonstrations_are_shown_and_never_asked():
    plain = ReasoningGymEnv("chain_sum", size=50, eval_size=4, **ONE_DIGIT)
    asked = plain.problem_at("train", 0).entry  # what seed 0 asks without demonstrations
    env = ReasoningGymEnv(
        "chain_sum", size=50, eval_size=4, demonstrations=[asked],
        worked_answer="{metadata[expression]} = {answer}, so <answer>{answer}</answer>",
        **ONE_DIGIT,
    )  # fmt: skip
    expression = asked["metadata"]["expression"]
    assert env.history == [
        {"role": "user", "content": asked["question"]},
        {"role": "assistant", "content": f"{expression} = {asked['answer']}, so "
         f"<answer>{asked['answer']}</answer>"},
    ]  # fmt: skip
    assert env.reset(seed=0)[0] != asked["question"]
    assert all(env.reset(seed=s)[0] != asked["question"] for s in range(50))
    for wrong in ([{"question": "1 + 1 ="}], "2", ["1 + 1 = 2"]):
        with pytest.raises(ValueError, match="'question' and an 'answer'"):
            ReasoningGymEnv("chain_sum", demonstrations=wrong)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>4</answer>", "4"),
        ("<answer> -4 </answer>", "-4"),  # whitespace inside the tag is stripped
        ("<answer>\n+4\n</answer>", "+4"),
        ("4 + 5 = 9, so <answer>9</answer>", "9"),
        ("<answer>1</answer> no: <answer>2</answer> done", "2"),  # the last tag counts
        ("<answer><answer>5</answer>", "5"),
        ("<answer>007</answer>", "007"),
        ("<answer>-4.</answer>", None),
        ("<answer>4.0</answer>", None),
        ("<answer>4 apples</answer>", None),
        ("<answer>3 4</answer>", None),  # two numbers
        ("<answer>1,000</answer>", None),
        ("<answer>\u0664</answer>", None),  # an Arabic-Indic four: digits are ASCII only
        ("<answer></answer>", None),
        ("<answer>4", None),  # unclosed
        ("4", None),  # no tags: no fallback to the last number
        ("<answer>7</answer> <answer>seven</answer>", None),  # the last tag is not a number
    ],
)
def test_the_integer_checker_reads_only_a_tagged_integer(text, expected):
    assert extract_integer(text) == expected


def test_the_integer_checker_compares_integers_exactly_with_no_partial_credit():
    problem = Problem({"question": "57 - 87 =", "answer": "-30"}, "eval", 0, 0, None, "integer")
    right = ["<answer>-30</answer>", "<answer> -30 </answer>", "<answer>-030</answer>"]
    wrong = [
        "<answer>30</answer>",
        "-30",
        "<answer>-30.</answer>",
        "<answer>-30</answer><answer>1</answer>",
    ]
    assert [problem.grade(text).correct for text in right] == [True] * 3
    assert [problem.grade(text).score for text in wrong] == [0.0] * 4
    assert [problem.grade(text).formatted for text in wrong] == [True, False, False, True]
    plus = Problem({"question": "3 + 4 =", "answer": "7"}, "eval", 0, 0, None, "integer")
    assert plus.grade("<answer>+7</answer>").correct and plus.grade("<answer>07</answer>").correct
    words = Problem({"question": "?", "answer": "seven"}, "eval", 0, 0, None, "integer")
    with pytest.raises(ValueError, match="checker='dataset'"):
        words.grade("<answer>7</answer>")


def test_the_format_weight_pays_a_well_formed_answer_on_the_last_turn():
    env = ReasoningGymEnv(
        "chain_sum", size=50, eval_size=4, checker="integer", format_weight=0.5, **ONE_DIGIT
    )
    env.reset(seed=0)
    answer = int(env.problem["answer"])
    _, reward, _, _, info = env.fork().step(f"<answer>{answer + 1}</answer>")
    assert reward == 0.5 and info["outcome"] == {"score": 0.0, "correct": 0.0, "formatted": 1.0}
    assert env.fork().step(f"<answer>{answer}.</answer>")[1] == 0.0  # not an integer: no format
    assert env.step(f"<answer>{answer}</answer>")[1] == 1.5


def test_with_training_mix_changes_the_training_problems_alone():
    env = ReasoningGymEnv("chain_sum", size=1_000, eval_size=8, mix=MIX, **ONE_DIGIT)
    harder = env.with_training_mix([{"share": 1, "options": {"min_terms": 4, "max_terms": 4}}])
    assert harder.eval_problems == env.eval_problems
    assert harder.with_split("eval").reset(seed=3)[0] == env.eval_problems[3]["question"]
    assert {harder.problem_at("train", s).entry["metadata"]["num_terms"] for s in range(30)} == {4}
    assert {kind(env.problem_at("train", s).entry)[0] for s in range(30)} == {2, 3}  # unchanged


def test_the_opening_is_the_chat_the_bridge_templates():
    env = ReasoningGymEnv("chain_sum", size=50, eval_size=4, demonstrations=2)
    for split in ("train", "eval"):
        (episode,) = env.with_split(split).episodes([2])
        expected = env.opening(env.problem_at(split, 2).question)
        assert turn_level.start(episode).messages() == expected


@pytest.mark.parametrize(
    "options, message",
    [
        ({"checker": "fuzzy"}, "checker must be one of"),
        ({"format_weight": float("nan")}, "format_weight must be a finite number"),
        ({"mix": [{"share": 0}]}, "share must be a positive number"),
        ({"mix": [{"share": 1, "sign": "negative"}]}, "a stratum is"),
        ({"mix": [{"share": 1, "answer_sign": "positive"}]}, "answer_sign must be one of"),
    ],
)
def test_bad_grading_and_mix_arguments_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ReasoningGymEnv("chain_sum", size=50, eval_size=4, **options)


def test_a_sign_on_words_says_to_leave_it_out():
    with pytest.raises(ValueError, match="needs numeric answers"):
        mix = [{"share": 1, "answer_sign": "negative"}]
        ReasoningGymEnv("spell_backward", eval_size=4, mix=mix)


def test_the_problems_module_docstring_examples_run():
    results = doctest.testmod(reasoning_gym_problems)
    assert results.attempted > 0 and results.failed == 0
