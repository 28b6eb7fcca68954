"""Preallocated on-device rollout storage: the one numpy -> torch boundary of training.

Environment outputs (numpy, slot-major N = K*E) are copied into (T, K, E) tensors on the device
once per step, and observations (kept in their env dtype, uint8 for pixels) into a task-major
(K, T+1, E, *obs) buffer. Acting runs without autograd; the loss then makes one batched backward
pass over the T*E observations of every task, reusing the acting passes' activations instead of
a second forward (agents.replay; s_T only needs a value, without a graph). On a CPU one large
backward beats keeping the graphs of T small acting passes (28 ms vs 34 ms for the Nature CNN on
80 frames, forward included).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


class Rollout:
    """(T, K, E) buffers for one n-step rollout of K tasks x E envs per task."""

    def __init__(
        self,
        num_steps: int,
        num_tasks: int,
        envs_per_task: int,
        device: torch.device,
        obs_shape: tuple[int, ...] = (),
        obs_dtype: torch.dtype = torch.float32,
    ):
        shape = (num_steps, num_tasks, envs_per_task)
        self.num_steps, self.device = num_steps, device
        # obs[:, t] is s_t for t = 0..T (s_T bootstraps the last step).
        self.obs = torch.zeros(
            (num_tasks, num_steps + 1, envs_per_task, *obs_shape), dtype=obs_dtype, device=device
        )
        self.rewards = torch.zeros(shape, device=device)
        self.terminated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.truncated = torch.zeros(shape, dtype=torch.bool, device=device)
        self.final_values = torch.zeros(shape, device=device)
        self.actions = torch.zeros(shape, dtype=torch.long, device=device)
        # Step index of s_t inside its episode (for Distral's gamma^t distillation weights).
        self.ep_time = torch.zeros(shape, device=device)
        # Rewards the agent actually learned from, if not the env's (Distral's regularised ones).
        self.learning_rewards: Tensor | None = None

    def clear(self) -> None:
        """Forget per-rollout extras (buffers are overwritten in place)."""
        self.learning_rewards = None

    def step_obs(self) -> Tensor:
        """Observations s_0..s_{T-1} as one task-major batch (K, T*E, *obs) (a view)."""
        k, t1, e = self.obs.shape[:3]
        return self.obs[:, : t1 - 1].reshape(k, (t1 - 1) * e, *self.obs.shape[3:])

    def last_obs(self) -> Tensor:
        """s_T (K, E, *obs): the observation that bootstraps the last step."""
        return self.obs[:, -1]

    def unflatten(self, x: Tensor) -> Tensor:
        """A (K, T*E, ...) network output as (T, K, E, ...)."""
        k, t1, e = self.obs.shape[:3]
        return x.view(k, t1 - 1, e, *x.shape[2:]).transpose(0, 1)

    def insert_env(
        self,
        t: int,
        tasks: slice,
        reward: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
    ) -> None:
        """Copy step t's env results (numpy, (n,) for the slots of ``tasks``) into (k, E) slices.

        The copies do not wait for the device (``non_blocking``, as :func:`obs_to_tensor`'s): an
        assignment ``gpu[i] = host`` synchronises the CUDA stream, three times per step. The
        sources are pageable, so each copy has read its source when it returns."""
        e = self.rewards.shape[2]
        for dst, src in (
            (self.rewards, np.asarray(reward, dtype=np.float32)),
            (self.terminated, np.asarray(terminated, dtype=bool)),
            (self.truncated, np.asarray(truncated, dtype=bool)),
        ):
            dst[t, tasks].copy_(torch.from_numpy(src).view(-1, e), non_blocking=True)
        self.final_values[t, tasks] = 0.0


def obs_to_tensor(obs: np.ndarray, num_tasks: int, device: torch.device) -> Tensor:
    """(N, *obs) numpy -> (K, E, *obs) tensor on ``device``, keeping the dtype (uint8 stays)."""
    t = torch.from_numpy(np.ascontiguousarray(obs))
    t = t.to(device, non_blocking=True) if t.device != device else t
    return t.view(num_tasks, -1, *t.shape[1:])
