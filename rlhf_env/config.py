"""The environments' arguments: one documented field each, with its default and its checks.

:class:`EnvConfig` holds every setting of :class:`rlhf_env.TextGenerationEnv` but the models,
tokenizer, reward function and prompts (the envs' positional arguments);
:class:`VectorEnvConfig` adds the vector env's. The envs take the fields as keyword arguments
(``gym.make(..., max_new_tokens=16)``), or a whole config as ``config=``; the
command line (``rlhf-env train``), the demo's settings and the arguments tables of the
docstrings and of docs/environment.md are generated from these classes.

Example:
    >>> config = VectorEnvConfig(num_envs=16, max_new_tokens=24, kl_coef=0.1)
    >>> env = TextGenerationVectorEnv(policy, tokenizer, reward_fn, prompts, config=config)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gymnasium.vector import AutoresetMode

from rlhf_env.dialogue.conversation import TURN_CUTS, TURN_REWARDS
from rlhf_env.engine import ENGINES
from rlhf_env.kl import KL_ESTIMATORS

Config = TypeVar("Config")

#: Gymnasium's autoreset modes by the names the envs take.
AUTORESET_MODES: tuple[str, ...] = tuple(mode.value for mode in AutoresetMode)


def option(default: Any, help: str, choices: Iterable[Any] | None = None, cli: bool = True) -> Any:
    """A config field: its default, its one-line help, the values it may take (``choices``,
    checked by :func:`check` and offered by the command line) and whether the command line
    offers it at all (``cli``; False for values a command line cannot spell)."""
    metadata: dict[str, Any] = {"help": help, "cli": cli}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return field(default=default, metadata=metadata)


def check(config: Any, problems: Iterable[tuple[bool, str]]) -> None:
    """Raise ``ValueError("<Class>: <message>")`` for the first failed check, and for any field
    whose value is outside its declared ``choices``."""
    for item in dataclasses.fields(config):
        choices = item.metadata.get("choices")
        value = getattr(config, item.name)
        if choices is not None and value not in choices:
            raise ValueError(
                f"{type(config).__name__}: {item.name} must be one of {list(choices)}, "
                f"got {value!r}"
            )
    for ok, message in problems:
        if not ok:
            raise ValueError(f"{type(config).__name__}: {message}")


def build_config(
    config_class: type[Config], config: Config | None = None, options: Mapping[str, Any] = {}
) -> Config:
    """``config`` (default: the class's defaults) with ``options`` replacing fields; unknown
    names raise a ``TypeError`` that lists the known ones."""
    known = {item.name for item in dataclasses.fields(config_class)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(
            f"unknown argument(s) {', '.join(unknown)} for {config_class.__name__}; known: "
            f"{', '.join(sorted(known))}"
        )
    if config is None:
        return config_class(**options)
    if not isinstance(config, config_class):
        raise TypeError(f"config must be a {config_class.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **options)


def options_table(config_class: type) -> str:
    """A Markdown table of the fields of ``config_class``: name, default, description."""
    rows = ["| argument | default | description |", "|---|---|---|"]
    for item in dataclasses.fields(config_class):
        default = item.default
        shown = default.value if isinstance(default, AutoresetMode) else default
        rows.append(f"| `{item.name}` | `{shown!r}` | {item.metadata.get('help', '')} |")
    return "\n".join(rows)


@dataclass(kw_only=True)
class EnvConfig:
    """The settings of a text-generation environment (see :class:`rlhf_env.TextGenerationEnv`)."""

    max_new_tokens: int = option(
        32, "Tokens per response: the episode is truncated after this many."
    )
    max_prompt_tokens: int = option(
        64, "Longest prompt in tokens; a longer one is cut from the left (warned once)."
    )
    kl_coef: float = option(
        0.05, "beta, the weight of the per-token KL penalty (a KL controller may change it)."
    )
    kl_estimator: str = option(
        "k1",
        "Per-token KL: 'k1' log pi(a) - log pi_ref(a), 'k3' (r - 1) - log r, or 'full' (exact).",
        choices=KL_ESTIMATORS,
    )
    eos_token_ids: tuple[int, ...] | None = option(
        None,
        "Token ids that end an episode (None: the tokenizer's EOS and the model's "
        "generation_config.eos_token_id).",
        cli=False,
    )
    missing_eos_penalty: float = option(
        0.0, "Subtracted from the reward of a response cut at max_new_tokens (no EOS)."
    )
    render_mode: str | None = option(
        None, "'ansi' (render() returns the text) or 'human' (it prints it).", cli=False
    )
    device: str | None = option(
        None, "Where models loaded from a path go (None: CUDA when there is one)."
    )
    trust_remote_code: bool = option(
        False, "Run code that ships with a checkpoint loaded by path (off: only known models)."
    )
    engine: str = option(
        "auto",
        "How policy and reference are stepped: 'static' (fixed shapes, one compiled step), "
        "'dynamic' (growing caches, any causal LM) or 'auto' (static where supported).",
        choices=ENGINES,
    )
    compile_step: bool | None = option(
        None, "Compile the static engine's step (CUDA graphs on CUDA; None: on CUDA only)."
    )
    share_trunk: bool = option(
        True,
        "When policy and reference share their bottom blocks (frozen:N), compute them once per "
        "token, in the policy's forward, and cache their keys and values once (off: both "
        "models compute them, for comparisons; `rlhf-env train` sets the agent's as well).",
    )
    prefix_cache: bool = option(
        True,
        "Rows that start together on the same prompt prefill it once (the others copy the "
        "first); on prompts with a common prefix (16+ tokens), they prefill it once and keep "
        "its keys and values (LRU, up to 1,024 tokens; dropped when the weights change) for "
        "rows that start on it later; only the rest of each prompt is prefilled.",
    )
    max_turns: int | None = option(
        None,
        "None: an episode is one response to a text prompt. N: a dialogue of up to N assistant "
        "turns; prompts are conversation scripts whose user turns the env inserts.",
    )
    max_total_tokens: int | None = option(
        None,
        "Dialogue: tokens after the first prompt (the agent's and the inserted user turns); "
        "the episode is truncated there. None: max_turns * (max_new_tokens + 64).",
    )
    turn_rewards: str = option(
        "turn",
        "Dialogue: 'turn' scores every assistant turn when it ends, 'end' the last one only.",
        choices=TURN_REWARDS,
    )
    turn_cut: str = option(
        "truncate",
        "Dialogue: a turn that reaches max_new_tokens truncates the episode ('truncate'), or "
        "the env ends it with the end-of-turn token and the conversation goes on ('end_turn').",
        choices=TURN_CUTS,
    )
    user_fn: Callable[[list[dict[str, str]]], str | None] | None = option(  # noqa: RUF009
        None,
        "Dialogue: user_fn(messages) -> the next user turn (None ends the conversation), "
        "asked when a script's turns run out.",
        cli=False,
    )

    def __post_init__(self) -> None:
        if self.eos_token_ids is not None:
            self.eos_token_ids = tuple(int(i) for i in self.eos_token_ids)
        check(
            self,
            [
                (
                    self.max_new_tokens >= 1 and self.max_prompt_tokens >= 1,
                    f"max_new_tokens ({self.max_new_tokens}) and max_prompt_tokens "
                    f"({self.max_prompt_tokens}) must both be >= 1",
                ),
                (
                    math.isfinite(self.kl_coef) and self.kl_coef >= 0,
                    f"kl_coef must be a finite number >= 0, got {self.kl_coef}",
                ),
                (
                    math.isfinite(self.missing_eos_penalty) and self.missing_eos_penalty >= 0,
                    "missing_eos_penalty must be a finite number >= 0 (it is subtracted), "
                    f"got {self.missing_eos_penalty}",
                ),
                (
                    self.max_turns is None or self.max_turns >= 1,
                    f"max_turns must be None or >= 1, got {self.max_turns}",
                ),
                (
                    self.max_total_tokens is None
                    or (self.max_turns is not None and self.max_total_tokens >= 1),
                    f"max_total_tokens={self.max_total_tokens} needs max_turns (dialogue mode) "
                    "and must be >= 1",
                ),
                (
                    self.user_fn is None or (self.max_turns is not None and callable(self.user_fn)),
                    "user_fn must be a callable and needs max_turns (dialogue mode)",
                ),
                (
                    self.render_mode in (None, *self.render_modes()),
                    f"render_mode {self.render_mode!r} is not one of {list(self.render_modes())}",
                ),
            ],
        )

    @staticmethod
    def render_modes() -> tuple[str, ...]:
        """The render modes the env offers."""
        return ("ansi", "human")

    @property
    def dialogue(self) -> bool:
        """Episodes are multi-turn dialogues (``max_turns`` is set)."""
        return self.max_turns is not None

    @property
    def continuation_tokens(self) -> int:
        """Tokens an episode adds after its first prompt: ``max_new_tokens``, or in dialogue
        mode ``max_total_tokens`` (default ``max_turns * (max_new_tokens + 64)``)."""
        if self.max_turns is None:
            return self.max_new_tokens
        if self.max_total_tokens is not None:
            return self.max_total_tokens
        return self.max_turns * (self.max_new_tokens + 64)

    @property
    def context_length(self) -> int:
        """``max_prompt_tokens + continuation_tokens``: the observation's length ``L``."""
        return self.max_prompt_tokens + self.continuation_tokens


@dataclass(kw_only=True)
class VectorEnvConfig(EnvConfig):
    """The settings of the vector environment (see :class:`rlhf_env.TextGenerationVectorEnv`):
    the single env's, and the batch."""

    num_envs: int = option(8, "Sub-environments stepped as one batch.")
    autoreset_mode: str = option(
        AutoresetMode.NEXT_STEP.value,
        "Gymnasium's autoreset: 'NextStep' (the step after the end resets), 'SameStep' (the "
        "ending step does, final_obs in the info) or 'Disabled' (reset with reset_mask).",
        choices=AUTORESET_MODES,
    )

    def __post_init__(self) -> None:
        if isinstance(self.autoreset_mode, AutoresetMode):
            self.autoreset_mode = self.autoreset_mode.value
        super().__post_init__()
        check(self, [(self.num_envs >= 1, f"num_envs must be >= 1, got {self.num_envs}")])

    @staticmethod
    def render_modes() -> tuple[str, ...]:
        """The render modes the vector env offers."""
        return ("ansi",)
