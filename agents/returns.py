"""n-step returns and GAE with termination and truncation kept apart.

A terminated step ends the return (the next state has value 0); a truncated step bootstraps from the
value of the episode's final observation, not from the next (already reset) observation. With
``lam = 1`` GAE reduces to the n-step returns of A2C (Mnih et al. 2016), bootstrapped from
``last_values`` at the end of the rollout.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gae(
    rewards: Tensor,
    values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    final_values: Tensor,
    last_values: Tensor,
    gamma: float,
    lam: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over a (T, N) rollout.

    - ``rewards``, ``values`` (T, N): reward of step t and V(s_t) (detached).
    - ``terminated``, ``truncated`` (T, N) bool: how step t ended its episode, if it did.
    - ``final_values`` (T, N): V(final observation) where ``truncated`` (not read elsewhere).
    - ``last_values`` (N,): V(s_T), the observation after the rollout.
    Returns ``(advantages, returns)``, both (T, N), with ``returns = advantages + values``.
    """
    num_steps = rewards.shape[0]
    # Termination wins when both flags are set (gymnasium semantics): no bootstrap then.
    trunc = truncated & ~terminated
    done = terminated | truncated
    zero = rewards.new_zeros(())
    advantages = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(last_values)
    next_value = last_values
    for t in reversed(range(num_steps)):
        # Value of what follows step t inside the same episode: 0 on termination, V(final obs) on
        # truncation, otherwise V(s_{t+1}). Selected, not multiplied by 0/1 masks, so a value
        # that does not apply (e.g. a non-finite V(final obs) of an untruncated slot) cannot leak.
        follow = torch.where(trunc[t], final_values[t], torch.where(done[t], zero, next_value))
        delta = rewards[t] + gamma * follow - values[t]
        next_adv = delta + gamma * lam * torch.where(done[t], zero, next_adv)
        advantages[t] = next_adv
        next_value = values[t]
    return advantages, advantages + values


def nstep_returns(
    rewards: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    final_values: Tensor,
    last_values: Tensor,
    gamma: float,
) -> Tensor:
    """Discounted n-step returns (T, N): R_t = r_t + gamma * (0 | V(final) | R_{t+1}).

    Same arguments as :func:`gae`; equals ``gae(..., lam=1)[1]`` for any ``values``.
    """
    returns = torch.zeros_like(rewards)
    zero = rewards.new_zeros(())
    next_ret = last_values
    for t in reversed(range(rewards.shape[0])):
        trunc = truncated[t] & ~terminated[t]
        done = terminated[t] | truncated[t]
        follow = torch.where(trunc, final_values[t], torch.where(done, zero, next_ret))
        next_ret = rewards[t] + gamma * follow
        returns[t] = next_ret
    return returns
