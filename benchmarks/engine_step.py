"""Latency of one environment step's model work: policy + reference forwards, log-softmaxes, KL.

Each case prefills ``batch`` random prompts of ``--prompt`` tokens, then steps every row for
the rest of a ``--cache``-token context (``cache - prompt - 1`` steps), timing each step with
the device-to-host copy of its statistics (KL and log-probs), as an environment step does.
With ``--turn U`` every other row also gets a ``U``-token turn appended halfway through the
episode (``engine.append``, as a dialogue environment does at the end of a turn; timed apart,
``append_ms``), and the episode is ``U`` steps shorter. The engines run in lockstep, one step
of each in turn on the same tokens, so that machine noise hits them alike:

    dynamic    DynamicEngine: Hugging Face DynamicCaches, eager
    static     StaticEngine, eager step
    compiled   StaticEngine, compiled step (one CUDA graph per step on CUDA)

Models are random-initialised from their configs (same cost per token as the real weights):
``tiny-gpt2`` (4 x 256, SmolLM2's 49,152-token vocabulary), ``smollm2-135m`` (30 x 576) and
``qwen2.5-0.5b`` (24 x 896, 151,936 tokens). Prints a table and writes JSON.

The engines step the same tokens on the same contexts, so they must compute the same KL and
log-probs: the JSON's ``checksums`` hold, per engine, a digest of the tokens (the same by
construction) and the sums of the statistics it returned over every timed repeat (``logprob``,
``ref_logprob``, ``kl``), compared by ``tests/test_benchmarks.py``.

    python benchmarks/engine_step.py --models smollm2-135m --batches 64 256 --cache 256
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from checksums import agreement, checksum
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

from rlhf_env.engine import DynamicEngine, StaticEngine
from rlhf_env.models import frozen_copy, pick_device

#: Model name -> its config (public architecture hyper-parameters; weights are random).
CONFIGS = {
    "tiny-gpt2": lambda: GPT2Config(
        n_layer=4, n_embd=256, n_head=4, n_positions=512, vocab_size=49152,
        bos_token_id=0, eos_token_id=0,
    ),
    "smollm2-135m": lambda: LlamaConfig(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192,
        rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2,
    ),
    "qwen2.5-0.5b": lambda: Qwen2Config(
        hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
        rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=151643, eos_token_id=151645,
    ),
}  # fmt: skip
ENGINES = ("dynamic", "static", "compiled")


def build_pair(name: str, device: torch.device, dtype: torch.dtype):
    """(policy, reference): a random-init model of ``name`` and a slightly different copy."""
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(CONFIGS[name]()).to(device=device, dtype=dtype)
    policy.eval()
    reference = frozen_copy(policy)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(torch.randn_like(parameter) * 1e-3)
    return policy, reference


def build_engine(kind: str, policy, reference, batch: int, cache: int):
    if kind == "dynamic":
        return DynamicEngine(policy, reference, batch)
    return StaticEngine(policy, reference, batch, cache, compile_step=kind == "compiled")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_episodes(
    engines: dict, batch: int, prompt: int, steps: int, vocab: int, seed: int, turn: int = 0
):
    """One episode of ``steps`` steps on every engine in lockstep (with a ``turn``-token
    append to every other row halfway); per engine, (prefill seconds, per-step seconds,
    append seconds or ``None``, the step statistics ``(steps, 3, batch)``), and the tokens
    stepped ``(steps, batch)``."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(vocab, (batch, prompt), generator=generator)
    mask = torch.ones_like(input_ids)
    tokens = np.random.default_rng(seed).integers(vocab, size=(steps, batch))
    advance = np.ones(batch, dtype=bool)
    turn_rows = np.arange(0, batch, 2)
    turn_ids = torch.randint(vocab, (turn_rows.size, max(turn, 1)), generator=generator)
    prefill, appends, times = {}, dict.fromkeys(engines), {kind: [] for kind in engines}
    stats: dict[str, list[np.ndarray]] = {kind: [] for kind in engines}
    for kind, engine in engines.items():
        synchronize(engine.device)
        start = time.perf_counter()
        engine.start(np.arange(batch), input_ids, mask)
        synchronize(engine.device)
        prefill[kind] = time.perf_counter() - start
    for step in range(steps):
        for kind, engine in engines.items():
            start = time.perf_counter()
            step_stats = engine.step(tokens[step], advance)  # ends with their copy to the host
            times[kind].append(time.perf_counter() - start)
            stats[kind].append(step_stats)  # (3, batch): KL, log pi, log pi_ref
        if turn and step == steps // 2:
            for kind, engine in engines.items():
                synchronize(engine.device)
                start = time.perf_counter()
                engine.append(turn_rows, turn_ids, torch.ones_like(turn_ids))
                synchronize(engine.device)
                appends[kind] = time.perf_counter() - start
    stacked = {kind: np.stack(values) for kind, values in stats.items()}
    return prefill, times, appends, stacked, tokens


def bench_case(models, name, batch, prompt, cache, repeats, engines, turn=0):
    policy, reference = models
    vocab = policy.config.vocab_size
    steps = cache - prompt - 1 - turn
    built = {kind: build_engine(kind, policy, reference, batch, cache) for kind in engines}
    warm_up = {}
    for kind, engine in built.items():  # compile / capture, allocator, kernels
        start = time.perf_counter()
        run_episodes({kind: engine}, batch, prompt, min(steps, 4), vocab, seed=0, turn=turn)
        warm_up[kind] = time.perf_counter() - start
    step_times = {kind: [] for kind in built}
    prefills = {kind: [] for kind in built}
    appends = {kind: [] for kind in built}
    stats = {kind: [] for kind in built}
    tokens = []
    for repeat in range(repeats):
        prefill, times, appended, stepped, repeat_tokens = run_episodes(
            built, batch, prompt, steps, vocab, seed=repeat + 1, turn=turn
        )
        tokens.append(repeat_tokens)
        for kind in built:
            prefills[kind].append(prefill[kind])
            step_times[kind].extend(times[kind])
            stats[kind].append(stepped[kind])
            if appended[kind] is not None:
                appends[kind].append(appended[kind])
    result = {
        "model": name, "batch": batch, "prompt": prompt, "cache": cache, "steps": steps,
        "turn": turn,
    }  # fmt: skip
    for kind in built:
        median = statistics.median(step_times[kind])
        result[f"{kind}_step_ms"] = median * 1e3
        result[f"{kind}_mean_step_ms"] = statistics.fmean(step_times[kind]) * 1e3
        result[f"{kind}_tok_s"] = batch / statistics.fmean(step_times[kind])
        result[f"{kind}_prefill_ms"] = statistics.median(prefills[kind]) * 1e3
        result[f"{kind}_warm_up_s"] = warm_up[kind]
        if appends[kind]:
            result[f"{kind}_append_ms"] = statistics.median(appends[kind]) * 1e3
    for kind in ("static", "compiled"):
        if kind in built and "dynamic" in built:
            result[f"{kind}_vs_dynamic"] = result[f"{kind}_tok_s"] / result["dynamic_tok_s"]
    result["checksums"] = {}
    for kind in built:
        kl, logprob, ref_logprob = np.stack(stats[kind]).transpose(2, 0, 1, 3)  # 3 x (R, S, B)
        result["checksums"][kind] = checksum(
            np.stack(tokens), logprob=logprob, ref_logprob=ref_logprob, kl=kl
        )
    return result


def print_table(results: list[dict]) -> None:
    header = (
        f"{'model':<14}{'batch':>6}{'cache':>6} | {'dynamic':>9}{'static':>9}{'compiled':>9} ms"
        f" | {'stat/dyn':>9}{'comp/dyn':>9} | {'prefill (comp)':>15}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cells = "".join(
            f"{r[f'{kind}_mean_step_ms']:>9.2f}" if f"{kind}_mean_step_ms" in r else f"{'-':>9}"
            for kind in ENGINES
        )
        ratios = "".join(
            f"{r[key]:>9.2f}" if key in r else f"{'-':>9}"
            for key in ("static_vs_dynamic", "compiled_vs_dynamic")
        )
        prefill = r.get("compiled_prefill_ms", r.get("static_prefill_ms", float("nan")))
        print(
            f"{r['model']:<14}{r['batch']:>6}{r['cache']:>6} | {cells}    | {ratios} | "
            f"{prefill:>12.1f} ms"
        )
        if r.get("turn"):
            appends = ", ".join(
                f"{kind} {r[f'{kind}_append_ms']:.1f} ms"
                for kind in ENGINES
                if f"{kind}_append_ms" in r
            )
            print(
                f"  append of a {r['turn']}-token turn to {(r['batch'] + 1) // 2} rows: {appends}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny-gpt2"], choices=list(CONFIGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--cache", type=int, default=256, help="context tokens (cache slots)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--turn", type=int, default=0, help="tokens appended to every other row halfway (0: none)"
    )
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/engine_step.json"))
    args = parser.parse_args()
    if args.turn < 0:
        parser.error("--turn must be >= 0")
    if args.cache <= args.prompt + args.turn + 1:
        parser.error("--cache must exceed --prompt + --turn + 1")

    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32
    )  # fmt: skip
    results = []
    for name in args.models:
        models = build_pair(name, device, dtype)
        for batch in args.batches:
            result = bench_case(
                models, name, batch, args.prompt, args.cache, args.repeats, args.engines, args.turn
            )
            results.append(result)
            print_table([result])
            print(agreement(result["checksums"], list(ENGINES)))
        del models
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print_table(results)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
        "dtype": str(dtype),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
