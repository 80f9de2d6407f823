"""KL estimators between the policy and the reference, and KL-coefficient controllers.

Per generated token ``t`` with context ``x_<t`` and sampled token ``a_t`` the environment pays
``-beta * KL_t``. Three estimators of the per-token KL(pi || pi_ref) are offered:

==========  ===============================================================  =====================
name        formula                                                          properties
==========  ===============================================================  =====================
``k1``      ``log pi(a_t) - log pi_ref(a_t)``                                unbiased, can be < 0
``k3``      ``(r - 1) - log r`` with ``r = pi_ref(a_t) / pi(a_t)``           unbiased, >= 0
``full``    ``sum_v pi(v) (log pi(v) - log pi_ref(v))``                      exact, >= 0
==========  ===============================================================  =====================

``k1`` is the InstructGPT / TRL form and the default. ``k3`` is Schulman's low-variance estimator.
``full`` is the exact KL between the two next-token distributions, which the environment can
afford because it holds both full distributions anyway.

The controllers set ``beta``: :class:`FixedKLController` keeps it constant;
:class:`AdaptiveKLController` is the proportional controller of Ziegler et al. (2019).
"""

from __future__ import annotations

from typing import Literal

import torch

KLEstimator = Literal["k1", "k3", "full"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k3", "full")


def kl_k1(policy_logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """``log pi(a) - log pi_ref(a)`` for the taken tokens; inputs and output are ``(B,)``."""
    return policy_logprob - ref_logprob


def kl_k3(policy_logprob: torch.Tensor, ref_logprob: torch.Tensor) -> torch.Tensor:
    """``(r - 1) - log r`` with ``log r = log pi_ref(a) - log pi(a)``; non-negative, ``(B,)``."""
    log_ratio = ref_logprob - policy_logprob
    return torch.expm1(log_ratio) - log_ratio


def kl_full(policy_logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Exact ``KL(pi || pi_ref)`` from full log-distributions ``(B, V)``; returns ``(B,)``."""
    policy_probs = policy_logprobs.exp()  # (B, V)
    # xlogy-style guard: where pi(v) == 0 the term is 0 even if pi_ref(v) == 0 too.
    terms = torch.where(policy_probs > 0, policy_probs * (policy_logprobs - ref_logprobs), 0.0)
    return terms.sum(dim=-1)


def estimate_kl(
    estimator: KLEstimator,
    policy_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    actions: torch.Tensor,
) -> torch.Tensor:
    """Per-token KL for a batch.

    Args:
        estimator: ``"k1"``, ``"k3"`` or ``"full"``.
        policy_logprobs: ``(B, V)`` log-softmax of the policy's next-token logits.
        ref_logprobs: ``(B, V)`` log-softmax of the reference's next-token logits.
        actions: ``(B,)`` int64 token ids taken.

    Returns:
        ``(B,)`` float tensor of KL estimates.
    """
    if estimator == "full":
        return kl_full(policy_logprobs, ref_logprobs)
    index = actions.unsqueeze(-1)  # (B, 1)
    taken_policy = policy_logprobs.gather(-1, index).squeeze(-1)  # (B,)
    taken_ref = ref_logprobs.gather(-1, index).squeeze(-1)  # (B,)
    if estimator == "k1":
        return kl_k1(taken_policy, taken_ref)
    if estimator == "k3":
        return kl_k3(taken_policy, taken_ref)
    raise ValueError(f"unknown kl_estimator {estimator!r}; choose one of {KL_ESTIMATORS}")


def kl_and_logprobs(
    estimator: KLEstimator,
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    actions: torch.Tensor,
) -> torch.Tensor:
    """``(3, B)``: per-token KL, ``log pi(a)`` and ``log pi_ref(a)`` of the taken tokens.

    Args:
        estimator: ``"k1"``, ``"k3"`` or ``"full"``.
        policy_logits: ``(B, V)`` next-token logits of the policy.
        ref_logits: ``(B, V)`` next-token logits of the reference.
        actions: ``(B,)`` int64 token ids taken.
    """
    policy_logprobs = torch.log_softmax(policy_logits, dim=-1)  # (B, V)
    ref_logprobs = torch.log_softmax(ref_logits, dim=-1)  # (B, V)
    kl = estimate_kl(estimator, policy_logprobs, ref_logprobs, actions)  # (B,)
    index = actions.unsqueeze(-1)  # (B, 1)
    return torch.stack(
        [kl, policy_logprobs.gather(-1, index)[:, 0], ref_logprobs.gather(-1, index)[:, 0]]
    )


def check_kl_estimator(estimator: str) -> KLEstimator:
    """Return ``estimator`` if it is a known estimator name, else raise a ``ValueError``."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown kl_estimator {estimator!r}; choose one of {KL_ESTIMATORS}")
    return estimator  # type: ignore[return-value]


class FixedKLController:
    """Keeps the KL coefficient ``beta`` constant.

    Example:
        >>> controller = FixedKLController(0.05)
        >>> controller.update(current_kl=3.0, n_steps=256)
        0.05
    """

    def __init__(self, kl_coef: float) -> None:
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}; use 0 to disable the penalty")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Does nothing; returns ``beta``. Present so both controllers share one interface."""
        return self.value

    def state_dict(self) -> dict[str, float]:
        """The controller's state, for checkpoints."""
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional control of ``beta`` toward a target KL (Ziegler et al. 2019, eq. 2).

    After each rollout with mean per-sequence KL ``kl`` over ``n_steps`` samples::

        error = clip(kl / target - 1, -0.2, 0.2)
        beta  = beta * (1 + error * n_steps / horizon)

    so ``beta`` grows when the policy drifts further than ``target`` nats and shrinks when it
    stays closer.

    Args:
        init_kl_coef: starting ``beta``.
        target: KL (nats per sequence) to steer toward.
        horizon: time constant in samples; larger means slower adaptation.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int = 10_000) -> None:
        if not init_kl_coef > 0:
            raise ValueError(
                f"init_kl_coef must be > 0 for the adaptive controller, got {init_kl_coef}; "
                "a zero coefficient can never grow (use FixedKLController(0) for no penalty)"
            )
        if not target > 0:
            raise ValueError(f"target KL must be > 0 nats, got {target}; typical values are 1-10")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0 samples, got {horizon}; the paper uses 10000")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Step the controller with the last rollout's mean KL; returns the new ``beta``."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict[str, float]:
        """The controller's state, for checkpoints."""
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the state returned by :meth:`state_dict`."""
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
