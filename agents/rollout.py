"""Preallocated on-device rollout storage: the one numpy -> torch boundary of training.

Environment outputs (numpy, slot-major N = K*E) are copied into (T, K, E) tensors on the device
once per step. The policy outputs of each step (log-probabilities, values, entropies, and whatever
else an agent records) keep their autograd graph: A2C's policy does not change during a rollout, so
the loss can use the forward pass made while acting instead of a second forward pass over the
rollout (the same gradients for a third less compute).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class Rollout:
    """(T, K, E) buffers for one n-step rollout of K tasks x E envs per task."""

    def __init__(self, num_steps: int, num_tasks: int, envs_per_task: int, device: torch.device):
        shape = (num_steps, num_tasks, envs_per_task)
        self.num_steps, self.device = num_steps, device
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.final_values = torch.zeros(shape, device=device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        # Step index of s_t inside its episode (for Distral's gamma^t distillation weights).
        self.ep_time = torch.zeros(shape, device=device)
        # Per-step outputs of the agent with their graphs: name -> list of (K, E) tensors.
        self.outputs: dict[str, list[Tensor]] = {}
        # Rewards the agent actually learned from, if not the env's (Distral's regularised ones).
        self.learning_rewards: Tensor | None = None

    def clear(self) -> None:
        """Drop the previous rollout's graphs (buffers are overwritten in place)."""
        self.outputs = {}
        self.learning_rewards = None

    def add_outputs(self, outputs: dict[str, Tensor]) -> None:
        """Record one step of agent outputs, each (K, E) (or (K, E, A))."""
        for name, value in outputs.items():
            self.outputs.setdefault(name, []).append(value)

    def stacked(self, name: str) -> Tensor:
        """The recorded output ``name`` stacked over steps: (T, K, E, ...)."""
        return torch.stack(self.outputs[name])

    def insert_env(
        self,
        t: int,
        actions: Tensor,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Copy step t's env results (numpy, (N,)) into the (K, E) slices."""
        k, e = self.rewards.shape[1:]
        self.actions[t] = actions
        self.rewards[t] = torch.from_numpy(np.asarray(reward, dtype=np.float32)).view(k, e)
        self.terminated[t] = torch.from_numpy(np.asarray(terminated, dtype=bool)).view(k, e)
        self.truncated[t] = torch.from_numpy(np.asarray(truncated, dtype=bool)).view(k, e)
        self.final_values[t].zero_()


def obs_to_tensor(obs: np.ndarray, num_tasks: int, device: torch.device) -> Tensor:
    """(N, *obs) numpy -> (K, E, *obs) tensor on ``device``, keeping the dtype (uint8 stays)."""
    t = torch.from_numpy(np.ascontiguousarray(obs))
    t = t.to(device, non_blocking=True) if t.device != device else t
    return t.view(num_tasks, -1, *t.shape[1:])
