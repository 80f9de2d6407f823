"""What the single and the vector environment share: models, tokenizer, prompts, reward, limits.

:class:`EnvCore` resolves and validates the environments' objects once (the settings are
validated by :mod:`rlhf_env.config`), builds the spaces, encodes prompts and checks actions, so
both environments apply the same rules. :class:`GenerationEnvBase` is their common
constructor and public attributes.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from rlhf_env.config import EnvConfig, build_config
from rlhf_env.data.prompts import PromptsLike, PromptSource
from rlhf_env.dialogue.conversation import Conversation, DialogueRules
from rlhf_env.dialogue.script import as_dialogue_prompt
from rlhf_env.engine import PrefixCache, TokenEngine, make_engine
from rlhf_env.models.loading import frozen_copy, load_causal_lm, load_tokenizer, vocab_size_of
from rlhf_env.models.modules import device_of
from rlhf_env.rewards.base import RewardFunction


class EnvCore:
    """The resolved, validated objects and rules of a text-generation environment.

    Arguments are the environments' positional ones (see :class:`rlhf_env.TextGenerationEnv`)
    and their :class:`~rlhf_env.config.EnvConfig`, whose settings it reads from ``config`` (the
    env's own object: a KL controller's new beta is seen here too).
    """

    def __init__(
        self,
        policy: torch.nn.Module | str | Path,
        tokenizer: PreTrainedTokenizerBase | str | Path | None,
        reward_fn: RewardFunction | None,
        prompts: PromptsLike | None,
        reference: torch.nn.Module | str | Path | None,
        config: EnvConfig,
    ) -> None:
        may_be_none = config.max_turns is not None  # turn-level episodes pay their own rewards
        if not (callable(reward_fn) or (reward_fn is None and may_be_none)):
            raise TypeError(
                "reward_fn must be a callable reward_fn(prompts, responses) -> list[float] (a "
                "dialogue env, max_turns set, may leave it None when its prompts are turn-level "
                "episodes, whose env pays each turn's reward)"
            )
        if prompts is None:
            raise TypeError("prompts is required: a list of strings or a callable returning one")
        self.config = config
        self.policy, self.tokenizer = _resolve_policy(
            policy, tokenizer, config.device, config.trust_remote_code
        )
        self.reference = _resolve_reference(reference, self.policy, config.trust_remote_code)
        self.reward_fn = reward_fn
        self.prompt_source = PromptSource(prompts, as_dialogue_prompt if config.dialogue else None)

        self.vocab_size = vocab_size_of(self.policy)
        if vocab_size_of(self.reference) != self.vocab_size:
            raise ValueError(
                f"reference vocabulary ({vocab_size_of(self.reference)}) differs from the "
                f"policy's ({self.vocab_size}); both must share one tokenizer"
            )
        self.pad_token_id = _pad_id(self.tokenizer)
        self.eos_token_ids = _eos_ids(self.tokenizer, self.policy, config.eos_token_ids)
        _check_position_limit(self.policy, config)
        self._warned_truncation = False
        #: The rules of dialogue episodes (``None`` unless ``max_turns`` is set).
        self.dialogue: DialogueRules | None = None
        if config.max_turns is not None:
            self.dialogue = DialogueRules(
                self.tokenizer, self.eos_token_ids, config.max_turns, config.max_new_tokens,
                config.continuation_tokens, config.turn_rewards, config.user_fn, config.turn_cut,
            )  # fmt: skip

    @property
    def device(self) -> torch.device:
        """The device of the policy, where the environments compute."""
        return device_of(self.policy)

    def observation_space(self) -> spaces.Dict:
        """``Dict(input_ids: Box(0, V-1, (L,), int64), attention_mask: Box(0, 1, (L,), int64))``."""
        length = self.config.context_length
        return spaces.Dict(
            {
                "input_ids": spaces.Box(0, self.vocab_size - 1, (length,), dtype=np.int64),
                "attention_mask": spaces.Box(0, 1, (length,), dtype=np.int64),
            }
        )

    def action_space(self) -> spaces.Discrete:
        """``Discrete(V)``."""
        return spaces.Discrete(self.vocab_size)

    def start_episode(self, prompt: Any) -> tuple[list[int], str, Conversation | None]:
        """The first observation's token ids and text for ``prompt``, and in dialogue mode the
        new :class:`~rlhf_env.dialogue.Conversation`. Ids beyond ``max_prompt_tokens`` are cut
        from the left (their end, nearest the response, is kept) with a warning, once per env."""
        if self.dialogue is not None:
            conversation, ids, text = self.dialogue.start(prompt)
        else:
            if not isinstance(prompt, str):
                raise TypeError(f"a prompt must be a str, got {type(prompt).__name__}")
            conversation, ids, text = None, list(self.tokenizer(prompt)["input_ids"]), prompt
        if not ids:
            raise ValueError(
                f"prompt {prompt!r} encodes to no tokens; prompts must contain some text"
            )
        limit = self.config.max_prompt_tokens
        if len(ids) <= limit:
            return ids, text, conversation
        if not self._warned_truncation:
            warnings.warn(
                f"a prompt of {len(ids)} tokens exceeds max_prompt_tokens={limit}; prompts are "
                "cut from the left (this warning is shown once per env; raise max_prompt_tokens "
                "to keep whole prompts)",
                stacklevel=4,
            )
            self._warned_truncation = True
        ids = ids[-limit:]
        return ids, self.tokenizer.decode(ids, skip_special_tokens=True), conversation

    def check_actions(self, actions: Any, count: int) -> np.ndarray:
        """``actions`` as an int64 array of ``count`` token ids, or an error that says why not."""
        if isinstance(actions, torch.Tensor):
            actions = actions.detach().cpu().numpy()
        array = np.asarray(actions)
        expected = "one integer token id" if count == 1 else f"{count} integer token ids"
        if array.dtype.kind not in "iu" or array.size != count or array.ndim > 1:
            raise TypeError(
                f"actions must be {expected}, got {actions!r} ({type(actions).__name__}, "
                f"dtype {array.dtype}); actions are token ids of the policy's tokenizer"
            )
        array = array.reshape(count).astype(np.int64)
        bad = np.flatnonzero((array < 0) | (array >= self.vocab_size))
        if bad.size:
            where = "" if count == 1 else f" (sub-env {int(bad[0])})"
            raise ValueError(
                f"action {int(array[bad[0]])}{where} is outside Discrete({self.vocab_size}); "
                "actions are token ids of the policy's tokenizer"
            )
        return array

    def decode_response(self, token_ids: Iterable[int]) -> str:
        """The response text, special tokens (EOS) skipped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)


class GenerationEnvBase:
    """The constructor both environments share: the objects positionally, the settings by
    keyword (the fields of :attr:`config_class`) or as a whole ``config``; and the public
    attributes it sets: ``config``, ``policy``, ``reference``, ``tokenizer``, ``vocab_size``,
    ``eos_token_ids``, ``render_mode``, ``engine``, ``device`` and ``task``; ``max_new_tokens``
    and ``kl_coef`` read ``config``, where each setting has its one home (a KL controller changes
    beta with :meth:`set_kl_coef`). Subclasses build their own state in :meth:`_setup` and say
    in :meth:`_engine_rows` how many rows the engine steps."""

    config_class: type[EnvConfig] = EnvConfig
    #: The ready-made task the env was built for (a :class:`rlhf_env.tasks.Task`; None
    #: otherwise): its held-out prompts and gold metrics, which evaluation reads. Typed loosely:
    #: the tasks sit above the env layer, which never imports them.
    task: Any = None

    def __init__(
        self,
        policy: torch.nn.Module | str | Path,
        tokenizer: PreTrainedTokenizerBase | str | Path | None = None,
        reward_fn: RewardFunction | None = None,
        prompts: PromptsLike | None = None,
        reference: torch.nn.Module | str | Path | None = None,
        *,
        config: EnvConfig | None = None,
        **options: Any,
    ) -> None:
        self.config = build_config(self.config_class, config, options)
        core = self._core = EnvCore(policy, tokenizer, reward_fn, prompts, reference, self.config)
        self.policy, self.reference, self.tokenizer = core.policy, core.reference, core.tokenizer
        self.vocab_size = core.vocab_size
        self.eos_token_ids = core.eos_token_ids
        self.render_mode = self.config.render_mode
        self.engine: TokenEngine = make_engine(
            core.policy, core.reference, num_rows=self._engine_rows(),
            num_slots=self.config.context_length, kl_estimator=self.config.kl_estimator,
            engine=self.config.engine, compile_step=self.config.compile_step,
            share_trunk=self.config.share_trunk,
            prefix_cache=PrefixCache() if self.config.prefix_cache else None,
        )  # fmt: skip
        self._setup()

    @property
    def device(self) -> torch.device:
        """The policy's device, where the env computes (observations stay numpy arrays)."""
        return self._core.device

    @property
    def max_new_tokens(self) -> int:
        """Tokens per response (per assistant turn in dialogue mode): ``config.max_new_tokens``."""
        return self.config.max_new_tokens

    @property
    def kl_coef(self) -> float:
        """beta, the KL penalty's coefficient in every step's reward: ``config.kl_coef``.
        Assigning it is :meth:`set_kl_coef`."""
        return self.config.kl_coef

    @kl_coef.setter
    def kl_coef(self, value: float) -> None:
        self.set_kl_coef(value)

    def set_kl_coef(self, value: float) -> None:
        """Use ``value`` as beta from the next step on (a KL controller's one way to change
        it); ``env.config.kl_coef`` holds it. Raises ``ValueError`` unless finite and >= 0."""
        checked = dataclasses.replace(self.config, kl_coef=float(value))  # validates it
        self.config.kl_coef = checked.kl_coef

    def _engine_rows(self) -> int:
        """Rows the engine steps together."""
        return 1

    def _setup(self) -> None:
        """The subclass's own state (spaces, buffers), once the shared part is built."""


def _resolve_policy(
    policy: torch.nn.Module | str | Path,
    tokenizer: PreTrainedTokenizerBase | str | Path | None,
    device: str | torch.device | None,
    trust_remote_code: bool,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    if isinstance(policy, (str, Path)):
        if tokenizer is None:
            tokenizer = policy
        policy = load_causal_lm(policy, device=device, trust_remote_code=trust_remote_code)
    elif not isinstance(policy, torch.nn.Module):
        raise TypeError(
            f"policy must be a causal LM module or a hub name / path, got {type(policy).__name__}"
        )
    if tokenizer is None:
        raise TypeError("tokenizer is required when policy is a module: pass its tokenizer")
    if isinstance(tokenizer, (str, Path)):
        tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
    return policy, tokenizer


def _resolve_reference(
    reference: torch.nn.Module | str | Path | None,
    policy: torch.nn.Module,
    trust_remote_code: bool,
) -> torch.nn.Module:
    if reference is None:
        return frozen_copy(policy)
    if isinstance(reference, (str, Path)):
        device = device_of(policy)
        return load_causal_lm(reference, device=device, trust_remote_code=trust_remote_code)
    if not isinstance(reference, torch.nn.Module):
        raise TypeError(
            f"reference must be a causal LM module, a path, or None, got {type(reference).__name__}"
        )
    return reference


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The id used to left-pad observations: the pad token, else the EOS token."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError(
        f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; give it one, "
        "e.g. tokenizer.add_special_tokens({'eos_token': '</s>'}) then "
        "model.resize_token_embeddings(len(tokenizer)), or use rlhf_env.models.load_tokenizer"
    )


def _eos_ids(
    tokenizer: PreTrainedTokenizerBase,
    policy: torch.nn.Module,
    eos_token_ids: Iterable[int] | None,
) -> frozenset[int]:
    """Token ids that terminate an episode."""
    if eos_token_ids is not None:
        return frozenset(int(i) for i in eos_token_ids)
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    generation_eos = getattr(getattr(policy, "generation_config", None), "eos_token_id", None)
    if isinstance(generation_eos, int):
        ids.add(generation_eos)
    elif generation_eos is not None:
        ids.update(int(i) for i in generation_eos)
    return frozenset(ids)


def _check_position_limit(policy: torch.nn.Module, settings: EnvConfig) -> None:
    config = getattr(policy, "config", None)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if limit is not None and settings.context_length > limit:
        parts = "max_total_tokens" if settings.dialogue else "max_new_tokens"
        raise ValueError(
            f"max_prompt_tokens + {parts} = {settings.context_length} exceeds the policy's "
            f"{limit} positions; lower one of them"
        )
