"""Milliseconds to draw one token per row from next-token logits, by method, side by side.

The agents draw every generated token from the policy's softmax over the whole vocabulary
(49,152 tokens for SmolLM2, 151,936 for Qwen2.5), so the draw is part of every rollout step:

    inverse_cdf   rlhf_agents.sampling.sample_tokens: one uniform per row on the float64
                  cumulative distribution (what the agents use)
    multinomial   torch.multinomial over the softmax (what they used before)
    race          the exponential race, argmax(log p - log E) with E ~ Exp(1) per token in
                  float64: the same distribution, and a draw that moves only when two tokens
                  nearly tie (rounding of the logits cannot move it in the tail, where it
                  moves inverse_cdf's; see docs/shared_compute.md), at one random number per
                  token instead of one per row

The logits are those of a language model's next token in shape, not in value: a normal draw
scaled to SmolLM2's spread (the costs depend on the shape alone). The methods take turns
within every repeat; the figures are medians over repeats, and ratios to ``inverse_cdf``.

    python benchmarks/sampling.py                          # 32 rows x 49,152 tokens
    python benchmarks/sampling.py --rows 8 32 128 --vocab 49152 151936
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from rlhf_agents.sampling import sample_tokens

RESULTS = Path(__file__).parent / "results"


def _multinomial(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)[:, 0]


def _race(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    waits = torch.empty(logits.shape, dtype=torch.float64).exponential_(generator=generator)
    return (torch.log_softmax(logits.double(), dim=-1) - waits.log()).argmax(dim=-1)


#: The methods by name: ``(logits, generator) -> (rows,)`` token ids.
METHODS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "inverse_cdf": lambda logits, generator: sample_tokens(logits, generator),
    "multinomial": _multinomial,
    "race": _race,
}


def time_methods(rows: int, vocab: int, repeats: int) -> dict[str, float]:
    """Median milliseconds per draw of each method for ``rows x vocab`` logits."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(rows, vocab, generator=generator) * 3.0
    seconds: dict[str, list[float]] = {name: [] for name in METHODS}
    for repeat in range(repeats + 1):  # the first repeat warms up
        for name, method in METHODS.items():
            start = time.perf_counter()
            method(logits, generator)
            if repeat:
                seconds[name].append(time.perf_counter() - start)
    return {name: round(1000 * statistics.median(values), 3) for name, values in seconds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[32], help="rows drawn at once")
    parser.add_argument("--vocab", type=int, nargs="+", default=[49152], help="vocabulary sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per case")
    parser.add_argument("--out", type=Path, default=RESULTS / "sampling_cpu.json")
    args = parser.parse_args(argv)
    cases = []
    print("| rows | vocabulary | " + " | ".join(f"{name} ms" for name in METHODS) + " |")
    print("|---" * (len(METHODS) + 2) + "|")
    for vocab in args.vocab:
        for rows in args.rows:
            milliseconds = time_methods(rows, vocab, args.repeats)
            ratios = {
                name: round(value / milliseconds["inverse_cdf"], 2)
                for name, value in milliseconds.items()
            }
            cases.append(
                {"rows": rows, "vocab": vocab, "ms": milliseconds, "vs_inverse_cdf": ratios}
            )
            cells = " | ".join(
                f"{milliseconds[name]:.2f} ({ratios[name]:.1f}x)" for name in METHODS
            )
            print(f"| {rows} | {vocab:,} | {cells} |")
    result = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
