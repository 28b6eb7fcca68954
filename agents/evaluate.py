"""Evaluation of a policy in every task of a multi-task vector env.

Each slot contributes the same number of episodes (its first ``ceil(episodes / E)``), so the mean is
not biased toward short episodes the way "the first n episodes to finish" would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from agents.rollout import obs_to_tensor


def evaluate(
    env,
    policy: Callable[[Tensor], Tensor],
    episodes: int,
    seed: int,
    device: torch.device,
    max_steps: int = 50_000,
) -> dict[str, dict[str, float | int | None]]:
    """Run ``policy`` (obs (K, E, *obs) -> actions (K, E)) until every task has its episodes.

    Returns ``{task: {"mean_return", "mean_length", "success_rate", "episodes"}}`` using raw
    (unclipped) returns; success means a positive return (the gridworld goal reward). Statistics
    are None for a task with no finished episode within ``max_steps``. Suites with human and
    random reference scores (Atari) add ``"human_normalised"`` of the mean return.
    """
    k, e = env.num_tasks, env.num_envs_per_task
    per_slot = max(1, math.ceil(episodes / e)) if episodes > 0 else 0
    done_count = np.zeros(env.num_envs, dtype=np.int64)
    returns: list[list[float]] = [[] for _ in range(k)]
    lengths: list[list[int]] = [[] for _ in range(k)]
    obs = env.reset(seed=seed)
    steps = 0
    while per_slot and (done_count < per_slot).any() and steps < max_steps:
        actions = policy(obs_to_tensor(obs, k, device)).reshape(-1).cpu().numpy()
        res = env.step(actions)
        obs = res.obs
        steps += 1
        for stat in res.episodes:
            if done_count[stat.slot] < per_slot:
                returns[stat.task].append(stat.ret)
                lengths[stat.task].append(stat.length)
            done_count[stat.slot] += 1
    normalise = getattr(env, "human_normalised", None)  # MultiTaskVecEnv; test doubles may lack it
    out: dict[str, dict[str, float | int | None]] = {}
    for t, name in enumerate(env.task_names):
        r = np.asarray(returns[t], dtype=np.float64)
        n = len(r)
        out[name] = {
            "mean_return": float(r.mean()) if n else None,
            "mean_length": float(np.mean(lengths[t])) if n else None,
            "success_rate": float((r > 0).mean()) if n else None,
            "episodes": n,
        }
        hns = normalise(t, float(r.mean())) if n and normalise is not None else None
        if hns is not None:
            out[name]["human_normalised"] = hns
    return out
