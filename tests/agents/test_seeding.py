"""The subnormal mode: scoped and restored, and reaching torch's worker threads in train.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.seeding import flushes_denormals, flushing_denormals

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("start", [False, True])
def test_block_restores_the_callers_mode_after_errors_and_nesting(start):
    torch.set_flush_denormal(start)
    try:
        with flushing_denormals():
            assert flushes_denormals()
            with flushing_denormals():
                assert flushes_denormals()
            assert flushes_denormals()  # the inner block restored the outer one's mode
        assert flushes_denormals() is start
        for exc in (RuntimeError, KeyboardInterrupt):
            with pytest.raises(exc), flushing_denormals():
                raise exc()
            assert flushes_denormals() is start
    finally:
        torch.set_flush_denormal(False)


# Runs train.main in a fresh process with 2 torch threads and records, at every update, the
# fraction of a parallel product of two 1e-20s (a subnormal 1e-40) that came out as zero.
_PROBE = """
import sys, tempfile
sys.path.insert(0, {root!r})
import torch, train
from agents.runner import Runner
seen = []
step = Runner.train_step
def probe(self, *a, **k):
    x = torch.full((4_000_000,), 1e-20)
    seen.append((x * 1e-20 == 0).float().mean().item())
    return step(self, *a, **k)
Runner.train_step = probe
out = tempfile.mkdtemp()
rc = train.main(["--config", {config!r}, "total_steps=240", "torch_threads=2", "progress=false",
                 "eval.episodes=0", "run_dir=" + out + "/run"])
print(rc, min(seen), max(seen))
"""


def test_train_flushes_subnormals_in_torch_worker_threads():
    """Building a run started torch's OpenMP threads before the run set the mode, which then
    reached only the main thread: half of every 2-thread kernel took the subnormal slow path (0.5
    here). The build now starts the workers with the mode on."""
    script = _PROBE.format(root=str(ROOT), config=str(ROOT / "configs" / "minatar_distral.yaml"))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-3:] == ["0", "1.0", "1.0"], proc.stdout[-500:]


def test_config_checks_see_subnormals_as_numbers(tmp_path, capsys):
    """The main thread keeps IEEE semantics outside training: with DAZ on, a negative subnormal
    compares >= 0, and ``agent.ent_coef=-2.2e-313`` (found by the fuzz tests) trained."""
    import train

    cfg = ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), "progress=false"]
    run_dir = tmp_path / "run"
    assert train.main([*cfg, "agent.ent_coef=-2.2250738585e-313", f"run_dir={run_dir}"]) == 2
    assert "agent.ent_coef" in capsys.readouterr().err and not run_dir.exists()


# --------------------------------------------------------------- seeding and device choice
def test_seed_everything_seeds_python_numpy_and_torch():
    import random

    import numpy as np

    from agents.seeding import seed_everything

    draws = []
    for seed in (7, 7, 8):
        seed_everything(seed)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(()))))
    assert draws[0] == draws[1] and all(a != b for a, b in zip(draws[0], draws[2]))
    expected_torch = float(torch.rand((), generator=torch.Generator().manual_seed(7)))
    assert draws[0] == (random.Random(7).random(), np.random.RandomState(7).rand(), expected_torch)


def test_deterministic_flag_switches_torch_to_deterministic_kernels(monkeypatch):
    from agents.seeding import seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    try:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        seed_everything(0)
        assert not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark is False
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


@pytest.mark.parametrize("cuda", [False, True])
def test_resolve_device(monkeypatch, cuda):
    from agents.config import ConfigError
    from agents.seeding import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == torch.device("cuda" if cuda else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if cuda:
        assert resolve_device("cuda") == torch.device("cuda")
    else:
        with pytest.raises(ConfigError, match=r"^device='cuda' but no CUDA device is available"):
            resolve_device("cuda")


def test_cuda_without_a_gpu_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    cfg = ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), "device=cuda"]
    for extra in ([f"run_dir={tmp_path / 'run'}"], []):  # given, and automatic
        assert train.main([*cfg, *extra]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "error: device='cuda' but no CUDA device is available; use device=auto or cpu"
        ]
        assert list(tmp_path.iterdir()) == []
