"""The single-episode text-generation environment: RLHF as a Gymnasium ``Env``."""

from __future__ import annotations

import textwrap
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlhf_env.config import EnvConfig, options_table
from rlhf_env.dialogue.conversation import Conversation
from rlhf_env.env_core import GenerationEnvBase
from rlhf_env.episodes import EpisodeBatch

ObsType = dict[str, np.ndarray]


class TextGenerationEnv(GenerationEnvBase, gym.Env[ObsType, int]):
    """Generate one response to a prompt, token by token, for a learned reward minus a KL penalty.

    ## Description

    An episode is one response. ``reset()`` draws a prompt; each ``step(token_id)`` appends one
    token chosen by the agent. The policy being trained is a causal LM; the environment holds it
    by reference and reads it under ``torch.no_grad()`` to price each token against a frozen
    ``reference`` model (the KL penalty of InstructGPT), and scores the finished response with
    ``reward_fn``. Policy and reference keep KV caches, so a step costs one single-token forward
    of each model, not a re-encoding of the context.

    ## Action Space

    ``Discrete(V)``: the id of the next token, with ``V`` the policy's vocabulary size (rows of
    its output layer, which may exceed ``len(tokenizer)``).

    ## Observation Space

    ``Dict`` of two arrays of length ``L = max_prompt_tokens + max_new_tokens`` (in dialogue
    mode ``max_prompt_tokens + max_total_tokens``), left-padded
    (the context is right-aligned; padding sits on the left):

    | key              | space                      | content                                  |
    |------------------|----------------------------|------------------------------------------|
    | ``input_ids``    | ``Box(0, V-1, (L,), int64)`` | pad ids, then prompt and response ids  |
    | ``attention_mask`` | ``Box(0, 1, (L,), int64)`` | 0 on padding, 1 on the context         |

    ## Rewards

    For the token ``a_t`` taken at step ``t`` (``beta = kl_coef``)::

        r_t = -beta * KL_t                                   every step
        r_T = reward_fn([prompt], [response])[0] - beta * KL_T   on the last step
              - missing_eos_penalty                           if it was cut (no EOS)

    ``KL_t`` is estimated from the policy's and the reference's next-token distributions at the
    context before ``a_t`` (``kl_estimator``: ``"k1"`` = log pi(a_t) - log pi_ref(a_t), the
    default; ``"k3"``; ``"full"`` = the exact KL of the two distributions; see
    :mod:`rlhf_env.kl`). The episode's return is therefore ``score - beta * sum_t KL_t``.

    ``info`` on every step: ``kl`` (``KL_t``), ``policy_logprob`` and ``ref_logprob`` (of
    ``a_t``). On the last step also ``score`` (the reward function's value) and ``response``
    (the decoded response, special tokens skipped). ``reset`` returns ``info["prompt"]``, the
    prompt text the policy sees.

    ## Starting State

    A prompt drawn with the env's seeded generator from ``prompts``, or given as
    ``reset(options={"prompt": "..."})``. A prompt longer than ``max_prompt_tokens`` tokens
    is cut from the left (its end, nearest the response, is kept) with a warning, once per env.

    ## Episode End

    - Termination: the agent emits an EOS token (the tokenizer's, plus any in the model's
      ``generation_config.eos_token_id``, or ``eos_token_ids`` when given).
    - Truncation: ``max_new_tokens`` tokens were generated.
    - Dialogues (``max_turns``): see Dialogue.

    ## Dialogue

    With ``max_turns=N`` an episode is a conversation of up to ``N`` assistant turns, the
    actions being the assistant's tokens. Prompts are then conversation scripts
    (:class:`rlhf_env.dialogue.DialogueScript`, a raw HH-RLHF conversation, a list of user
    turns or chat messages); the first observation is the policy's chat template applied to the
    first user turn, with the assistant header. When the agent ends a turn (the template's
    end-of-turn token, or EOS) the env appends, in the same step, the rest of the template's
    turn ending, the next user turn and the assistant header as observation tokens: the chat
    template applied incrementally, never re-encoding the context (the ids trained on are the
    ids sampled; see :mod:`rlhf_env.dialogue.template` for when they equal the template applied
    to the whole conversation). The next user turn is the script's, then ``user_fn(messages)``
    's (e.g. :class:`rlhf_env.dialogue.users.LanguageModelUser`); without one the conversation
    ends. The episode terminates after the last turn (or when no user turn follows) and is
    truncated at ``max_new_tokens`` tokens of a turn or ``max_total_tokens`` tokens after the
    first prompt (a user turn that does not fit ends it, with a warning once). With
    ``turn_cut="end_turn"`` a turn cut at ``max_new_tokens`` is closed by the env instead (it
    inserts the end-of-turn token before the user turn) and the conversation goes on;
    ``missing_eos_penalty`` is paid for every cut turn.

    Rewards: ``-beta * KL_t`` on every assistant token; ``reward_fn(transcripts, turns)`` at the
    end of every turn (``turn_rewards="turn"``) or of the last one (``"end"``), where the
    prompt is the conversation before the turn in HH's ``"\n\nHuman: ...\n\nAssistant:"``
    form (:func:`rlhf_env.dialogue.transcript`). Inserted tokens carry no KL, no action and no
    log-prob; ``info`` marks them (``inserted_ids``, ``user_turn``) and adds ``turn``,
    ``turn_score``, and at the end ``turn_scores`` and ``conversation`` (see
    :func:`rlhf_env.dialogue.info.dialogue_info`). The observation holds
    ``max_prompt_tokens + max_total_tokens`` tokens.

    A prompt may be an episode of a turn-level text env (TextArena, reasoning-gym:
    :class:`rlhf_env.dialogue.turn_level.TurnLevelEpisode`): its observations are the user
    turns (its reset's ``info["system_prompt"]`` the system message), each finished assistant
    turn is decoded and passed to its ``step``, whose reward is the turn's score (no
    ``reward_fn`` call) and whose ends end the episode; the final ``info["outcome"]`` holds the
    figures it reported (:mod:`rlhf_env.dialogue.turn_level`).

    ## Fast Path

    ``env.policy_logits`` is the policy's next-token logits (a float32 tensor of shape ``(V,)``)
    for the current observation, valid after ``reset`` and after every non-final ``step``
    (updated in place by the next step: clone it to keep it). An agent that samples from it
    needs no policy forward of its own. ``env.engine`` is the engine that steps policy and
    reference (:class:`rlhf_env.engine.StaticEngine` or :class:`~rlhf_env.engine.DynamicEngine`;
    ``env.engine.compiled`` says whether its step is compiled).

    ## Arguments

    Positional (or by keyword):

    - ``policy``: a causal LM module (the one being trained) or a hub name, folder or ``.gguf``.
    - ``tokenizer``: its tokenizer, or a name/path; defaults to ``policy``'s when that is a path.
      Observations are padded with its pad token (its EOS token when it has none).
    - ``reward_fn``: ``reward_fn(prompts: list[str], responses: list[str]) -> list[float]``;
      ``None`` in dialogue mode when the prompts are turn-level episodes (their env pays).
    - ``prompts``: a list of strings, a ``datasets`` column, or a callable returning a prompt
      (given the env's ``numpy.random.Generator`` if it takes one argument).
    - ``reference``: the frozen reference; ``None`` = a frozen copy of ``policy``. Passing the
      policy itself gives KL = 0.

    By keyword, the fields of :class:`rlhf_env.config.EnvConfig` (or a whole one as
    ``config=``, keywords overriding its fields):

    {options}

    ``env.config`` holds the validated settings; ``env.device`` is where the env computes.

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": list(EnvConfig.render_modes()), "render_fps": 4}

    def _setup(self) -> None:
        self.action_space = self._core.action_space()
        self.observation_space = self._core.observation_space()
        self._episodes = EpisodeBatch(self._core, self.engine, num_rows=1)
        self._started = False

    @property
    def policy_logits(self) -> torch.Tensor | None:
        """The policy's next-token logits ``(V,)`` float32 for the current observation (see
        Fast Path), ``None`` before ``reset``."""
        return self.engine.policy_logits[0] if self._started else None

    @property
    def conversation(self) -> Conversation | None:
        """Dialogue mode: the current episode's conversation (its messages, turn and turn
        scores so far); ``None`` otherwise or before ``reset``."""
        return self._episodes.conversations[0]

    # -- Gymnasium API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[ObsType, dict[str, Any]]:
        """Start an episode on a drawn prompt, or on ``options["prompt"]``."""
        super().reset(seed=seed)
        options = options or {}
        prompt = options.get("prompt")
        if prompt is None:
            prompt = self._core.prompt_source.sample(self.np_random)
        started = self._core.start_episode(prompt)
        self._episodes.start(_ROW, [started])
        self._started = True
        if self.render_mode == "human":
            self.render()
        return self._episodes.observation(0), {"prompt": started[1]}

    def step(self, action: Any) -> tuple[ObsType, float, bool, bool, dict[str, Any]]:
        """Append token ``action``; returns ``(obs, reward, terminated, truncated, info)``."""
        actions = self._core.check_actions(action, count=1)
        if not self._started:
            raise RuntimeError("step() called before reset(); call env.reset() first")
        if self._episodes.ended[0]:
            raise RuntimeError(
                "step() called after the episode ended (terminated or truncated); "
                "call env.reset() to start a new episode"
            )
        plan = self._episodes.plan(actions, _ACTING, labels=["the episode"])
        result = self._episodes.advance(plan)
        terminated, truncated = bool(plan.terminations[0]), bool(plan.truncations[0])
        info = result.row_info(0, finished=terminated or truncated)
        if self.render_mode == "human":
            self.render()
        return (
            self._episodes.observation(0),
            float(result.rewards[0]),
            terminated,
            truncated,
            info,
        )

    def render(self) -> str | None:
        """``"ansi"``: return the prompt and the response so far; ``"human"``: print them."""
        if self.render_mode is None:
            gym.logger.warn(
                "render() called without a render_mode; pass render_mode='ansi' or 'human' "
                "to the constructor"
            )
            return None
        episodes = self._episodes
        status = "done" if episodes.ended[0] and self._started else "generating"
        conversation = episodes.conversations[0]
        if conversation is not None:
            turns = [f"{m['role']}: {m['content']!r}" for m in conversation.messages]
            text = "\n".join(
                [
                    *turns,
                    f"[turn {conversation.turn + 1}, {conversation.tokens}/"
                    f"{self.config.continuation_tokens} tokens, {status}]",
                ]
            )
        else:
            text = (
                f"prompt:   {episodes.prompts[0]!r}\n"
                f"response: {episodes.response_text(0)!r}\n"
                f"[{episodes.response_lengths[0]}/{self.max_new_tokens} tokens, {status}]"
            )
        if self.render_mode == "human":
            print(text)
            return None
        return text

    def close(self) -> None:
        """Release the KV caches."""
        self.engine.release()
        self._started = False
        self._episodes.ended[0] = True


#: The single env's one row, as the batch's row index and acting mask.
_ROW = np.zeros(1, dtype=np.int64)
_ACTING = np.ones(1, dtype=bool)


TextGenerationEnv.__doc__ = (TextGenerationEnv.__doc__ or "").replace(
    "    {options}", textwrap.indent(options_table(EnvConfig), "    ")
)
