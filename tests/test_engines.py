"""The per-token engines against full recomputation, for every supported architecture.

Each test drives an engine as the environments do (staggered resets, rows that stop, contexts
that fill the static engine's slots, dialogue turns appended to some rows) and checks every
logit and log-prob it reports against a forward of the whole context with no cache.
Tolerance: 1e-5 absolute, float32.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest
import torch
from helpers import forward_shapes, frozen_pair
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from rlhf_env.engine import (
    DynamicEngine,
    PrefixCache,
    StaticEngine,
    UnsupportedModelError,
    batch_bucket,
    make_engine,
)
from rlhf_env.kl import kl_and_logprobs
from rlhf_env.models.efficient import add_lora, decoder_layers, freeze_lower_layers
from rlhf_env.models.tiny import TINY_ARCHITECTURES, build_tiny_causal_lm
from rlhf_env.models.trunk import shared_trunk_depth

TOLERANCE = dict(atol=1e-5, rtol=0)
NUM_SLOTS = 12  # short, so that 40 steps fill the static engine's slots again and again
#: CPU always; CUDA too where there is one (the GPU check runs these tests there). CUDA's
#: float32 kernels sum in other orders, so its tolerance is 1e-4.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _tolerance(device: str) -> dict[str, float]:
    return TOLERANCE if device == "cpu" else dict(atol=1e-4, rtol=0)


def _left_pad(rows: list[list[int]], pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@torch.no_grad()
def _full_logits(model: torch.nn.Module, contexts: list[list[int]]) -> torch.Tensor:
    """Next-token logits ``(k, V)`` of each context, from one uncached forward each."""
    device = next(model.parameters()).device
    return torch.stack(
        [model(torch.tensor([c], device=device)).logits[0, -1].float() for c in contexts]
    )


@torch.no_grad()
def _right_padded_logits(model: torch.nn.Module, contexts: list[list[int]]) -> torch.Tensor:
    """:func:`_full_logits` in one uncached forward: right padding (never attended to by the
    causal mask) and each row's logits read at its last token."""
    device = next(model.parameters()).device
    ids = torch.tensor([c + [c[-1]] * (max(map(len, contexts)) - len(c)) for c in contexts])
    logits = model(ids.to(device)).logits.float()  # (k, T, V)
    return logits[torch.arange(len(contexts)), torch.tensor([len(c) - 1 for c in contexts])]


def _build(
    kind: str, policy, reference, rows: int, estimator: str = "k1", slots=NUM_SLOTS, **kwargs
):
    if kind == "static":
        return StaticEngine(policy, reference, rows, slots, estimator, **kwargs)
    return DynamicEngine(policy, reference, rows, estimator, **kwargs)


def _prompt(rng: np.random.Generator) -> list[int]:
    return rng.integers(5, 380, size=int(rng.integers(1, 7))).tolist()


def _drive(
    engine, policy, reference, steps: int, seed: int = 0, estimator: str = "k1", prompt=_prompt
) -> int:
    """Step ``engine`` as an environment would, checking it against full recomputation after
    every start and step (new contexts from ``prompt(rng)``); returns the number of row
    starts after the first."""
    tolerance = _tolerance(engine.device.type)
    rng = np.random.default_rng(seed)
    n = engine.num_rows
    contexts = [prompt(rng) for _ in range(n)]
    engine.start(np.arange(n), *_left_pad(contexts))
    restarts = 0
    for _ in range(steps):
        expected = {
            "policy": _full_logits(policy, contexts),
            "reference": _full_logits(reference, contexts),
        }
        torch.testing.assert_close(engine.policy_logits, expected["policy"], **tolerance)
        torch.testing.assert_close(engine.reference_logits, expected["reference"], **tolerance)
        tokens = rng.integers(5, 380, size=n)
        # Rows stop (as episodes end) at random, and always before the context fills the
        # slots (the environments' invariant): the stopped rows restart on new prompts.
        full = np.array([len(c) >= NUM_SLOTS - 2 for c in contexts])
        advance = ~full & (rng.random(n) > 0.2)
        stats = engine.step(tokens, advance)
        want = kl_and_logprobs(
            estimator, expected["policy"], expected["reference"],
            torch.as_tensor(tokens, device=engine.device),
        )  # fmt: skip
        np.testing.assert_allclose(stats, want.double().cpu().numpy(), **tolerance)
        for row in np.flatnonzero(advance):
            contexts[row].append(int(tokens[row]))
        stopped = np.flatnonzero(~advance)
        if stopped.size:
            new = [prompt(rng) for _ in stopped]
            engine.start(stopped, *_left_pad(new))
            for row, context in zip(stopped, new, strict=True):
                contexts[row] = context
            restarts += stopped.size
    return restarts


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_engine_matches_full_recomputation(tokenizer, architecture, kind, device):
    """Staggered restarts, contexts up to the static engine's last slot, sliding windows of 5
    tokens crossed by every longer context."""
    policy = build_tiny_causal_lm(architecture, tokenizer, seed=0).to(device)
    reference = build_tiny_causal_lm(architecture, tokenizer, seed=1).to(device)
    engine = _build(kind, policy, reference, rows=3)
    restarts = _drive(engine, policy, reference, steps=40)
    assert restarts >= 10
    if kind == "static":
        assert engine.capacity == 4  # 3 rows padded to the bucket of 4


@pytest.mark.parametrize("estimator", ["k1", "k3", "full"])
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_engine_reports_every_kl_estimator(tokenizer, estimator, kind):
    policy = build_tiny_causal_lm("llama", tokenizer, seed=0)
    reference = build_tiny_causal_lm("llama", tokenizer, seed=1)
    engine = _build(kind, policy, reference, rows=2, estimator=estimator)
    _drive(engine, policy, reference, steps=12, estimator=estimator)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_reference_that_is_the_policy_gives_zero_kl(tokenizer, kind):
    policy = build_tiny_causal_lm("llama", tokenizer)
    engine = _build(kind, policy, policy, rows=2)
    engine.start(np.arange(2), *_left_pad([[5, 6, 7], [8]]))
    assert engine.reference_logits.data_ptr() == engine.policy_logits.data_ptr()
    stats = engine.step(np.array([9, 10]), np.array([True, True]))
    assert np.all(stats[0] == 0) and np.array_equal(stats[1], stats[2])


def test_static_rows_that_pause_keep_their_context(tokenizer):
    """A row that does not advance for some steps (its write slots stay invalid) keeps its
    logits and goes on exactly where it was, sliding window included."""
    policy = build_tiny_causal_lm("gemma3_text", tokenizer, seed=0)
    engine = StaticEngine(policy, policy, num_rows=2, num_slots=16)
    contexts = [[5, 6, 7], [8, 9]]
    engine.start(np.arange(2), *_left_pad(contexts))
    rng = np.random.default_rng(0)
    for step in range(12):
        tokens = rng.integers(5, 380, size=2)
        advance = np.array([True, step % 3 == 0])
        engine.step(tokens, advance)
        for row in np.flatnonzero(advance):
            contexts[row].append(int(tokens[row]))
        torch.testing.assert_close(
            engine.policy_logits[1], _full_logits(policy, [contexts[1]])[0], **TOLERANCE
        )


#: torch.compile's first compilation takes tens of seconds on a CPU: the long tier (make test-all).
COMPILED = pytest.param("compiled", marks=pytest.mark.long)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["static", COMPILED, "dynamic"])
def test_optimizer_steps_and_reallocated_weights_are_read(tokenizer, kind, device):
    """The engines read the policy's current weights: after an in-place optimiser step and
    after a parameter is replaced by a new tensor (as a peft merge or ``.to()`` would), the
    next step's logits equal a fresh forward with the new weights, compiled step included
    (on CUDA its graph is recorded again for the new address)."""
    policy = build_tiny_causal_lm("llama", tokenizer, seed=0).to(device)
    reference = build_tiny_causal_lm("llama", tokenizer, seed=1).to(device)
    if kind == "dynamic":
        engine = DynamicEngine(policy, reference, 2)
    else:
        engine = StaticEngine(policy, reference, 2, NUM_SLOTS, compile_step=kind == "compiled")
    contexts = [[5, 6, 7], [8, 9]]
    for change in ("optimizer step", "new tensor"):
        engine.start(np.arange(2), *_left_pad(contexts))
        engine.step(np.array([11, 12]), np.array([True, True]))  # compiles, on the first pass
        if change == "optimizer step":
            optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
            policy(torch.tensor([[5, 6]], device=device)).logits.sum().backward()
            optimizer.step()
        else:
            with torch.no_grad():
                head = policy.lm_head
                head.weight = torch.nn.Parameter(head.weight.detach().clone() * 1.5)
        # Keys cached earlier hold the old weights' values; a new prompt sees only the new.
        engine.start(np.arange(2), *_left_pad(contexts))
        engine.step(np.array([11, 12]), np.array([True, True]))
        expected = _full_logits(policy, [[*contexts[0], 11], [*contexts[1], 12]])
        torch.testing.assert_close(engine.policy_logits, expected, **_tolerance(device))


@pytest.mark.parametrize("setup", ["lora:4", "frozen:1"])
def test_static_engine_steps_lora_and_frozen_layer_references(tokenizer, setup):
    """The parameter-efficient setups: a LoRA policy whose reference is the same model with its
    adapters off, and a frozen-layer policy whose reference shares its lower layers."""
    from rlhf_env.models.efficient import apply_training_setup

    policy, reference = apply_training_setup(build_tiny_causal_lm("llama", tokenizer), setup)
    with torch.no_grad():  # a trained policy: adapters / upper layers away from the reference
        for parameter in policy.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.05)
    engine = StaticEngine(policy, reference, 3, NUM_SLOTS)
    _drive(engine, policy, reference, steps=15)


@pytest.mark.long
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("models", ["two models", "shared trunk", "shared trunk, kept"])
def test_compiled_step_matches_eager_without_recompiling(tokenizer, device, models):
    """``torch.compile(fullgraph=True)`` of the whole step (CPU: the default mode; CUDA: one
    CUDA graph per step): the same numbers as the eager step, and no recompilation after the
    first step over 200 steps with staggered restarts. With a shared trunk (frozen:2) the
    compiled step computes the shared blocks once and the eager one twice (sharing off); with
    its output kept, the compiled step writes it, equal to block 1's output over each
    context."""
    dynamo = torch._dynamo
    tolerance = _tolerance(device)
    if models.startswith("shared trunk"):
        policy, reference = frozen_pair("llama", tokenizer, device=device)
    else:
        policy = build_tiny_causal_lm("llama", tokenizer, seed=0).to(device)
        reference = build_tiny_causal_lm("llama", tokenizer, seed=1).to(device)
    compiled = StaticEngine(policy, reference, 3, NUM_SLOTS, compile_step=True)
    eager = StaticEngine(policy, reference, 3, NUM_SLOTS, compile_step=False, share_trunk=False)
    assert compiled.trunk.depth == (2 if models.startswith("shared trunk") else 0)
    if models.endswith("kept"):
        assert compiled.keep_trunk_states(2)
    rng = np.random.default_rng(0)
    contexts = [_prompt(rng) for _ in range(3)]
    lengths = [len(c) for c in contexts]
    for engine in (compiled, eager):
        engine.start(np.arange(3), *_left_pad(contexts))
    dynamo.utils.counters.clear()
    for step in range(200):
        tokens = rng.integers(5, 380, size=3)
        advance = np.array([length < NUM_SLOTS - 2 for length in lengths]) & (rng.random(3) > 0.2)
        if step == 1:  # after the first (compiling) step, any recompilation is an error
            graphs_after_warm_up = dynamo.utils.counters["stats"]["unique_graphs"]
            strict = dynamo.config.patch(error_on_recompile=True)
            strict.__enter__()
        outputs = [engine.step(tokens, advance) for engine in (compiled, eager)]
        np.testing.assert_allclose(outputs[0], outputs[1], **tolerance)
        torch.testing.assert_close(compiled.policy_logits, eager.policy_logits, **tolerance)
        torch.testing.assert_close(compiled.reference_logits, eager.reference_logits, **tolerance)
        lengths = [n + 1 if a else n for n, a in zip(lengths, advance, strict=True)]
        for row in np.flatnonzero(advance):
            contexts[row].append(int(tokens[row]))
        stopped = np.flatnonzero(~advance)
        if stopped.size:
            new = [_prompt(rng) for _ in stopped]
            for engine in (compiled, eager):
                engine.start(stopped, *_left_pad(new))
            for row, context in zip(stopped, new, strict=True):
                lengths[row], contexts[row] = len(context), list(context)
    strict.__exit__(None, None, None)
    if models.endswith("kept"):
        kept = compiled.trunk_states()
        assert kept is not None
        for row, context in enumerate(contexts):
            expected = _trunk_outputs(policy, 2, context)
            torch.testing.assert_close(kept[row].to(expected.device), expected, **tolerance)
    assert compiled.compiled and graphs_after_warm_up >= 1  # it did compile, one graph
    assert dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_warm_up


def test_compile_failure_falls_back_to_eager_with_one_warning(tokenizer, monkeypatch):
    policy = build_tiny_causal_lm("gpt2", tokenizer)
    engine = StaticEngine(policy, policy, 2, NUM_SLOTS, compile_step=True)

    def broken_compiler() -> None:
        raise RuntimeError("backend exploded")

    monkeypatch.setattr(engine, "_compiled", broken_compiler)
    contexts = [[5, 6], [7]]
    engine.start(np.arange(2), *_left_pad(contexts))
    with pytest.warns(RuntimeWarning, match="torch.compile failed .*backend exploded"):
        engine.step(np.array([8, 9]), np.array([True, True]))
    assert not engine.compiled
    engine.step(np.array([10, 11]), np.array([True, True]))  # no second warning
    contexts = [[5, 6, 8, 10], [7, 9, 11]]
    torch.testing.assert_close(engine.policy_logits, _full_logits(policy, contexts), **TOLERANCE)


def test_unsupported_architecture_is_named_and_auto_falls_back(tokenizer):
    config = GPTNeoXConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    model = GPTNeoXForCausalLM(config).eval()
    with pytest.raises(UnsupportedModelError, match=r"'gpt_neox'.*engine='dynamic'"):
        make_engine(model, model, 2, NUM_SLOTS, engine="static")
    assert isinstance(make_engine(model, model, 2, NUM_SLOTS, engine="auto"), DynamicEngine)
    llama = build_tiny_causal_lm("llama", tokenizer)
    assert isinstance(make_engine(llama, llama, 2, NUM_SLOTS, engine="auto"), StaticEngine)
    with pytest.raises(ValueError, match="unknown engine 'fast'"):
        make_engine(llama, llama, 2, NUM_SLOTS, engine="fast")


def test_batch_buckets():
    assert [batch_bucket(n) for n in (1, 3, 5, 16, 17, 64, 65, 256, 257)] == [
        1, 4, 8, 16, 24, 64, 96, 256, 384,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one row"):
        batch_bucket(0)


def test_static_engine_refuses_a_context_longer_than_its_slots(tokenizer):
    policy = build_tiny_causal_lm("gpt2", tokenizer)
    engine = StaticEngine(policy, policy, 1, num_slots=4)
    with pytest.raises(ValueError, match="does not fit the engine's 4 slots"):
        engine.start(np.arange(1), *_left_pad([[5, 6, 7, 8]]))


#: bf16 engines against a float32 recomputation: the largest logit error allowed. Measured on
#: CPU (eager, this test's staggered run taken to 60 steps): at most 0.0052 for either engine,
#: static against dynamic 0.0039; the logits' spread is about 0.16, and changing the first token
#: of a context moves them by 0.31 at the median, so a bug in any part of the context exceeds it.
BF16_TOLERANCE = 0.02


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_engines_track_a_float32_recomputation(tokenizer, device):
    """bf16 weights, the environments' GPU setting: the static step (compiled on CUDA) and the
    dynamic engine each stay within :data:`BF16_TOLERANCE` of an uncached float32 forward of
    the same (bf16-rounded) weights over a long staggered run, and agree with each other."""
    policy = build_tiny_causal_lm("qwen2", tokenizer, seed=0).to(device, torch.bfloat16)
    reference = build_tiny_causal_lm("qwen2", tokenizer, seed=1).to(device, torch.bfloat16)
    exact = copy.deepcopy(policy).float()
    engines = [
        StaticEngine(policy, reference, 5, NUM_SLOTS, compile_step=device == "cuda"),
        DynamicEngine(policy, reference, 5),
    ]
    rng = np.random.default_rng(0)
    contexts = [_prompt(rng) for _ in range(5)]
    for engine in engines:
        engine.start(np.arange(5), *_left_pad(contexts))
    for _ in range(40):
        tokens = rng.integers(5, 380, size=5)
        advance = np.array([len(c) < NUM_SLOTS - 2 for c in contexts]) & (rng.random(5) > 0.2)
        static_stats, dynamic_stats = (engine.step(tokens, advance) for engine in engines)
        contexts = [
            [*c, int(t)] if a else c for c, t, a in zip(contexts, tokens, advance, strict=True)
        ]
        expected = _right_padded_logits(exact, contexts)  # (5, V), float32
        for engine in engines:
            error = float((engine.policy_logits.float() - expected).abs().max())
            assert error < BF16_TOLERANCE, (type(engine).__name__, error)
        np.testing.assert_allclose(static_stats, dynamic_stats, atol=BF16_TOLERANCE, rtol=0)
        stopped = np.flatnonzero(~advance)
        if stopped.size:
            new = [_prompt(rng) for _ in stopped]
            for engine in engines:
                engine.start(stopped, *_left_pad(new))
            for row, context in zip(stopped, new, strict=True):
                contexts[row] = context
    assert engines[0].compiled == (device == "cuda")


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_release_frees_the_caches_and_a_new_start_works(tokenizer, kind):
    policy = build_tiny_causal_lm("llama", tokenizer)
    engine = _build(kind, policy, policy, rows=2)
    engine.start(np.arange(2), *_left_pad([[5, 6], [7]]))
    engine.step(np.array([8, 9]), np.array([True, True]))
    engine.release()
    if kind == "static":
        assert engine._policy.storage.nbytes() == 0
    with pytest.raises(RuntimeError, match="before start"):
        engine.step(np.array([8, 9]), np.array([True, True]))
    engine.start(np.arange(2), *_left_pad([[5, 6], [7]]))
    engine.step(np.array([8, 9]), np.array([True, True]))
    expected = _full_logits(policy, [[5, 6, 8], [7, 9]])
    torch.testing.assert_close(engine.policy_logits, expected, **TOLERANCE)


# -- appending several tokens to some rows (dialogue turns) ------------------------------------

DIALOGUE_SLOTS = 24  # room for turns of up to 7 tokens, longer than the sliding windows (5)


def _check_logits(engines, policy, reference, contexts) -> tuple[torch.Tensor, torch.Tensor]:
    """Every engine's logits against full recomputation, and (static == dynamic) each other;
    returns the full-recomputation logits ``(policy, reference)``."""
    tolerance = _tolerance(engines[0].device.type)
    expected = _full_logits(policy, contexts), _full_logits(reference, contexts)
    for engine in engines:
        torch.testing.assert_close(engine.policy_logits, expected[0], **tolerance)
        torch.testing.assert_close(engine.reference_logits, expected[1], **tolerance)
    for engine in engines[1:]:
        torch.testing.assert_close(engine.policy_logits, engines[0].policy_logits, **tolerance)
    return expected


def _turn(rng: np.random.Generator, room: int) -> list[int]:
    return rng.integers(5, 380, size=int(rng.integers(1, min(7, room) + 1))).tolist()


def _drive_dialogue(engines, policy, reference, steps: int, seed: int = 0, prompt=_prompt) -> int:
    """Drive ``engines`` in lockstep as a dialogue environment would: every step advances some
    rows by one token, restarts the rows that stopped, then appends ragged turns to random
    subsets of rows (zero, one or two ``append`` calls, rows just restarted included), up to
    the last slot. After every call, every row of every engine is checked against full
    recomputation, and the rows an append leaves out keep their logits exactly. Returns the
    number of rows appended to."""
    tolerance = _tolerance(engines[0].device.type)
    rng = np.random.default_rng(seed)
    n = engines[0].num_rows
    contexts = [prompt(rng) for _ in range(n)]
    for engine in engines:
        engine.start(np.arange(n), *_left_pad(contexts))
    appended = 0
    for _ in range(steps):
        expected = _check_logits(engines, policy, reference, contexts)
        tokens = rng.integers(5, 380, size=n)
        full = np.array([len(c) >= DIALOGUE_SLOTS - 2 for c in contexts])
        advance = ~full & (rng.random(n) > 0.15)
        want = kl_and_logprobs(
            "k1", *expected, torch.as_tensor(tokens, device=engines[0].device)
        )  # (3, n): the statistics come from the logits an append left, too
        for engine in engines:
            stats = engine.step(tokens, advance)
            np.testing.assert_allclose(stats, want.double().cpu().numpy(), **tolerance)
        for row in np.flatnonzero(advance):
            contexts[row].append(int(tokens[row]))
        stopped = np.flatnonzero(~advance)
        if stopped.size:
            new = [prompt(rng) for _ in stopped]
            for engine in engines:
                engine.start(stopped, *_left_pad(new))
            for row, context in zip(stopped, new, strict=True):
                contexts[row] = context
        for _ in range(int(rng.integers(0, 3))):
            _check_logits(engines, policy, reference, contexts)
            room = np.array([DIALOGUE_SLOTS - 1 - len(c) for c in contexts])
            rows = np.flatnonzero((room >= 1) & (rng.random(n) < 0.5))
            if rows.size == 0:
                continue
            rows = rng.permutation(rows)  # in any order
            turns = [_turn(rng, int(room[row])) for row in rows]
            others = np.setdiff1d(np.arange(n), rows)
            before = [engine.policy_logits[others].clone() for engine in engines]
            for engine in engines:
                engine.append(rows, *_left_pad(turns))
            for engine, kept in zip(engines, before, strict=True):
                assert torch.equal(engine.policy_logits[others], kept)
            for row, turn in zip(rows, turns, strict=True):
                contexts[row] = contexts[row] + turn
            appended += rows.size
    _check_logits(engines, policy, reference, contexts)
    return appended


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
def test_engines_append_ragged_turns_to_some_rows(tokenizer, architecture, device):
    """Static and dynamic engines in lockstep: ragged turns appended to subsets of rows while
    the others step, turns longer than the sliding windows, contexts up to the last slot."""
    policy = build_tiny_causal_lm(architecture, tokenizer, seed=0).to(device)
    reference = build_tiny_causal_lm(architecture, tokenizer, seed=1).to(device)
    engines = [
        _build(kind, policy, reference, rows=3, slots=DIALOGUE_SLOTS)
        for kind in ("static", "dynamic")
    ]
    assert _drive_dialogue(engines, policy, reference, steps=30) >= 15


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_append_leaves_the_other_rows_results_alone(tokenizer, kind):
    """Two engines on the same steps, one of them with a turn appended to row 0 midway: rows 1
    and 2 give the same logits and statistics in both afterwards."""
    policy = build_tiny_causal_lm("qwen2", tokenizer, seed=0)
    reference = build_tiny_causal_lm("qwen2", tokenizer, seed=1)
    plain, appended = (
        _build(kind, policy, reference, rows=3, slots=DIALOGUE_SLOTS) for _ in range(2)
    )
    contexts = [[5, 6, 7], [8], [9, 10, 11, 12]]
    for engine in (plain, appended):
        engine.start(np.arange(3), *_left_pad(contexts))
    rng = np.random.default_rng(0)
    for step in range(10):
        tokens = rng.integers(5, 380, size=3)
        stats = [engine.step(tokens, np.ones(3, dtype=bool)) for engine in (plain, appended)]
        np.testing.assert_allclose(stats[0][:, 1:], stats[1][:, 1:], **TOLERANCE)
        contexts[0].append(int(tokens[0]))
        if step == 2:
            turn = [20, 21, 22, 23, 24, 25]
            appended.append(np.array([0]), *_left_pad([turn]))
            contexts[0] += turn
        torch.testing.assert_close(plain.policy_logits[1:], appended.policy_logits[1:], **TOLERANCE)
        expected = _full_logits(policy, [contexts[0]])[0]
        torch.testing.assert_close(appended.policy_logits[0], expected, **TOLERANCE)


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_append_before_start_is_refused(tokenizer, kind):
    policy = build_tiny_causal_lm("llama", tokenizer)
    engine = _build(kind, policy, policy, rows=2)
    with pytest.raises(RuntimeError, match=r"append\(\) called before start\(\)"):
        engine.append(np.array([0]), *_left_pad([[5, 6]]))


def test_static_append_refuses_a_context_longer_than_its_slots(tokenizer):
    """A context may fill every slot but the last (``num_slots - 1`` tokens), no more; the
    refused append changes nothing."""
    policy = build_tiny_causal_lm("llama", tokenizer)
    engine = StaticEngine(policy, policy, 2, num_slots=8)
    contexts = [[5, 6, 7], [8]]
    engine.start(np.arange(2), *_left_pad(contexts))
    with pytest.raises(ValueError, match=r"5 tokens to row 0 makes its context 8 tokens, over "):
        engine.append(np.array([1, 0]), *_left_pad([[9], [10, 11, 12, 13, 14]]))
    with pytest.raises(ValueError, match="at least one 1"):
        engine.append(np.array([0]), torch.tensor([[9]]), torch.tensor([[0]]))
    engine.append(np.array([1, 0]), *_left_pad([[9], [10, 11, 12, 13]]))  # 7 tokens: fits
    contexts = [[5, 6, 7, 10, 11, 12, 13], [8, 9]]
    torch.testing.assert_close(engine.policy_logits, _full_logits(policy, contexts), **TOLERANCE)
    with pytest.raises(ValueError, match="row 0 already holds 7 tokens"):
        engine.step(np.array([15, 16]), np.array([True, True]))
    engine.step(np.array([15, 16]), np.array([False, True]))
    contexts[1].append(16)
    torch.testing.assert_close(engine.policy_logits, _full_logits(policy, contexts), **TOLERANCE)


@pytest.mark.long
@pytest.mark.parametrize("device", DEVICES)
def test_compiled_step_after_appends_matches_eager_without_recompiling(tokenizer, device):
    """Appends and prefix-cached starts run outside the compiled graph, in place: the compiled
    step (prefix cache on) goes on matching the eager one (off) and full recomputation
    without tracing again."""
    dynamo = torch._dynamo
    policy = build_tiny_causal_lm("gemma3_text", tokenizer, seed=0).to(device)
    reference = build_tiny_causal_lm("gemma3_text", tokenizer, seed=1).to(device)
    compiled, eager = (
        _build("static", policy, reference, 3, slots=DIALOGUE_SLOTS, compile_step=flag,
               prefix_cache=PrefixCache(min_tokens=3) if flag else None)
        for flag in (True, False)
    )  # fmt: skip
    for engine in (compiled, eager):
        engine.start(np.arange(3), *_left_pad([[5, 6, 7], [8], [9, 10]]))
        engine.step(np.array([11, 12, 13]), np.ones(3, dtype=bool))  # compiles
    graphs_after_warm_up = dynamo.utils.counters["stats"]["unique_graphs"]
    prompt = _prompts_with_prefixes(np.random.default_rng(2))
    with dynamo.config.patch(error_on_recompile=True):
        _drive_dialogue([compiled, eager], policy, reference, steps=20, seed=1, prompt=prompt)
    assert compiled.prefix_cache.hits >= 5
    assert compiled.compiled
    assert dynamo.utils.counters["stats"]["unique_graphs"] == graphs_after_warm_up


# -- a shared trunk: policy and reference with the same bottom blocks (frozen:N) ---------------


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_a_shared_trunk_runs_once_and_changes_no_number(tokenizer, architecture, kind):
    """frozen:N: the engine finds the N shared blocks; staggered restarts, steps of some rows
    and ragged appends to others give every logit and statistic of full recomputation (1e-5;
    sliding windows crossed); each prefill, step and append runs the shared blocks once, not
    twice, and (static) the reference's storage holds no keys or values for them."""
    policy, reference = frozen_pair(architecture, tokenizer)
    depth = policy.config.num_hidden_layers // 2
    engine = _build(kind, policy, reference, rows=3, slots=DIALOGUE_SLOTS)
    assert engine.trunk.depth == depth >= 1
    assert _drive_dialogue([engine], policy, reference, steps=20) >= 10
    first_block, top_shared = decoder_layers(policy)[0], decoder_layers(policy)[depth - 1]
    unshared = _build(kind, policy, reference, rows=3, slots=DIALOGUE_SLOTS, share_trunk=False)
    assert unshared.trunk.depth == 0
    for each, runs in ((engine, 1), (unshared, 2)):
        calls = []
        for block in (first_block, top_shared):
            with forward_shapes(block) as shapes:
                each.start(np.arange(3), *_left_pad([[5, 6, 7], [8], [9, 10]]))
                each.step(np.array([11, 12, 13]), np.array([True, False, True]))
                each.append(np.array([2, 0]), *_left_pad([[14, 15], [16]]))
            calls.append(len(shapes))
        assert calls == [3 * runs, 3 * runs], (each.trunk.depth, calls)
    contexts = [[5, 6, 7, 11, 16], [8], [9, 10, 13, 14, 15]]
    for each in (engine, unshared):
        torch.testing.assert_close(each.reference_logits, _full_logits(reference, contexts),
                                   **TOLERANCE)  # fmt: skip
    if kind == "static":
        storage = engine._reference.storage
        assert storage.keys[:depth] == [None] * depth and storage.allocated
        layers = policy.config.num_hidden_layers
        assert storage.nbytes() == engine._policy.storage.nbytes() * (layers - depth) // layers


def test_shared_trunk_depth_is_detected_not_declared(tokenizer):
    """Sharing needs the same block objects under the same embeddings, and a plain reference:
    frozen:N shares N; a full copy, the policy itself, a LoRA model's adapters-off view and a
    reference with its own embeddings share none."""
    model = build_tiny_causal_lm("llama", tokenizer, seed=0)
    assert shared_trunk_depth(*freeze_lower_layers(model, 3)) == 3
    other = build_tiny_causal_lm("llama", tokenizer, seed=0)
    assert shared_trunk_depth(other, copy.deepcopy(other)) == 0
    assert shared_trunk_depth(other, other) == 0
    assert shared_trunk_depth(*add_lora(build_tiny_causal_lm("llama", tokenizer), r=2)) == 0
    policy, reference = freeze_lower_layers(build_tiny_causal_lm("llama", tokenizer), 2)
    reference.model.embed_tokens = copy.deepcopy(reference.model.embed_tokens)
    assert shared_trunk_depth(policy, reference) == 0
    assert StaticEngine(policy, reference, 2, NUM_SLOTS).trunk.depth == 0


# -- the prompt-prefix cache ---------------------------------------------------------------------


def _prompts_with_prefixes(rng: np.random.Generator) -> Callable[[np.random.Generator], list[int]]:
    """A prompt maker: most prompts start with one of two prefixes (6 and 9 tokens) and end
    with 1-4 tokens of their own; some share nothing; a quarter repeat the one made before
    (the copies of an RLOO group, often started together)."""
    prefixes = [rng.integers(5, 380, size=n).tolist() for n in (6, 9)]
    made: list[list[int]] = []

    def prompt(rng: np.random.Generator) -> list[int]:
        own = rng.integers(5, 380, size=int(rng.integers(1, 5))).tolist()
        if made and rng.random() < 0.25:
            made.append(list(made[-1]))
        elif rng.random() < 0.15:
            made.append(own)
        else:
            made.append(prefixes[int(rng.integers(2))] + own)
        return list(made[-1])

    return prompt


@pytest.mark.parametrize("architecture", sorted(TINY_ARCHITECTURES))
@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("models", ["two models", "shared trunk"])
def test_prefix_cache_changes_no_number(tokenizer, architecture, kind, models):
    """Prompts that share prefixes or are the same, started together and one by one
    (staggered restarts), steps, ragged appends: every logit and statistic equals full
    recomputation (1e-5; sliding windows crossed), with cached prefixes reused, new ones
    computed, rows with the same prompt as another in their start copied from it, and the
    bound of 12 tokens (less than the two prefixes together) forcing evictions that stay
    exact."""
    if models == "shared trunk":
        policy, reference = frozen_pair(architecture, tokenizer)
    else:
        policy = build_tiny_causal_lm(architecture, tokenizer, seed=0)
        reference = build_tiny_causal_lm(architecture, tokenizer, seed=1)
    cache = PrefixCache(max_tokens=12, min_tokens=3)
    engine = _build(kind, policy, reference, rows=4, slots=DIALOGUE_SLOTS, prefix_cache=cache)
    prompt = _prompts_with_prefixes(np.random.default_rng(1))
    assert _drive_dialogue([engine], policy, reference, steps=25, prompt=prompt) >= 10
    assert cache.hits >= 6 and cache.misses >= 2 and cache.evictions >= 1
    assert cache.copies >= 2 and cache.tokens <= 12


@pytest.mark.parametrize("kind", ["static", "dynamic"])
@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma3_text"])
def test_rows_with_the_same_prompt_start_once(tokenizer, kind, architecture):
    """An RLOO group's copies of one prompt, started together (every row, then some): the
    first of each is started, the others copy it; every row equals full recomputation through
    steps and appends, and the engine ran one forward row per distinct prompt."""
    policy, reference = frozen_pair(architecture, tokenizer)
    cache = PrefixCache(min_tokens=3)
    engine = _build(kind, policy, reference, rows=5, slots=DIALOGUE_SLOTS, prefix_cache=cache)
    group, other = [7, 8, 9, 10, 11], [7, 8, 9, 12]
    contexts = [list(group), list(other), list(group), list(group), list(other)]
    with forward_shapes(decoder_layers(policy)[0]) as shapes:
        engine.start(np.arange(5), *_left_pad(contexts))
    assert cache.copies == 3 and sum(shape[0] for shape in shapes) == 3  # prefix + 2 remainders
    tokens = np.array([20, 21, 22, 23, 24])
    engine.step(tokens, np.ones(5, dtype=bool))
    contexts = [[*context, int(token)] for context, token in zip(contexts, tokens, strict=True)]
    _check_logits([engine], policy, reference, contexts)
    engine.start(np.array([1, 3, 4]), *_left_pad([other, other, group]))  # some rows
    contexts[1], contexts[3], contexts[4] = list(other), list(other), list(group)
    assert cache.copies == 4
    engine.append(np.array([3, 0]), *_left_pad([[30, 31], [32]]))
    contexts[3] += [30, 31]
    contexts[0] += [32]
    _check_logits([engine], policy, reference, contexts)


@torch.no_grad()
def _trunk_outputs(model, depth: int, context: list[int]) -> torch.Tensor:
    """The output of block ``depth - 1`` ``(n, H)`` over ``context``, uncached."""
    output = model(torch.tensor([context]), output_hidden_states=True)
    return output.hidden_states[depth][0]


@pytest.mark.parametrize("architecture", ["gpt2", "llama", "gemma3_text"])
def test_static_engine_keeps_the_trunk_output_of_every_token(tokenizer, architecture):
    """keep_trunk_states: after starts (whole prefills, a prefix group, rows copied from the
    same prompt), steps of some rows and ragged appends, each row's kept trunk output equals
    block N-1's output over its context (1e-5; Gemma 3's sliding windows crossed). A row
    started from a prefix cached before (its trunk output not kept) makes them absent, until
    the rows start afresh. Only the shared trunk's depth is kept; the dynamic engine keeps
    none."""
    policy, reference = frozen_pair(architecture, tokenizer)
    depth = policy.config.num_hidden_layers // 2
    cache = PrefixCache(min_tokens=3)
    engine = _build("static", policy, reference, rows=4, slots=DIALOGUE_SLOTS, prefix_cache=cache)
    assert not engine.keep_trunk_states(depth + 1) and engine.trunk_states() is None
    assert engine.keep_trunk_states(depth)
    assert not _build("dynamic", policy, reference, rows=4).keep_trunk_states(depth)
    shared = [7, 8, 9, 10]
    contexts = [[*shared, 11, 12], [*shared, 13], [20, 21, 22], [*shared, 11, 12]]
    engine.start(np.arange(4), *_left_pad(contexts))
    assert cache.misses == 2 and cache.copies == 1
    rng = np.random.default_rng(0)
    for step in range(12):
        advance = rng.random(4) > 0.2
        tokens = rng.integers(5, 380, size=4)
        engine.step(tokens, advance)
        for row in np.flatnonzero(advance):
            contexts[row].append(int(tokens[row]))
        if step % 4 == 3:
            turns = [[30, 31, 32], [33]]
            engine.append(np.array([2, 0]), *_left_pad(turns))
            contexts[2] += turns[0]
            contexts[0] += turns[1]
    kept = engine.trunk_states()
    assert kept is not None
    for row, context in enumerate(contexts):
        expected = _trunk_outputs(policy, depth, context)
        torch.testing.assert_close(kept[row], expected, **TOLERANCE)
    engine.start(np.array([1]), *_left_pad([[*shared, 40]]))  # a cached prefix: not kept
    assert cache.hits == 1 and engine.trunk_states() is None
    cache.clear()
    engine.start(np.arange(4), *_left_pad([[*shared, 41], [42, 43], [44], [*shared, 45, 46]]))
    assert engine.trunk_states() is not None


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_prefix_cache_is_dropped_when_the_weights_change(tokenizer, kind):
    """A cached prefix holds the policy's keys and values of its time: after an in-place
    weight change (an optimiser step) rows starting on it must not reuse them. The restarted
    rows equal full recomputation with the new weights, and the prefix was computed again."""
    policy, reference = frozen_pair("llama", tokenizer)
    cache = PrefixCache(min_tokens=3)
    engine = _build(kind, policy, reference, rows=3, slots=DIALOGUE_SLOTS, prefix_cache=cache)
    contexts = [[7, 8, 9, 10, 11, 12], [7, 8, 9, 10, 13], [7, 8, 9, 10, 14, 15]]
    engine.start(np.arange(3), *_left_pad(contexts))
    assert (cache.misses, cache.hits) == (3, 0) and (7, 8, 9, 10) in cache
    engine.start(np.array([1]), *_left_pad([contexts[1]]))  # the same weights: reused
    assert cache.hits == 1
    with torch.no_grad():
        decoder_layers(policy)[-1].mlp.up_proj.weight.mul_(1.5)  # in place, as AdamW steps
    engine.start(np.array([0, 2]), *_left_pad([contexts[0], contexts[2]]))
    assert (cache.misses, cache.hits) == (5, 1)
    restarted = [contexts[0], contexts[2]]
    torch.testing.assert_close(
        engine.policy_logits[[0, 2]], _full_logits(policy, restarted), **TOLERANCE
    )
    torch.testing.assert_close(
        engine.reference_logits[[0, 2]], _full_logits(reference, restarted), **TOLERANCE
    )
