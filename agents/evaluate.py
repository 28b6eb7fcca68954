"""Evaluation of a policy in every task of a multi-task vector env.

Episodes are taken round-robin over a task's slots (episode 1 of every slot, then episode 2, ...),
``episodes`` of them, so the mean is not biased toward short episodes the way "the first n
episodes to finish" would be. If ``max_steps`` ends the evaluation first, only the rounds every
slot of the task completed are used (and ``"max_steps_reached"`` is set); if some slot finished
no episode at all, the episodes that did finish are used, still at most ``episodes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from agents.config_schema import SEED_LIMIT
from agents.rollout import obs_to_tensor

if TYPE_CHECKING:
    from agents.runner import Runner
    from envs.base import MultiTaskVecEnv


def evaluate(
    env: MultiTaskVecEnv,
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
    done: list[list[tuple[float, int]]] = [[] for _ in range(env.num_envs)]  # per slot
    obs = env.reset(seed=seed)
    steps = 0
    while per_slot and min(len(d) for d in done) < per_slot and steps < max_steps:
        actions = policy(obs_to_tensor(obs, k, device)).reshape(-1).cpu().numpy()
        res = env.step(actions)
        obs = res.obs
        steps += 1
        for stat in res.episodes:
            if len(done[stat.slot]) < per_slot:
                done[stat.slot].append((stat.ret, stat.length))
    normalise = getattr(env, "human_normalised", None)  # MultiTaskVecEnv; test doubles may lack it
    out: dict[str, dict[str, float | int | None]] = {}
    for t, name in enumerate(env.task_names):
        slots = done[t * e : (t + 1) * e]
        rounds = min(len(d) for d in slots)
        if rounds:  # complete rounds only: which episodes count does not depend on their lengths
            picked = [d[j] for j in range(rounds) for d in slots][:episodes]
        else:  # some slot finished nothing: what finished, round-robin, at most ``episodes``
            # (may favour short episodes)
            most = max(len(d) for d in slots)
            picked = [d[j] for j in range(most) for d in slots if j < len(d)][:episodes]
        r = np.asarray([ret for ret, _ in picked], dtype=np.float64)
        n = len(r)
        out[name] = {
            "mean_return": float(r.mean()) if n else None,
            "mean_length": float(np.mean([length for _, length in picked])) if n else None,
            "success_rate": float((r > 0).mean()) if n else None,
            "episodes": n,
        }
        if rounds < per_slot:
            out[name]["max_steps_reached"] = True
        hns = normalise(t, float(r.mean())) if n and normalise is not None else None
        if hns is not None:
            out[name]["human_normalised"] = hns
    return out


EVAL_SEED_OFFSET = 10_000_000


def eval_seed(seed: int) -> int:
    """The seed of a run's evaluation envs: ``seed + 10_000_000``, wrapped into the run seeds'
    range [0, SEED_LIMIT) so its slot seeds fit a C int as the training ones do (unwrapped, the
    largest allowed seeds crashed the native ALE's reset after training had finished)."""
    return (seed + EVAL_SEED_OFFSET) % SEED_LIMIT


def evaluate_on_fresh_env(r: Runner, policy: Callable[[Tensor], Tensor]) -> dict[str, Any]:
    """Evaluate ``policy`` on a fresh env of the run (seeded apart from training) in every task,
    the agent in eval mode; ``{}`` without an eval env or with ``eval.episodes=0``."""
    if r.make_eval_env is None or r.cfg.eval.episodes <= 0:
        return {}
    env = r.make_eval_env()
    try:
        r.agent.eval()
        return evaluate(
            env,
            policy,
            r.cfg.eval.episodes,
            seed=eval_seed(r.cfg.seed),
            device=r.device,
            max_steps=r.cfg.eval.max_steps,
        )
    finally:
        r.agent.train()
        env.close()


def final_summary(r: Runner, elapsed: float) -> dict[str, Any]:
    """``summary.json``'s content: run totals and the evaluation of the task policies, plus the
    distilled pi0 in every task for Distral (the multi-task policy that transfers)."""
    greedy = r.cfg.eval.greedy
    summary: dict[str, Any] = {
        "agent": r.agent.name,
        "total_steps": r.global_step,
        "sps": r.global_step / max(elapsed, 1e-9),
        "tasks": evaluate_on_fresh_env(r, lambda o: r.agent.act(o, greedy=greedy)),
    }
    act_pi0 = getattr(r.agent, "act_pi0", None)
    if act_pi0 is not None and getattr(r.agent, "has_pi0", False) and summary["tasks"]:
        summary["pi0_tasks"] = evaluate_on_fresh_env(r, lambda o: act_pi0(o, greedy=greedy))
    return summary
