"""Shared helpers for the reliability tests: tiny configs, runs and directory snapshots."""

import hashlib
import os
import signal
from pathlib import Path

import pytest
import torch

import train
from agents.config import load_config
from agents.signals import Interrupted

ROOT = Path(__file__).resolve().parents[2]

SUITES = {
    "gridworld": (
        "gridworld_a2c.yaml",
        ["total_steps=1200", "env.num_envs_per_task=2", "agent.hidden=[16]"],
    ),
    "minatar": (
        "minatar_a2c.yaml",
        ["total_steps=600", "env.tasks=[breakout,freeway]", "env.num_envs_per_task=2"],
    ),
}
COMMON = ["progress=false", "eval.episodes=0", "torch_threads=1", "checkpoint_interval=250"]


def make_cfg(suite: str, run_dir: Path, *extra: str):
    """A tiny config of ``suite`` writing ``run_dir``."""
    name, overrides = SUITES[suite]
    return load_config(
        str(ROOT / "configs" / name), [*overrides, *COMMON, *extra, f"run_dir={run_dir}"]
    )


def run_full(cfg):
    """Run ``cfg`` to the end in-process; return the runner (env closed)."""
    runner = train.build(cfg, Path(cfg.run_dir))
    try:
        runner.run()
    finally:
        runner.env.close()
    return runner


def run_interrupted(cfg, at_update: int | None = None, at_env_step: int | None = None, sig=None):
    """Run ``cfg``, sending ``sig`` (SIGINT) to ourselves after update ``at_update`` or inside
    env step call ``at_env_step``; expect :class:`Interrupted`; return it."""
    sig = sig or signal.SIGINT
    runner = train.build(cfg, Path(cfg.run_dir))
    if at_update is not None:
        interrupt_after_update(runner, at_update, sig)
    if at_env_step is not None:
        orig_wait, calls = runner.env.step_wait, [0]

        def step_wait(tasks=None):
            calls[0] += 1
            if calls[0] == at_env_step:
                os.kill(os.getpid(), sig)
            return orig_wait(tasks)

        runner.env.step_wait = step_wait
    return expect_interrupt(runner)


def expect_interrupt(runner) -> Interrupted:
    """Run ``runner`` until a signal stops it; close its env; return the :class:`Interrupted`."""
    try:
        with pytest.raises(Interrupted) as info:
            runner.run()
    finally:
        runner.env.close()
    return info.value


def interrupt_after_update(runner, at_update: int, sig: int) -> None:
    """Make ``runner`` send ``sig`` to this process right after update ``at_update``."""
    orig = runner.train_step

    def train_step():
        out = orig()
        if runner.update == at_update:
            os.kill(os.getpid(), sig)
        return out

    runner.train_step = train_step


def resume_full(run_dir: Path, overrides=()):
    """Resume ``run_dir`` in-process to the end; return the runner."""
    runner = train.resume(Path(run_dir), list(overrides))
    try:
        runner.run()
    finally:
        runner.env.close()
    return runner


def assert_same_training(a, b) -> None:
    """Identical parameters, optimiser states, weighting state and logged losses."""
    sa, sb = a.agent.state_dict(), b.agent.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    for oa, ob in zip(a.optimizers, b.optimizers, strict=True):
        for (ka, va), (kb, vb) in zip(
            oa.state_dict()["state"].items(), ob.state_dict()["state"].items(), strict=True
        ):
            assert ka == kb
            for key in va:
                assert torch.equal(torch.as_tensor(va[key]), torch.as_tensor(vb[key])), key
    wa, wb = a.weighting.state_dict(), b.weighting.state_dict()
    for k in wa:
        if isinstance(wa[k], torch.Tensor):
            assert torch.equal(wa[k], wb[k]), k
    assert a.loss_records() == b.loss_records()
    assert a.global_step == b.global_step and a.update == b.update


def snapshot(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``path`` (empty if it does not exist)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
