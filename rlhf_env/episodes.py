"""A batch of episodes and the one step that advances it.

Both environments keep their episodes in an :class:`EpisodeBatch`: the single env is a batch of
one, the vector env a batch of ``num_envs``. A step is planned first (:meth:`EpisodeBatch.plan`:
which episodes end, which responses or turns are scored, and their scores) without changing any
state, so a failing reward function leaves the env as it was; then applied
(:meth:`EpisodeBatch.advance`: the engine's step, the user turns inserted, the rewards, the
observations and conversations). The reward of a step is computed here and nowhere else::

    r_t = -beta * KL_t + score (when the response or turn is scored) - missing_eos_penalty (if cut)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from rlhf_env.dialogue.conversation import Conversation, TurnOutcome
from rlhf_env.dialogue.info import dialogue_info
from rlhf_env.engine import TokenEngine
from rlhf_env.env_core import EnvCore
from rlhf_env.rewards.base import score_responses

#: An episode's first observation: its token ids, its text and (dialogue mode) its conversation.
Started = tuple[list[int], str, Conversation | None]


@dataclasses.dataclass
class StepPlan:
    """What a step will do, worked out before any state changes.

    Attributes:
        actions: the token of every row (ignored where ``acting`` is False).
        acting: the rows that take their action (the others wait for a reset).
        terminations, truncations: the episodes that end with this step.
        cut: responses or turns cut without EOS (they pay ``missing_eos_penalty``).
        scored_rows: the rows whose response or turn is scored, and ``scores`` their scores
            (the reward function's, then a turn-level env's rewards for the turns it answered).
        score_texts: the responses or turns the reward function scored (the first of
            ``scored_rows``).
        responses, response_lengths: single-response mode: every row's response after the step.
        inserted, outcomes: dialogue mode: the ids inserted after a row's token, and what the
            token does to the row's conversation.
    """

    actions: np.ndarray  # (N,) int
    acting: np.ndarray  # (N,) bool
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    cut: np.ndarray  # (N,) bool
    scored_rows: np.ndarray  # (k,) int
    scores: np.ndarray  # (k,) float
    score_texts: list[str]
    responses: np.ndarray | None = None  # (N, max_new_tokens)
    response_lengths: np.ndarray | None = None  # (N,)
    inserted: dict[int, list[int]] = dataclasses.field(default_factory=dict)
    outcomes: dict[int, TurnOutcome] = dataclasses.field(default_factory=dict)

    @property
    def finished(self) -> np.ndarray:
        """The rows whose episode ends with this step."""
        return self.terminations | self.truncations


@dataclasses.dataclass
class StepResult:
    """What a step did, by row.

    Attributes:
        rewards: every row's reward (0 where it did not act).
        kl, policy_logprob, ref_logprob: of the acting rows' tokens (0 elsewhere).
        scores, responses: single-response mode, the rows whose episode ended: the reward
            function's score and the decoded response (0 and None elsewhere).
        dialogue_infos: dialogue mode, the acting rows' dialogue entries
            (:func:`rlhf_env.dialogue.info.dialogue_info`).
    """

    rewards: np.ndarray
    kl: np.ndarray
    policy_logprob: np.ndarray
    ref_logprob: np.ndarray
    scores: np.ndarray
    responses: np.ndarray  # object
    dialogue_infos: dict[int, dict[str, Any]]

    def row_info(self, row: int, finished: bool) -> dict[str, Any]:
        """The single env's ``info`` for ``row``: ``kl``, ``policy_logprob``, ``ref_logprob``,
        then ``score`` and ``response`` when its episode ended, or the dialogue entries."""
        info: dict[str, Any] = {
            "kl": float(self.kl[row]),
            "policy_logprob": float(self.policy_logprob[row]),
            "ref_logprob": float(self.ref_logprob[row]),
        }
        if row in self.dialogue_infos:
            info.update(self.dialogue_infos[row])
        elif finished:
            info.update(score=float(self.scores[row]), response=self.responses[row])
        return info


class EpisodeBatch:
    """``num_rows`` episodes of one env: their observations, responses or conversations, and
    the step that advances them (one engine step for all rows).

    Args:
        core: the env's resolved objects and rules.
        engine: the engine that steps the policy and the reference, with ``num_rows`` rows.
        num_rows: episodes in the batch.
    """

    def __init__(self, core: EnvCore, engine: TokenEngine, num_rows: int) -> None:
        self.core = core
        self.engine = engine
        self.num_rows = n = num_rows
        config = core.config
        length = config.context_length
        self.eos_ids = np.array(sorted(core.eos_token_ids), dtype=np.int64)
        self.input_ids = np.full((n, length), core.pad_token_id, dtype=np.int64)
        self.attention_mask = np.zeros((n, length), dtype=np.int64)
        self.responses = np.zeros((n, config.max_new_tokens), dtype=np.int64)
        #: Single-response mode: each row's response length (a dialogue's count is its
        #: conversation's ``tokens``).
        self.response_lengths = np.zeros(n, dtype=np.int64)
        self.prompts: list[str] = [""] * n
        self.conversations: list[Conversation | None] = [None] * n
        #: Episodes that are over (awaiting a reset).
        self.ended = np.zeros(n, dtype=bool)

    # -- starting episodes ---------------------------------------------------------------------

    def start(self, rows: np.ndarray, started: list[Started]) -> None:
        """Start ``rows`` on their first observations (their engine rows too)."""
        width = max(len(ids) for ids, _, _ in started)
        input_ids = np.full((rows.size, width), self.core.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((rows.size, width), dtype=np.int64)
        for i, (ids, _, _) in enumerate(started):
            input_ids[i, width - len(ids) :] = ids
            attention_mask[i, width - len(ids) :] = 1
        self.engine.start(rows, torch.from_numpy(input_ids), torch.from_numpy(attention_mask))

        length = self.core.config.context_length
        self.input_ids[rows] = self.core.pad_token_id
        self.attention_mask[rows] = 0
        self.input_ids[rows, length - width :] = input_ids
        self.attention_mask[rows, length - width :] = attention_mask
        self.response_lengths[rows] = 0
        self.ended[rows] = False
        for row, (_, text, conversation) in zip(rows, started, strict=True):
            self.prompts[row] = text
            self.conversations[row] = conversation

    # -- a step: plan, then advance ------------------------------------------------------------

    def plan(self, actions: np.ndarray, acting: np.ndarray, labels: list[str]) -> StepPlan:
        """What ``actions`` do to the ``acting`` rows, and the scores of the responses or turns
        they finish (``labels[row]`` names a row in a failing reward's error). Changes no state."""
        if self.core.dialogue is None:
            plan = self._plan_responses(actions, acting)
        else:
            plan = self._plan_turns(actions, acting)
        if plan.scored_rows.size:
            if self.core.reward_fn is None:
                raise TypeError(
                    "this env has no reward_fn, so only turn-level episodes (whose env pays "
                    "each turn's reward) can play in it; a scripted conversation's turn needs "
                    "reward_fn(prompts, responses)"
                )
            plan.scores = score_responses(
                self.core.reward_fn,
                [self._score_prompt(plan, int(row)) for row in plan.scored_rows],
                plan.score_texts,
                labels=[labels[row] for row in plan.scored_rows],
            )
        paid = {row: o.env_score for row, o in plan.outcomes.items() if o.env_score is not None}
        if paid:  # turns a turn-level env answered: its reward is their score
            plan.scored_rows = np.concatenate([plan.scored_rows, np.fromiter(paid, np.int64)])
            plan.scores = np.concatenate([plan.scores, np.fromiter(paid.values(), float)])
        return plan

    def advance(self, plan: StepPlan) -> StepResult:
        """Apply ``plan``: the KL and log-probs of the acting rows' tokens, one forward of each
        model over the rows that go on, one batched append of the inserted user turns, then
        the rewards (beta and the penalty read from the env's config), observations and
        conversations."""
        acting, n = plan.acting, self.num_rows
        going_on = acting & ~plan.finished
        kl, policy_logprob, ref_logprob = self.engine.step(
            np.where(acting, plan.actions, 0), going_on
        )
        if plan.inserted:
            self._append_to_engine(plan.inserted)
        config = self.core.config
        rewards = np.where(acting, -config.kl_coef * kl, 0.0)
        rewards[plan.scored_rows] += plan.scores
        rewards[plan.cut] -= config.missing_eos_penalty

        self._append_to_obs(acting, plan.actions)
        scores = np.zeros(n)
        responses = np.full(n, None, dtype=object)
        dialogue_infos: dict[int, dict[str, Any]] = {}
        if self.core.dialogue is None:
            assert plan.responses is not None and plan.response_lengths is not None
            self.responses, self.response_lengths = plan.responses, plan.response_lengths
            scores[plan.scored_rows] = plan.scores
            for row, text in zip(plan.scored_rows, plan.score_texts, strict=True):
                responses[row] = text
        else:
            dialogue_infos = self._commit_turns(plan)
        self.ended |= plan.finished
        return StepResult(
            rewards, np.where(acting, kl, 0), np.where(acting, policy_logprob, 0),
            np.where(acting, ref_logprob, 0), scores, responses, dialogue_infos,
        )  # fmt: skip

    def observation(self, rows: int | slice = slice(None)) -> dict[str, np.ndarray]:
        """A copy of the observation of ``rows`` (a row index drops the batch axis)."""
        return {
            "input_ids": self.input_ids[rows].copy(),
            "attention_mask": self.attention_mask[rows].copy(),
        }

    def response_text(self, row: int) -> str:
        """Single-response mode: ``row``'s response so far (special tokens skipped)."""
        return self.core.decode_response(self.responses[row, : self.response_lengths[row]])

    # -- helpers -------------------------------------------------------------------------------

    def _score_prompt(self, plan: StepPlan, row: int) -> str:
        """The prompt the reward function gets with a scored row's text."""
        if self.core.dialogue is None:
            return self.prompts[row]
        return plan.outcomes[row].score_prompt or ""

    def _plan_responses(self, actions: np.ndarray, acting: np.ndarray) -> StepPlan:
        """Single-response episodes: which end with ``actions``, and their texts to score."""
        lengths = self.response_lengths + acting
        terminations = acting & np.isin(actions, self.eos_ids)
        truncations = acting & ~terminations & (lengths >= self.core.config.max_new_tokens)
        finished_rows = np.flatnonzero(terminations | truncations)
        responses = self.responses.copy()
        responses[acting, lengths[acting] - 1] = actions[acting]
        texts = [self.core.decode_response(responses[r, : lengths[r]]) for r in finished_rows]
        return StepPlan(
            actions, acting, terminations, truncations, truncations, finished_rows,
            np.zeros(finished_rows.size), texts, responses=responses, response_lengths=lengths,
        )  # fmt: skip

    def _plan_turns(self, actions: np.ndarray, acting: np.ndarray) -> StepPlan:
        """Dialogue episodes: what each acting row's token does to its conversation."""
        rules = self.core.dialogue
        assert rules is not None
        n = self.num_rows
        outcomes: dict[int, TurnOutcome] = {}
        for row in np.flatnonzero(acting):
            conversation = self.conversations[row]
            assert conversation is not None
            outcomes[int(row)] = rules.outcome(conversation, int(actions[row]))
        terminations = np.zeros(n, dtype=bool)
        truncations = np.zeros(n, dtype=bool)
        cut = np.zeros(n, dtype=bool)
        for row, outcome in outcomes.items():
            terminations[row], truncations[row] = outcome.terminated, outcome.truncated
            cut[row] = outcome.cut
        scored = [row for row, outcome in outcomes.items() if outcome.score_prompt is not None]
        return StepPlan(
            actions, acting, terminations, truncations, cut, np.asarray(scored, dtype=np.int64),
            np.zeros(len(scored)), [outcomes[row].turn_text for row in scored],
            inserted={row: o.inserted_ids for row, o in outcomes.items() if o.inserted_ids},
            outcomes=outcomes,
        )  # fmt: skip

    def _commit_turns(self, plan: StepPlan) -> dict[int, dict[str, Any]]:
        """Apply a dialogue step's outcomes to the conversations and observations; return the
        acting rows' dialogue entries."""
        rules = self.core.dialogue
        assert rules is not None
        score_of = dict(zip(plan.scored_rows.tolist(), plan.scores.tolist(), strict=True))
        per_row: dict[int, dict[str, Any]] = {}
        for row, outcome in plan.outcomes.items():
            conversation = self.conversations[row]
            assert conversation is not None
            score = score_of.get(row)
            rules.commit(conversation, outcome, score)
            if outcome.inserted_ids:
                self._append_ids_to_obs(row, outcome.inserted_ids)
            per_row[row] = dialogue_info(conversation, outcome, score, rules.turn_rewards == "turn")
        return per_row

    def _append_to_obs(self, rows: np.ndarray, actions: np.ndarray) -> None:
        """Shift the contexts of ``rows`` (bool mask) left by one and append their actions."""
        self.input_ids[rows, :-1] = self.input_ids[rows, 1:]
        self.input_ids[rows, -1] = actions[rows]
        self.attention_mask[rows, :-1] = self.attention_mask[rows, 1:]
        self.attention_mask[rows, -1] = 1

    def _append_ids_to_obs(self, row: int, ids: list[int]) -> None:
        """Shift the context of ``row`` left by ``len(ids)`` and append ``ids``."""
        k = len(ids)
        self.input_ids[row, :-k] = self.input_ids[row, k:]
        self.input_ids[row, -k:] = ids
        self.attention_mask[row, :-k] = self.attention_mask[row, k:]
        self.attention_mask[row, -k:] = 1

    def _append_to_engine(self, inserted: dict[int, list[int]]) -> None:
        """One batched, ragged, left-padded append of the inserted ids of their rows."""
        rows = np.asarray(sorted(inserted), dtype=np.int64)
        width = max(len(ids) for ids in inserted.values())
        input_ids = torch.full((rows.size, width), self.core.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((rows.size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids = inserted[int(row)]
            input_ids[i, width - len(ids) :] = torch.tensor(ids)
            attention_mask[i, width - len(ids) :] = 1
        self.engine.append(rows, input_ids, attention_mask)
