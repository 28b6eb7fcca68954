"""Capture and restore everything a :class:`~agents.runner.Runner` needs to continue exactly.

The state holds the agent, optimiser and weighting ``state_dict``s, the torch/numpy/python (and
CUDA) RNG states, the environment snapshot (``env.get_state()`` where the suite has one, encoded by
:mod:`agents.codec`), the current observation, episode clocks and accumulators, counters and the
resolved config. Every value is a tensor or plain container, so ``weights_only=True`` loads it.
"""

from __future__ import annotations

import random
from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.codec import CodecError, decode, encode
from agents.config import ConfigError, merge_structured, to_dict
from agents.config_schema import SEED_LIMIT, Config
from agents.guards import PER_TASK
from agents.resume import unsafe_changes
from mtrl.rng import cuda_rng_states, set_cuda_rng_states

if TYPE_CHECKING:
    from agents.runner import Runner

# 2: the 2-column Distral task head holds beta * f_i (version 1: f_i; agents/distral.py).
# 3: each task's loss is the mean over its own samples (agents.guards); per-task optimisers'
#    statistics were built on gradients 1/K of that before.
VERSION = 3
COUNTERS = ("global_step", "update", "nonfinite_total", "nonfinite_streak", "last_log", "last_ckpt")


def capture(r: Runner) -> dict[str, Any]:
    """The runner's full training state (see module docstring)."""
    env_state = None
    if hasattr(r.env, "get_state") and getattr(r.env, "has_state", True):
        env_state = encode(r.env.get_state())
    rng: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": encode(np.random.get_state(legacy=True)),
        "python": encode(random.getstate()),
    }
    cuda = cuda_rng_states(r.device)
    if cuda:
        rng["cuda"] = cuda
    return {
        "version": VERSION,
        "agent_name": r.agent.name,
        "agent": r.agent.state_dict(),
        "optimizers": [opt.state_dict() for opt in r.optimizers],
        "weighting": r.weighting.state_dict(),
        "config": to_dict(r.cfg),
        "counters": {k: int(getattr(r, k)) for k in COUNTERS},
        "elapsed": float(r.elapsed),
        "obs": None if r.obs is None else r.obs.detach().cpu(),
        "ep_time": r.ep_time.detach().cpu(),
        "learning_return": torch.from_numpy(r.learning_return.copy()),
        "recent": [[float(x) for x in d] for d in r.recent],
        "episode_log": torch.tensor(r.episode_log, dtype=torch.float64).reshape(-1, 4),
        "pending": [dict(p) for p in r.pending],
        "rng": rng,
        "env": {"tasks": list(r.env.task_names), "state": env_state},
    }


def _fail(what: str, err: BaseException) -> ConfigError:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    if isinstance(err, KeyError):
        first = f"missing {err}"
    elif not lines:
        first = type(err).__name__
    else:  # load_state_dict's first line only says "Error(s) in loading...": name the tensor
        first = next((line for line in lines if "size mismatch" in line or "key" in line), lines[0])
    return ConfigError(f"checkpoint does not fit this run: {what} ({first[:200]})")


def restore(r: Runner, state: dict[str, Any]) -> None:
    """Load ``state`` from :func:`capture` into ``r``; a mismatch raises ConfigError.

    Any other failure (a file that passes the checksum but holds the wrong kinds of values,
    e.g. written by a modified program) is a ConfigError too: one line, exit 2, not a traceback.
    """
    try:
        _restore(r, state)
    except ConfigError:
        raise
    except Exception as e:
        raise _fail("its contents", e) from None


def _restore(r: Runner, state: dict[str, Any]) -> None:
    name = state.get("agent_name")
    if name != r.agent.name:
        raise ConfigError(
            f"checkpoint was written by agent {name!r}, but this run's agent is {r.agent.name!r}"
        )
    version = state.get("version")
    if version not in (1, 2, VERSION):
        raise ConfigError(f"checkpoint state version {version!r} is not supported")
    if (
        version == 1
        and getattr(r.agent, "two_column", False)
        and getattr(r.agent, "regularise", False)
    ):
        raise ConfigError(
            f"checkpoint of {name!r} predates the 2-column head change: its task head holds f_i, "
            "this version's holds beta * f_i, so it would act differently; start a new run "
            "(or finish this one with the code before commit 38190c4)"
        )
    if version in (1, 2) and PER_TASK in r.learners:
        raise ConfigError(
            f"checkpoint of {name!r} predates the per-task gradient change: its optimiser "
            "statistics were built on task gradients 1/K of this version's, so its first steps "
            "would be up to K times too large; start a new run (or finish this one with the "
            "code before commit 377e0b2)"
        )
    if list(state["env"]["tasks"]) != list(r.env.task_names):
        raise ConfigError(
            f"checkpoint tasks {state['env']['tasks']} differ from this run's {r.env.task_names}"
        )
    try:
        r.agent.load_state_dict(state["agent"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise _fail("agent parameters", e) from None
    if len(state["optimizers"]) != len(r.optimizers):
        raise ConfigError(
            f"checkpoint has {len(state['optimizers'])} optimisers, this run {len(r.optimizers)}"
        )
    try:
        for opt, sd in zip(r.optimizers, state["optimizers"]):
            opt.load_state_dict(sd)
        r.weighting.load_state_dict(state["weighting"])
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise _fail("optimiser or weighting state", e) from None
    try:
        _restore_loop(r, state)
    except (KeyError, ValueError, TypeError, IndexError, CodecError) as e:
        raise _fail("loop state", e) from None


def changed_settings(r: Runner, state: dict[str, Any]) -> list[str]:
    """Config keys, other than those a resume may change (``RESUME_SAFE``, ``run_dir``), whose
    values differ between the checkpoint's config and ``r.cfg``: settings under which training
    continues differently from the run that wrote it ([] when the checkpoint has no config)."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        return []
    try:  # under this version's schema: keys added since the checkpoint take their defaults
        saved = to_dict(merge_structured(Config, saved))
    except ConfigError:
        return ["(the checkpoint's config does not fit this version's schema)"]
    return [k for k in unsafe_changes(saved, to_dict(r.cfg)) if k != "run_dir"]


def _restore_loop(r: Runner, state: dict[str, Any]) -> None:
    dev = r.device
    for k in COUNTERS:
        setattr(r, k, int(state["counters"][k]))
    r.elapsed = float(state["elapsed"])
    ep_time = state["ep_time"]
    if tuple(ep_time.shape) != tuple(r.ep_time.shape):
        raise ValueError(f"ep_time shape {tuple(ep_time.shape)} != {tuple(r.ep_time.shape)}")
    r.recent = [deque(x, maxlen=10) for x in state["recent"]]
    r.episode_log = [
        (int(s), int(k), float(ret), int(n)) for s, k, ret, n in state["episode_log"].tolist()
    ]
    r.pending = [dict(p) for p in state["pending"]]
    env_state = state["env"]["state"]
    if env_state is not None and hasattr(r.env, "set_state") and state["obs"] is not None:
        r.env.set_state(decode(env_state))
        r.obs = state["obs"].to(dev)
        r.ep_time = ep_time.to(dev)
        r.learning_return = state["learning_return"].numpy().copy()
        r.env_restored = True
    else:  # no env snapshot (ALE): fresh episodes from a seed derived from the step count,
        # wrapped into the run seeds' range as eval seeds are (unwrapped, a large seed plus ~1M
        # steps put the slot seeds past ALE's C int and the run could not be resumed)
        r.obs = r.reset(seed=(r.cfg.seed + r.global_step) % SEED_LIMIT)
        r.ep_time.zero_()
        r.learning_return[:] = 0.0
        r.env_restored = False
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(decode(rng["numpy"]))
    random.setstate(decode(rng["python"]))
    set_cuda_rng_states(rng.get("cuda", []), dev)
