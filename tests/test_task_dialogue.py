"""``rlhf_env/Dialogue-v0``: 3-turn HH conversations, the human turns inserted by the env, every
assistant turn scored by the Harmless reward model."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from helpers import check_env_strictly
from test_tasks import task_cache  # noqa: F401 (autouse: every test builds into one temporary cache)

from rlhf_env.dialogue import IncrementalChatTemplate, transcript
from rlhf_env.tasks import make_task_vector_env, smoke_arguments, task_spec


def test_tiny_variant_plays_hh_conversations_turn_by_turn_and_scores_every_turn():
    env = gym.make("rlhf_env/Dialogue-v0", **smoke_arguments("Dialogue"), progress=False)
    check_env_strictly(env.unwrapped, skip_render_check=True)
    task = env.unwrapped.task
    assert task_spec("Dialogue").chat_template
    script = task.eval_prompts[0]
    assert len(script.user_turns) == 2  # the smoke variant's max_turns
    end = IncrementalChatTemplate(env.unwrapped.tokenizer).end_of_turn_id
    filler = env.unwrapped.tokenizer(" ok", add_special_tokens=False)["input_ids"][0]
    env.reset(options={"prompt": script})
    turn_scores, step = [], 0
    done = False
    while not done:
        action = end if step % 3 == 2 else filler
        _, _, terminated, truncated, info = env.step(action)
        step += 1
        done = terminated or truncated
        if "turn_score" in info:
            turn_scores.append(info["turn_score"])
    assert terminated and len(turn_scores) == 2
    messages = info["conversation"]
    assert [m["content"] for m in messages if m["role"] == "user"] == list(script.user_turns)
    # Each turn's score is the reward model's on the transcript before it and the turn.
    for turn, score in enumerate(turn_scores):
        at = [k for k, m in enumerate(messages) if m["role"] == "assistant"][turn]
        expected = task.reward_fn([transcript(messages[:at])], [messages[at]["content"]])[0]
        assert score == pytest.approx(expected, abs=1e-5)
    assert info["score"] == pytest.approx(sum(turn_scores), abs=1e-6)


def test_held_out_conversations_are_the_reward_models_held_out_split():
    task = make_task_vector_env("Dialogue", num_envs=2, **smoke_arguments("Dialogue")).task
    train = {s.user_turns for s in task.train_prompts}
    held_out = {s.user_turns for s in task.eval_prompts}
    assert held_out and not train & held_out
    assert task.details["held_out_conversations"] >= len(task.eval_prompts)
    assert np.isfinite(task.details["reward_model"]["eval_accuracy"])


def test_dialogue_gold_is_the_harmless_gold_read_on_transcripts():
    """Dialogue's gold (and so its per-turn gold) is the Harmless task's gold probe, the same
    cached fit, read on the transcript so far; not the training reward model."""
    from rlhf_env.rewards.probe import ProbeRewardModel

    options = smoke_arguments("Dialogue")
    task = make_task_vector_env("Dialogue", num_envs=2, **options).task
    same_pairs = smoke_arguments("Harmless") | {"max_pairs": options["max_pairs"]}
    harmless = make_task_vector_env("Harmless", num_envs=2, **same_pairs).task
    assert task.gold_name == "gold_model"
    assert task.details["gold_model"]["folder"] == harmless.details["gold_model"]["folder"]
    gold = task.gold["gold_model"]
    assert isinstance(gold.reward_model, ProbeRewardModel)
    transcript = "\n\nHuman: Can you help me?\n\nAssistant:"
    assert gold([transcript], ["Yes."]) == pytest.approx(
        gold.reward_model([transcript], [" Yes."]), abs=1e-6
    )
    assert gold([transcript], ["Yes."]) != pytest.approx(task.reward_fn([transcript], ["Yes."]))


@pytest.mark.slow
def test_real_task_builds_with_no_arguments_offline(monkeypatch):
    monkeypatch.delenv("RLHF_ENV_TASK_CACHE")  # the Harmless reward model: built once per machine
    env = gym.make("rlhf_env/Dialogue-v0")
    check_env_strictly(env.unwrapped, skip_render_check=True)
    details = env.unwrapped.task.details
    assert details["reward_model"]["eval_accuracy"] > 0.55
    assert details["gold_model"]["eval_accuracy"] >= 0.62
    assert details["train_conversations"] > 500 and details["held_out_conversations"] > 40


#: Issue 19's must-show run (``benchmarks/RESULTS.md``), as suite settings: PPO on the top 6 of
#: SmolLM2's 30 blocks, 3-turn HH conversations of 32-token turns (the task's defaults).
DIALOGUE_PPO_RUN = {
    "agents": ("ppo",), "seeds": (0,), "timesteps": 4096, "eval_points": (0.0, 1.0),
    "curve_prompts": 64, "eval_prompts": 64, "num_envs": 16, "learning_rate": 2e-4,
    "epochs": 2, "minibatch_size": 8, "training_setup": "frozen:24",
}  # fmt: skip


@pytest.mark.slow
def test_ppo_on_three_turn_conversations_reports_every_turns_score(tmp_path, monkeypatch):
    """PPO on the real Dialogue task: 64 held-out conversations play all three turns before and
    after training, each turn's reward-model score is reported both times, and the learned
    reward (the sum over the turns) rises. Figures of this run in ``benchmarks/RESULTS.md``."""
    from rlhf_pipeline.suite import run_suite

    monkeypatch.delenv("RLHF_ENV_TASK_CACHE")  # the Harmless reward model: built once per machine
    result = run_suite(tasks=["Dialogue"], out=tmp_path / "suite.json", **DIALOGUE_PPO_RUN)
    (run,) = result.runs
    before, after = run.curve[0]["metrics"], run.final
    assert before["episodes"] == after["episodes"] == 64
    assert before["turns"] == after["turns"] == 3.0
    for turn in (1, 2, 3):
        assert np.isfinite(before[f"turn_score/{turn}"]) and np.isfinite(
            after[f"turn_score/{turn}"]
        )
    assert after["learned"] > before["learned"] and after["kl"] > 0


@pytest.mark.parametrize("wrapper", ["Dialogue", "Harmless"])
def test_the_reward_model_reads_the_latest_turns_of_a_transcript_over_its_length(
    backbone_dir, wrapper
):
    """A transcript longer than the reward model's ``max_length`` loses its start, never its
    end: two that differ only in their first turn (cut away) score alike, one whose last user
    turn differs does not. The raw scores of the tiny random head differ by about 1e-3."""
    from rlhf_env.rewards.model import RewardModel
    from rlhf_env.tasks.dialogue import TranscriptReward
    from rlhf_env.tasks.harmless import RawConversationReward

    # 56 tokens of latest turns and a 5-token reply: whatever is kept of 24 lies in the latest.
    latest = (
        "\n\nHuman: The plot was great. The acting was great.\n\nAssistant: The music was "
        "great.\n\nHuman: The ending?\n\nAssistant:"
    )
    transcripts = [
        "\n\nHuman: The film was awful." + latest,
        "\n\nHuman: This movie was great, really great." + latest,
        "\n\nHuman: The film was awful." + latest.replace("The ending?", "The music?"),
    ]
    reward_model = RewardModel.from_backbone(backbone_dir, device="cpu", max_length=24)
    if wrapper == "Dialogue":
        reward = TranscriptReward(reward_model)
        scores = reward(transcripts, ["The ending was great."] * 3)
    else:  # the Harmless task maps its prompts to the raw HH transcripts
        reward = RawConversationReward(reward_model, {str(i): t for i, t in enumerate(transcripts)})
        scores = reward(["0", "1", "2"], ["The ending was great."] * 3)
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
    assert abs(scores[0] - scores[2]) > 1e-4
