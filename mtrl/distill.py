"""Policy distillation losses and the Distral regularised reward.

Distral (Teh et al. 2017, "Distral: Robust Multitask Reinforcement Learning", arXiv:1707.04175)
trains task policies pi_i on R_i + (alpha/beta) log pi0 - (1/beta) log pi_i and distils them into a
shared policy pi0 by maximum likelihood, i.e. pi0 minimises KL(pi_i || pi0). All functions take
unnormalised action logits of shape ``(B, A)`` and work in log space (``log_softmax``) for stability.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def kl_divergence(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p || q) per state from logits ``(B, A)`` -> ``(B,)``.

    Computed as sum_a p(a) (log p(a) - log q(a)) with ``log_softmax``, so it is finite even when
    probabilities underflow. Gradients flow into both arguments.
    """
    log_p = F.log_softmax(p_logits, dim=-1)
    log_q = F.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * _where_possible(log_p, log_p - log_q)).sum(dim=-1)


def _where_possible(log_p: Tensor, x: Tensor) -> Tensor:
    """``x`` where ``p > 0``, else 0: the convention ``0 log 0 = 0`` for masked actions (logits
    -inf), whose ``0 * (-inf)`` would otherwise turn the sum and its gradient into NaN."""
    return torch.where(log_p > -math.inf, x, torch.zeros_like(x))


def entropy(logits: Tensor) -> Tensor:
    """Entropy H(pi) = -sum_a pi(a) log pi(a) of the softmax policy, ``(B, A)`` -> ``(B,)``."""
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * _where_possible(log_p, log_p)).sum(dim=-1)


def log_prob(logits: Tensor, actions: Tensor) -> Tensor:
    """log pi(a_b | s_b) of the taken actions: logits ``(B, A)``, actions ``(B,)`` -> ``(B,)``."""
    log_p = F.log_softmax(logits, dim=-1)
    return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Cross-entropy of the student under the teacher's full action distribution.

    Per state: ``-sum_a pi_T(a|s) log pi_S(a|s)`` with the teacher detached, so its gradient wrt the
    student logits is ``softmax(student) - softmax(teacher)``: the exact (full-distribution) Distral
    distillation gradient for pi0 (Teh et al. 2017, Sec. 2.2), which minimises KL(teacher || student).

    Args:
        student_logits: ``(B, A)``, e.g. pi0's logits h0(s).
        teacher_logits: ``(B, A)``, e.g. the task policy pi_i's logits (no gradient flows into them).
        weights: optional ``(B,)`` per-sample weights, e.g. gamma^t for Distral's discounted term.
        reduction: ``"mean"`` (sum of weighted terms / B), ``"sum"`` or ``"none"`` (``(B,)``).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r}; valid: {', '.join(_REDUCTIONS)}")
    teacher_p = F.softmax(teacher_logits.detach(), dim=-1)
    student_log_p = F.log_softmax(student_logits, dim=-1)
    # 0 log 0 = 0 where the teacher masks an action (_where_possible); the same values otherwise
    student_log_p = torch.where(teacher_p > 0, student_log_p, torch.zeros_like(student_log_p))
    per_state = -(teacher_p * student_log_p).sum(dim=-1)
    if weights is not None:
        per_state = per_state * weights
    if reduction == "mean":
        return per_state.mean()
    if reduction == "sum":
        return per_state.sum()
    return per_state


def _check_alpha_beta(alpha: float, beta: float) -> None:
    if not 0.0 < float(alpha) <= 1.0:
        raise ValueError(f"Distral alpha={alpha!r} must lie in (0, 1]")
    if not 0.0 < float(beta) < math.inf:
        raise ValueError(f"Distral beta={beta!r} must be finite and > 0")


def distral_regularised_reward(
    reward: Tensor, log_pi0_a: Tensor, log_pi_a: Tensor, alpha: float, beta: float
) -> Tensor:
    """Distral's regularised reward ``r + (alpha/beta) log pi0(a|s) - (1/beta) log pi_i(a|s)``.

    Elementwise over tensors of one shape (e.g. ``(T, N)`` rollouts); Teh et al. 2017, Eq. 2. Pass
    detached log-probabilities when the result is used as a return target.
    """
    _check_alpha_beta(alpha, beta)
    return reward + (alpha / beta) * log_pi0_a - (1.0 / beta) * log_pi_a


def distral_coefficients(c_kl: float, c_ent: float) -> tuple[float, float]:
    """Map Distral's costs to ``(alpha, beta)``: alpha = c_KL/(c_KL+c_Ent), beta = 1/(c_KL+c_Ent).

    Teh et al. 2017, Eq. 1-2. Requires c_KL > 0 and c_Ent >= 0 so that alpha lies in (0, 1].
    """
    if not 0.0 < float(c_kl) < math.inf:
        raise ValueError(f"Distral c_kl={c_kl!r} must be finite and > 0")
    if not 0.0 <= float(c_ent) < math.inf:
        raise ValueError(f"Distral c_ent={c_ent!r} must be finite and >= 0")
    total = float(c_kl) + float(c_ent)
    return float(c_kl) / total, 1.0 / total


def distral_costs(alpha: float, beta: float) -> tuple[float, float]:
    """Inverse of :func:`distral_coefficients`: ``(c_kl, c_ent) = (alpha/beta, (1-alpha)/beta)``."""
    _check_alpha_beta(alpha, beta)
    return float(alpha) / float(beta), (1.0 - float(alpha)) / float(beta)
