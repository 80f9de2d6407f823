"""The ``rlhf-env`` command line: config files, train, eval, bench, and LoRA policy folders."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import save_tiny_reward_model

from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer, load_causal_lm
from rlhf_env.models.efficient import add_lora
from rlhf_pipeline.cli import build_parser, main
from rlhf_pipeline.cli.options import apply_config_file, read_config_file


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny GPT-2 policy with its tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("policy")
    tokenizer = build_tiny_tokenizer()
    build_tiny_gpt2(tokenizer, n_layer=2, n_embd=64, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("This movie was\nI think the acting\n\nThe plot of this film is\nOne of\n")
    return path


def test_config_file_sets_options_and_the_command_line_overrides_it(tmp_path):
    config = tmp_path / "demo.yaml"
    config.write_text("learning-rate: 1e-4\nkl_target: none\nepochs: 3\nprogress_bar: false\n")
    parser = build_parser()
    argv = ["demo", "--config", str(config), "--epochs", "5"]
    args = parser.parse_args(argv)
    args = apply_config_file(parser, args.command_parser, config, argv)
    assert args.learning_rate == pytest.approx(1e-4)  # YAML reads 1e-4 as a string: converted
    assert args.kl_target is None and args.progress_bar is False
    assert args.epochs == 5


def test_json_config_files_and_unknown_options(tmp_path, capsys):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"learning_rate": 0.001, "no_such_option": 1}))
    assert read_config_file(config) == {"learning_rate": 0.001, "no_such_option": 1}
    status = main(["demo", "--smoke", "--config", str(config), "--out", str(tmp_path / "x")])
    assert status == 1
    assert "unknown option(s) no_such_option" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{learning_rate: ")
    assert main(["demo", "--config", str(broken)]) == 1
    assert "broken.json is not valid JSON" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reward_dir(backbone_dir, tmp_path_factory):
    """A tiny reward-model folder for ``--reward``: it scores every response differently."""
    return save_tiny_reward_model(backbone_dir, tmp_path_factory.mktemp("reward-model"))


def test_train_then_eval_a_policy_from_the_command_line(
    model_dir, prompts_file, reward_dir, tmp_path, capsys
):
    out = tmp_path / "run"
    status = main(
        ["train", "--agent", "rloo", "--policy", str(model_dir), "--prompts", str(prompts_file),
         "--out", str(out), "--total-timesteps", "16", "--num-envs", "4", "--group-size", "2",
         "--max-new-tokens", "4", "--reward", str(reward_dir), "--learning-rate", "1e-3",
         "--minibatch-size", "4", "--no-progress-bar"]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    history = json.loads((out / "history.json").read_text())
    assert history[-1]["timesteps"] >= 16
    # The responses scored differently, so the advantages were not all 0: the gradient norm
    # measured 0.07 (1 and 2 threads); with every score equal it is 8e-8 (KL rounding noise),
    # which AdamW still turns into weight moves of 2e-3, so the moves alone prove nothing.
    assert all(record["train/grad_norm"] > 0.01 for record in history)
    assert (out / "rl" / "latest").is_file() and (out / "policy" / "model.safetensors").is_file()
    trained = load_causal_lm(out / "policy", device="cpu")
    initial = load_causal_lm(model_dir, device="cpu")
    pairs = zip(trained.state_dict().values(), initial.state_dict().values(), strict=True)
    assert max(float((after - before).abs().max()) for after, before in pairs) > 1e-4

    results = tmp_path / "eval.json"
    status = main(
        ["eval", "--policy", str(out / "policy"), "--reference", str(model_dir),
         "--prompts", str(prompts_file), "--num-prompts", "4", "--prompt-offset", "0",
         "--max-new-tokens", "4", "--reward", str(reward_dir), "--out", str(results)]
    )  # fmt: skip
    assert status == 0, capsys.readouterr().err
    evaluation = json.loads(results.read_text())
    assert evaluation["summary"]["responses"] == 4
    assert [s["prompt"] for s in evaluation["samples"]] == [
        "This movie was", "I think the acting", "The plot of this film is", "One of",
    ]  # fmt: skip
    assert evaluation["summary"]["kl"] != 0.0  # measured against the untrained model
    assert len({sample["learned"] for sample in evaluation["samples"]}) == 4  # scores differ


def test_train_rejects_options_of_another_agent(model_dir, prompts_file, tmp_path, capsys):
    status = main(
        ["train", "--agent", "ppo", "--policy", str(model_dir), "--prompts", str(prompts_file),
         "--out", str(tmp_path / "run"), "--reward", "vader", "--group-size", "4"]
    )  # fmt: skip
    assert status == 1
    assert "--group-size do(es) not apply to --agent ppo" in capsys.readouterr().err


def test_a_lora_adapter_folder_loads_as_the_merged_policy(model_dir, tmp_path):
    policy, _ = add_lora(load_causal_lm(model_dir, device="cpu"), r=4)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # make the adapters change the output
    policy.save_pretrained(tmp_path / "adapters")
    merged = load_causal_lm(tmp_path / "adapters", device="cpu")
    ids = torch.tensor([[5, 9, 17, 3]])
    with torch.no_grad():
        expected = policy(input_ids=ids).logits
        plain = load_causal_lm(model_dir, device="cpu")(input_ids=ids).logits
    assert not torch.allclose(expected, plain, atol=1e-4)
    assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-4)


def test_bench_runs_a_benchmark_script(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "vector_env_memory", "--help"])
    assert exit_info.value.code == 0
    assert "usage" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["demo", "train", "eval", "train-rm", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: rlhf-env" in capsys.readouterr().out


@pytest.mark.long
def test_demo_smoke_runs_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RLHF_ENV_TASK_CACHE", str(tmp_path / "task-cache"))
    out = tmp_path / "demo"
    assert main(["demo", "--smoke", "--out", str(out), "--no-progress-bar"]) == 0
    printed = capsys.readouterr().out
    assert "[1-3/6] building rlhf_env/PositiveReview-v0" in printed
    assert "[5/6] PPO on full" in printed and f"report: {out / 'report.md'}" in printed
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["policy"] == config["judge_backbone"] == config["reward_backbone"] == "tiny"
