"""The task registry and the PositiveReview and Harmless tasks (Arithmetic: test_task_arithmetic).

Fast tests build each task's tiny variant (``smoke_arguments``: a tiny random policy, tiny
backbones, a few prompts) into a temporary task cache; the slow ones build the real tasks on
the packaged SmolLM2 and MiniLM (``make test-slow``)."""

from __future__ import annotations

import gymnasium as gym
import learning
import numpy as np
import pytest
from helpers import check_env_strictly

from rlhf_env.data.hh import HH_HARMLESS_PAIRS, dialogue_messages, hh_harmless_pairs
from rlhf_env.data.preferences import load_pairs
from rlhf_env.data.reviews import movie_reviews
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer
from rlhf_env.rewards.probe import ProbeRewardModel
from rlhf_env.rewards.training import split_pairs
from rlhf_env.tasks import (
    TASKS,
    Task,
    TaskSpec,
    list_tasks,
    make_task_vector_env,
    register_task,
    smoke_arguments,
    task_options,
    task_spec,
)
from rlhf_env.tasks.cache import cache_root, policy_fingerprint
from rlhf_env.tasks.harmless import RawConversationReward
from rlhf_env.tasks.positive_review import VERDICT_WORDS, FluencyWeighted, judge_texts
from rlhf_env.text_metrics import response_perplexity

TASK_NAMES = ("PositiveReview", "Harmless")


@pytest.fixture(autouse=True)
def task_cache(tmp_path_factory, monkeypatch):
    """Every test builds into one temporary task cache (shared, so parts are built once)."""
    root = tmp_path_factory.getbasetemp() / "task-cache"
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(root))
    return root


def test_registry_lists_every_task_with_a_description_and_a_gym_id():
    ids = dict(list_tasks())
    for name in (*TASK_NAMES, "Arithmetic", "Dialogue"):
        assert ids.get(f"rlhf_env/{name}-v0")
        assert f"rlhf_env/{name}-v0" in gym.registry
    assert task_spec("rlhf_env/Harmless-v0") is task_spec("Harmless") is TASKS["Harmless"]
    with pytest.raises(KeyError, match=r"unknown task 'Nope'.*Harmless"):
        task_spec("Nope")


def test_unknown_option_names_the_task_and_env_options():
    with pytest.raises(TypeError, match=r"unknown option.*colour.*Harmless.*eval_prompts"):
        gym.make("rlhf_env/Harmless-v0", **smoke_arguments("Harmless"), colour="blue")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tiny_variant_builds_through_gym_make_and_passes_the_env_checker(name):
    env = gym.make(f"rlhf_env/{name}-v0", **smoke_arguments(name), progress=False)
    check_env_strictly(env.unwrapped, skip_render_check=True)
    task = env.unwrapped.task
    assert isinstance(task, Task) and task.name == name
    assert env.unwrapped.reference is task.reference or task.reference is None
    # an episode ends with the task's reward, and every gold metric scores it
    _, info = env.reset(seed=0)
    prompt, done = info["prompt"], False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        done = terminated or truncated
    learned = task.reward_fn([prompt], [info["response"]])[0]
    assert info["score"] == pytest.approx(learned, abs=1e-5)
    gold = task.gold_scores([prompt], [info["response"]])
    assert list(gold) == list(task.gold) and all(np.isfinite(v[0]) for v in gold.values())


@pytest.mark.parametrize("name", TASK_NAMES)
def test_vector_env_of_a_task_and_overrides(name):
    tokenizer = build_tiny_tokenizer()
    policy = build_tiny_gpt2(tokenizer, seed=3)
    arguments = smoke_arguments(name) | {"policy": policy, "tokenizer": tokenizer}
    arguments["max_new_tokens"] = 4
    env = gym.make_vec(f"rlhf_env/{name}-v0", num_envs=3, **arguments, progress=False)
    assert env.num_envs == 3 and env.unwrapped.max_new_tokens == 4
    assert env.unwrapped.policy is policy and env.unwrapped.task.name == name
    # a user's reward replaces the task's; the task's gold stays for evaluation
    mine = gym.make(
        f"rlhf_env/{name}-v0", **arguments, reward_fn=lambda p, r: [7.0] * len(r), progress=False
    )
    mine.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, info = mine.step(mine.action_space.sample())
        done = terminated or truncated
    assert info["score"] == 7.0 and mine.unwrapped.task.gold


def test_heavy_parts_are_built_once_and_keyed_by_settings(task_cache):
    arguments = smoke_arguments("PositiveReview") | {"progress": False}
    first = make_task_vector_env("PositiveReview", num_envs=2, **arguments).task
    folders = {p.name: p.stat().st_mtime_ns for p in (task_cache / "PositiveReview").iterdir()}
    again = make_task_vector_env("PositiveReview", num_envs=2, **arguments).task
    assert {p.name: p.stat().st_mtime_ns for p in (task_cache / "PositiveReview").iterdir()} == (
        folders
    )  # nothing rebuilt
    assert again.details["judge"]["folder"] == first.details["judge"]["folder"]
    other = make_task_vector_env("PositiveReview", num_envs=2, **arguments | {"seed": 1}).task
    assert other.details["judge"]["folder"] != first.details["judge"]["folder"]
    # More training prompts move the preference prompts (they follow in the review file): the
    # judge is reused, the reward model learned from the policy's answers to them is not.
    longer = arguments | {"train_prompts": arguments["train_prompts"] + 4}
    moved = make_task_vector_env("PositiveReview", num_envs=2, **longer).task
    assert moved.details["judge"]["folder"] == first.details["judge"]["folder"]
    assert moved.details["reward_model"]["folder"] != first.details["reward_model"]["folder"]
    assert cache_root() == task_cache
    assert not list((task_cache / "PositiveReview").glob("*.partial"))


def test_policy_fingerprint_tells_weights_apart():
    tokenizer = build_tiny_tokenizer()
    a, b = build_tiny_gpt2(tokenizer, seed=0), build_tiny_gpt2(tokenizer, seed=1)
    assert policy_fingerprint(a) == policy_fingerprint(build_tiny_gpt2(tokenizer, seed=0))
    assert policy_fingerprint(a) != policy_fingerprint(b)


def test_positive_review_splits_are_disjoint_and_the_judge_reads_other_reviews():
    task = make_task_vector_env(
        "PositiveReview", num_envs=2, **smoke_arguments("PositiveReview"), progress=False
    ).task
    assert not set(task.train_prompts) & set(task.eval_prompts)
    positive, negative = judge_texts(20, 4)
    assert len(positive) == len(negative) == 24 and not set(positive) & set(negative)
    openings = {" ".join(text.split()[:8]) for text in list(movie_reviews("imdb"))[:200]}
    assert not openings & {" ".join(t.split()[:8]) for t in positive + negative}
    assert all(len(t.split()) <= VERDICT_WORDS for t in positive + negative)
    assert {"judge", "judge_fluent", "vader"} == set(task.gold)
    # The recorded accuracies are the judge's and VADER's on the held-out texts (32 a label).
    details = task.details["judge"]
    held_positive, held_negative = (texts[32:] for texts in judge_texts(32, 32))
    truth = np.array([True] * 32 + [False] * 32)
    for gold, boundary, key in (
        (task.gold["judge"], 0.5, "held_out_accuracy"),
        (task.gold["vader"], 0.0, "vader_held_out_accuracy"),
    ):
        scores = np.asarray(gold([""] * 64, held_positive + held_negative))
        assert details[key] == np.mean((scores > boundary) == truth), key
    assert details["held_out_texts"] == 64
    assert details["vader_held_out_accuracy"] > 0.6  # a real lexicon on real reviews: 0.70


def test_fluency_weighted_gold_scales_by_perplexity(tokenizer, gpt2):
    prompts, responses = ["The film was"] * 2, [" good and warm.", " the the the the the"]
    perplexity = response_perplexity(gpt2, tokenizer, prompts, responses).per_response
    ppl_0 = float(perplexity.min())
    gold = FluencyWeighted(lambda p, r: [0.8] * len(r), gpt2, tokenizer, ppl_0)
    expected = [0.8 * min(1.0, ppl_0 / p) for p in perplexity]
    np.testing.assert_allclose(gold(prompts, responses), expected, rtol=1e-6)
    assert gold(["The film was"], [""]) == [0.0]  # nothing to judge


def test_hh_data_ships_with_the_package_and_parses_into_turns():
    pairs = hh_harmless_pairs()
    assert len(pairs) == 1800 and HH_HARMLESS_PAIRS.is_file()
    assert load_pairs(HH_HARMLESS_PAIRS) == pairs  # rlhf-env train-rm --pairs reads it too
    messages = dialogue_messages(pairs[3].prompt)
    assert [m["role"] for m in messages][::2] == ["user"] * ((len(messages) + 1) // 2)
    assert messages[-1]["role"] == "user"
    with pytest.raises(ValueError, match="no leading 'Human:'"):
        dialogue_messages("Assistant: hello")


def test_harmless_scores_the_raw_conversation_and_holds_out_the_reward_models_split():
    task = make_task_vector_env(
        "Harmless", num_envs=2, **smoke_arguments("Harmless"), progress=False
    ).task
    options = task_options("Harmless") | smoke_arguments("Harmless")
    pairs = hh_harmless_pairs()[: options["max_pairs"]]
    _, held_out = split_pairs(pairs, options["eval_fraction"], options["seed"])
    reward = task.reward_fn
    assert isinstance(reward, RawConversationReward)
    raw_held_out = {reward.conversations[p] for p in task.eval_prompts}
    assert raw_held_out <= {pair.prompt for pair in held_out}  # RL evaluates unseen prompts
    assert not set(task.train_prompts) & set(task.eval_prompts)

    seen = {}

    class Recorder:
        tokenizer = reward.reward_model.tokenizer

        def __call__(self, prompts, responses):
            seen.update(prompts=prompts, responses=responses)
            return [0.0] * len(responses)

    RawConversationReward(Recorder(), reward.conversations)(task.eval_prompts[:1], ["  Sure. "])
    assert seen == {
        "prompts": [reward.conversations[task.eval_prompts[0]]],
        "responses": [" Sure."],
    }
    with pytest.raises(KeyError, match="not one of this task's conversations"):
        reward(["something else"], ["x"])


def test_harmless_gold_is_a_probe_apart_from_the_training_reward_on_the_same_split():
    """The gold is a linear probe on a frozen LM, fitted on the reward model's training pairs
    and judged on its held-out ones; it reads the same raw conversations and is another
    function of them than the training reward (Gao et al., 2022)."""
    task = make_task_vector_env(
        "Harmless", num_envs=2, **smoke_arguments("Harmless"), progress=False
    ).task
    assert task.gold_name == "gold_model"
    gold = task.gold["gold_model"]
    assert isinstance(gold, RawConversationReward) and isinstance(
        gold.reward_model, ProbeRewardModel
    )
    assert gold.conversations == task.reward_fn.conversations
    details = task.details
    fitted, proxy = details["gold_model"], details["reward_model"]
    assert (fitted["train_pairs"], fitted["eval_pairs"]) == (
        proxy["train_pairs"], proxy["eval_pairs"],
    )  # fmt: skip
    assert 0 <= fitted["eval_accuracy"] <= 1 and fitted["folder"] != proxy["folder"]
    prompts, responses = task.eval_prompts[:2] * 2, ["Sure.", "Sure.", "No way!", "No way!"]
    gold_scores, proxy_scores = gold(prompts, responses), task.reward_fn(prompts, responses)
    assert np.isfinite(gold_scores).all()
    assert not np.allclose(gold_scores, proxy_scores, atol=1e-3)


def test_a_custom_task_registers_and_builds():
    def build(context, size: int = 3):
        prompts = [f"Prompt {i}:" for i in range(size)]
        zero = lambda p, r: [0.0] * len(r)  # noqa: E731
        return Task("Custom", prompts, prompts[:1], zero, {"zero": zero})

    register_task(TaskSpec("CustomTest", "a test task", build))
    tokenizer = build_tiny_tokenizer()
    env = gym.make(
        "rlhf_env/CustomTest-v0", policy=build_tiny_gpt2(tokenizer), tokenizer=tokenizer, size=5
    )
    assert len(env.unwrapped.task.train_prompts) == 5
    del TASKS["CustomTest"]


# -- RL raises the held-out gold of a tiny policy -----------------------------------------------


def test_the_gains_standard_error_takes_the_prompt_as_the_unit():
    from types import SimpleNamespace

    def evaluation(prompts, values):
        rollout = SimpleNamespace(prompts=prompts)
        return SimpleNamespace(rollout=rollout, per_response={"gold": np.array(values)})

    prompts = ["a", "b", "c", "a", "b", "c"]  # 3 prompts x 2 samples, in evaluate's order
    before = evaluation(prompts, [0.0, 0.0, 1.0, 1.0, 0.0, 1.0])  # means a 0.5, b 0, c 1
    after = evaluation(prompts, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # means a 1, b 0.5, c 0.5
    differences = np.array([0.5, 0.5, -0.5])
    expected = differences.std(ddof=1) / np.sqrt(3)
    assert learning.paired_prompt_standard_error(before, after) == pytest.approx(expected)
    with pytest.raises(ValueError, match="same prompts"):
        learning.paired_prompt_standard_error(before, evaluation(["a", "b"] * 3, [0.0] * 6))


def assert_gold_rose(figures, threshold: float) -> None:
    """The held-out gold rose by ``threshold`` and by more than three standard errors of the
    gain, the prompt as the unit (``learning.paired_prompt_standard_error``: the 8 samples of
    a prompt share it, so they are not independent)."""
    before, after = figures["before"]["gold"], figures["after"]["gold"]
    noise = figures["noise"]["gold"]
    assert after - before > max(threshold, 3 * noise), (before, after, noise)


def test_rloo_on_the_learned_reward_raises_the_held_out_judge_of_a_tiny_policy(learning_threads):
    """PositiveReview's whole recipe on tiny models, through ``gym.make_vec``: the judge and the
    proxy reward model are built (the proxy from pairs of the policy's own samples that the
    judge labelled), RLOO trains on the proxy alone (4,000 tokens, learning rate 2e-3, KL
    coefficient 0.1), and the judge (the gold, which training never sees) on 16 held-out
    prompts x 8 samples must rise by the threshold and by three standard errors
    (``learning.positive_review_judge``). The tiny judge reads bytes and is no sentiment judge
    (about chance on its held-out reviews), but it is a fixed function of the text that the
    proxy must learn from its labels: the variant samples 64 preference prompts x 4
    continuations (348 training pairs; smoke options: 7) so that the proxy agrees with the
    judge on 81% of its held-out pairs. The thresholds are the lowest gain of
    ``scripts/learning_sweep.py`` minus three standard deviations of its gains (seeds 0-4 x 1
    and 2 threads, 10 runs; 2-core machine shared with other jobs, 2026-12-06):

    ===============  ========================  =====  =========  ================
    figure           gain min / mean / max     sigma  threshold  seed 0, 1 thread
    ===============  ========================  =====  =========  ================
    judge (gold)     0.222 / 0.277 / 0.356     0.040  0.10       0.258 -> 0.551
    proxy (learned)  1.414 / 1.704 / 2.167     0.223  0.74       -0.082 -> 1.531
    ===============  ========================  =====  =========  ================

    Standard errors of the judge's gain 0.021-0.040; KL 6.8-11.1 nats. This test runs seed 0
    at one thread: about 20 s on that machine, the judge and proxy built included."""
    figures = learning.positive_review_judge(seed=0, threads=learning_threads)
    proxy = figures["details"]["reward_model"]
    assert proxy["train_pairs"] > 300 and proxy["eval_accuracy"][-1] > 0.65, proxy
    assert figures["gold_name"] == "judge"
    # the env's reward is the proxy (it rises), the judge only measures
    learned = figures["before"]["learned"], figures["after"]["learned"]
    assert learned[1] > learned[0] + 0.74, learned
    assert_gold_rose(figures, threshold=0.10)


def test_rloo_raises_the_held_out_human_preference_reward_of_a_tiny_policy(learning_threads):
    """Harmless on tiny models, through ``gym.make_vec``: a reward model with a tiny backbone is
    trained on 320 of the packaged HH-RLHF pairs; RLOO trains a tiny policy on it over the
    training conversations (6,000 tokens, learning rate 6e-3 decaying linearly to 0, KL
    coefficient 0.01), and its score on the 30 conversations held out from both (8 samples
    each) must rise by the threshold and by three standard errors
    (``learning.harmless_reward``). The tiny reward model is about chance on held-out human
    pairs, and so is the tiny gold (a linear probe on a tiny random GPT-2), so this checks the
    task's plumbing (raw conversations behind templated prompts, the held-out split, a gold
    that is not the training reward), not what either learned from people. The threshold,
    0.66, is the lowest gain of ``scripts/learning_sweep.py`` minus three standard deviations
    of its gains (seeds 0-4 x 1 and 2 threads, 10 runs; 2-core machine shared with other jobs,
    2026-12-06): from 1.455, gains 1.145 / 1.408 / 1.705 (min / mean / max), sigma 0.159,
    standard errors of the gain 0.083-0.113, KL 27-32 nats (the weak penalty lets the policy
    settle on what the reward model likes); seed 0 at one thread (this test) reached 2.914.
    (Those figures were the gold's when the task's gold was its training reward model; they
    are the learned score's now.) About 40 s on that machine, the models' training included."""
    figures = learning.harmless_reward(seed=0, threads=learning_threads)
    details = figures["details"]
    assert details["held_out_conversations"] >= 24, details
    assert figures["gold_name"] == "gold_model"
    assert details["gold_model"]["eval_pairs"] == details["reward_model"]["eval_pairs"] > 0
    learned = figures["before"]["learned"], figures["after"]["learned"]
    assert learned[1] - learned[0] > max(0.66, 3 * figures["noise"]["learned"]), figures
    assert np.isfinite([figures["before"]["gold"], figures["after"]["gold"]]).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", TASK_NAMES)
def test_real_task_builds_with_no_arguments_offline(name, monkeypatch):
    monkeypatch.delenv("RLHF_ENV_TASK_CACHE")  # the real parts: built once per machine
    env = gym.make(f"rlhf_env/{name}-v0")
    check_env_strictly(env.unwrapped, skip_render_check=True)
    details = env.unwrapped.task.details
    if name == "PositiveReview":
        assert details["judge"]["held_out_accuracy"] > 0.55
    elif name == "Harmless":  # the gold is the stronger judge of human pairs (issue 28)
        assert details["gold_model"]["eval_accuracy"] >= 0.62
        assert details["gold_model"]["eval_accuracy"] > details["reward_model"]["eval_accuracy"]
    else:
        assert details["reward_model"]["eval_accuracy"] > 0.55


#: Issue 18's Harmless run (``benchmarks/RESULTS.md``), as suite settings: PPO on the top 6 of
#: SmolLM2's 30 blocks, conversations of up to 128 tokens, responses of 24.
HARMLESS_PPO_RUN = {
    "agents": ("ppo",), "seeds": (0,), "timesteps": 4096, "eval_points": (0.0, 1.0),
    "curve_prompts": 64, "eval_prompts": 64, "eval_samples": 2, "num_envs": 16,
    "learning_rate": 2e-4, "epochs": 2, "minibatch_size": 8, "training_setup": "frozen:24",
    "options": {"max_prompt_tokens": 128, "max_new_tokens": 24},
}  # fmt: skip


@pytest.mark.slow
def test_ppo_raises_the_held_out_human_preference_reward_and_stays_fluent(tmp_path, monkeypatch):
    """PPO on the real Harmless task raises the reward model's score on 64 held-out
    conversations (2 samples each) by more than twice the standard error of the difference
    (the initial evaluation's taken equal to the final one's: the curve keeps none), and the
    responses' perplexity under the frozen reference does not grow by more than 20%.
    Measured with these settings (``benchmarks/suite.py``, one thread, 20 min of which 11
    training): 0.387 -> 0.617, standard error 0.047; perplexity 18.0 -> 12.3; distinct-2
    0.91 -> 0.74."""
    from rlhf_pipeline.suite import run_suite

    monkeypatch.delenv("RLHF_ENV_TASK_CACHE")  # the real reward model: built once per machine
    result = run_suite(tasks=["Harmless"], out=tmp_path / "suite.json", **HARMLESS_PPO_RUN)
    (run,) = result.runs
    before, after = run.curve[0]["metrics"], run.final
    assert before["episodes"] == after["episodes"] == 128  # the same prompts, twice each
    gain = after["gold"] - before["gold"]
    assert gain > 2 * np.sqrt(2) * run.sem["gold"], (before["gold"], after["gold"])
    assert after["perplexity"] < 1.2 * before["perplexity"]
