"""Safe loading: pickled weights refused unless allowed, no remote code unless asked for, and
checkpoint files checked (format, keys, config, shapes) with errors naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import vector_env

from rlhf_agents import PPOAgent, PPOConfig, RLOOAgent
from rlhf_agents.checkpoint import STATE_FILE, CheckpointError, resolve_checkpoint
from rlhf_env.models import build_tiny_gpt2, build_tiny_tokenizer, load_causal_lm
from rlhf_env.models.efficient import add_lora
from rlhf_env.rewards.model import RewardModel, RewardModelError


def test_a_pickled_reward_backbone_is_refused_unless_allowed(backbone_dir, tmp_path):
    pickled = tmp_path / "pickled"
    safe = RewardModel.from_backbone(backbone_dir, device="cpu")
    safe.model.config.save_pretrained(pickled)
    safe.tokenizer.save_pretrained(pickled)
    torch.save(safe.model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin holds pickled weights"):
        RewardModel.from_backbone(pickled, device="cpu")
    allowed = RewardModel.from_backbone(pickled, device="cpu", allow_pickle=True)
    assert torch.equal(allowed.model.transformer.wte.weight, safe.model.transformer.wte.weight)


def test_pickled_lora_adapters_are_refused_unless_allowed(tmp_path):
    tokenizer = build_tiny_tokenizer()
    base = tmp_path / "base"
    build_tiny_gpt2(tokenizer, seed=0).save_pretrained(base)
    policy, _ = add_lora(load_causal_lm(base, device="cpu"), r=2)
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)  # adapters that change the output
    adapters = tmp_path / "adapters"
    policy.save_pretrained(adapters)
    weights = load_file_tensors(adapters / "adapter_model.safetensors")
    (adapters / "adapter_model.safetensors").unlink()
    torch.save(weights, adapters / "adapter_model.bin")
    with pytest.raises(ValueError, match=r"adapter_model\.bin holds pickled weights"):
        load_causal_lm(adapters, device="cpu")
    loaded = load_causal_lm(adapters, device="cpu", allow_pickle=True)
    ids = torch.tensor([[5, 9, 17, 3]])
    with torch.no_grad():
        with_adapters = policy(input_ids=ids).logits
        without = load_causal_lm(base, device="cpu")(input_ids=ids).logits
        # the pickled adapters were read, not skipped: the base model's output moved to theirs
        assert not torch.allclose(with_adapters, without, atol=1e-4)
        torch.testing.assert_close(loaded(input_ids=ids).logits, with_adapters, atol=1e-4, rtol=0)


def load_file_tensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(file))


def test_remote_code_never_runs_unless_trusted(tmp_path):
    """Checkpoints whose config points at their own modelling code (which would leave a marker
    file): one of a known architecture loads the library's own class, one of an unknown
    architecture is refused, asking for trust_remote_code; the code runs in neither case."""
    tokenizer = build_tiny_tokenizer()
    marker = tmp_path / "code-ran"
    folders = {}
    for model_type in ("gpt2", "custom-thing"):
        folder = folders[model_type] = tmp_path / model_type
        build_tiny_gpt2(tokenizer, seed=0).save_pretrained(folder)
        (folder / "modeling_custom.py").write_text(
            f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
            "from transformers import GPT2Config as CustomConfig\n"
            "from transformers import GPT2LMHeadModel as CustomModel\n"
        )
        config = json.loads((folder / "config.json").read_text())
        config["model_type"] = model_type
        config["auto_map"] = {
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomModel",
        }
        (folder / "config.json").write_text(json.dumps(config))
    assert type(load_causal_lm(folders["gpt2"], device="cpu")).__name__ == "GPT2LMHeadModel"
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_causal_lm(folders["custom-thing"], device="cpu")
    assert not marker.exists()


# -- checkpoint files are checked, and errors name the file ------------------------------------


@pytest.fixture
def saved_run(tokenizer, word_start_reward, tmp_path) -> Path:
    env = vector_env(tokenizer, word_start_reward, num_envs=4)
    agent = PPOAgent(env, PPOConfig(minibatch_size=4, progress_bar=False)).learn(1)
    return agent.save(tmp_path / "run")


def edit_state(checkpoint: Path, change) -> Path:
    state = json.loads((checkpoint / STATE_FILE).read_text())
    change(state)
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    return checkpoint / STATE_FILE


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda state: state.update(format=99), "checkpoint format 99"),
        (lambda state: state.pop("kl_controller"), r"incomplete: it lacks \['kl_controller'\]"),
        (lambda state: state["config"].update(epochs=0), "config does not fit.*epochs"),
        (lambda state: state["config"].update(no_such_knob=1), "config does not fit"),
        (lambda state: state.update(agent="RLOOAgent"), "holds a RLOOAgent checkpoint"),
        (lambda state: state["config"].update(kl_target=3.0), "KL controller"),
    ],
)
def test_a_bad_state_file_is_named(saved_run, tokenizer, word_start_reward, change, message):
    state_file = edit_state(saved_run, change)
    env = vector_env(tokenizer, word_start_reward, num_envs=4)
    with pytest.raises(CheckpointError, match=message) as error:
        PPOAgent.load(saved_run, env)
    assert str(state_file) in str(error.value) or "state.json" in str(error.value)


def test_weights_of_another_shape_or_agent_are_refused(saved_run, tokenizer, word_start_reward):
    wider = build_tiny_gpt2(tokenizer, n_embd=32, seed=0)
    with pytest.raises(CheckpointError, match=r"weights\.safetensors.*shape"):
        PPOAgent.load(saved_run, vector_env(tokenizer, word_start_reward, wider, num_envs=4))
    with pytest.raises(CheckpointError, match="load it with that class"):
        RLOOAgent.load(saved_run, vector_env(tokenizer, word_start_reward, num_envs=4))
    assert resolve_checkpoint(saved_run.parent) == saved_run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"std": 0.0}, "std > 0"),
        ({"mean": float("nan")}, "finite"),
        ({"max_length": -3}, "max_length must be a positive integer"),
    ],
)
def test_a_bad_reward_config_is_named(backbone_dir, tmp_path, change, message):
    folder = RewardModel.from_backbone(backbone_dir, device="cpu").save_pretrained(tmp_path / "rm")
    config_file = folder / "reward_config.json"
    config = json.loads(config_file.read_text())
    config.update(change)
    config_file.write_text(json.dumps(config))
    with pytest.raises(RewardModelError, match=message) as error:
        RewardModel.from_pretrained(folder)
    assert "reward_config.json" in str(error.value)


def test_a_truncated_safetensors_file_is_named(tokenizer, tmp_path):
    build_tiny_gpt2(tokenizer).save_pretrained(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # an interrupted copy
    with pytest.raises(ValueError, match=r"model\.safetensors is truncated or corrupt"):
        load_causal_lm(tmp_path / "model", device="cpu")
