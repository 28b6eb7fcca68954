"""Real signals to a real ``train.py`` process: SIGINT -> 130, SIGTERM -> 143, a second SIGINT
exits at once, and ``--resume`` finishes with exactly the uninterrupted run's losses and weights."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from relkit import COMMON, ROOT

from agents.checkpoint import load_checkpoint

ARGS = [
    "--config",
    str(ROOT / "configs" / "gridworld_a2c.yaml"),
    "total_steps=8000",
    "env.num_envs_per_task=2",
    "agent.hidden=[16]",
    *COMMON,
]


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        start_new_session=True,  # own process group, as a terminal job
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _wait_for_updates(run_dir: Path, n: int, proc: subprocess.Popen) -> None:
    losses = run_dir / "losses.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if losses.exists() and losses.read_text().count("\n") >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"run did not reach {n} updates (exit {proc.poll()})")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    code, err = _finish(_start(*ARGS, f"run_dir={run_dir}"))
    assert code == 0, err
    return run_dir


def _assert_same(run_dir: Path, reference: Path) -> None:
    a = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    b = load_checkpoint(reference / "checkpoints" / "last.pt")
    assert a["counters"] == {**b["counters"], "last_ckpt": a["counters"]["last_ckpt"]}
    for k in b["agent"]:
        assert torch.equal(a["agent"][k], b["agent"][k]), k
    for oa, ob in zip(a["optimizers"], b["optimizers"], strict=True):
        for ka in ob["state"]:
            for key, v in ob["state"][ka].items():
                assert torch.equal(torch.as_tensor(oa["state"][ka][key]), torch.as_tensor(v))
    assert (run_dir / "losses.jsonl").read_text() == (reference / "losses.jsonl").read_text()


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
)
def test_signal_checkpoints_and_resume_is_exact(tmp_path, reference, sig, code):
    run_dir = tmp_path / "run"
    proc = _start(*ARGS, f"run_dir={run_dir}")
    _wait_for_updates(run_dir, 20, proc)
    proc.send_signal(sig)
    rc, err = _finish(proc)
    assert rc == code, err
    assert "--resume" in err and "Traceback" not in err
    done = load_checkpoint(run_dir / "checkpoints" / "last.pt")["counters"]["update"]
    assert 20 <= done < 200
    rc, err = _finish(_start("--resume", str(run_dir)))
    assert rc == 0, err
    _assert_same(run_dir, reference)


def test_second_sigint_exits_at_once_and_keeps_a_good_checkpoint(tmp_path, reference):
    run_dir = tmp_path / "run"
    proc = _start(*ARGS, f"run_dir={run_dir}")
    _wait_for_updates(run_dir, 15, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    rc, err = _finish(proc)
    assert rc == 130, err
    assert "Traceback" not in err
    load_checkpoint(run_dir / "checkpoints" / "last.pt")  # intact (old or new)
    rc, err = _finish(_start("--resume", str(run_dir)))
    assert rc == 0, err
    assert not list((run_dir / "checkpoints").glob("*.tmp"))
    _assert_same(run_dir, reference)


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGINT, 130), pytest.param(signal.SIGTERM, 143, marks=pytest.mark.slow)],
)
def test_signal_to_the_process_group_spares_env_workers(tmp_path, reference, sig, code):
    """A terminal Ctrl-C (or a job's SIGTERM) reaches the workers too: they ignore it, the
    parent checkpoints and resumes exactly."""
    run_dir = tmp_path / "run"
    proc = _start(*ARGS, "env.workers=true", f"run_dir={run_dir}")
    _wait_for_updates(run_dir, 15, proc)
    os.killpg(proc.pid, sig)
    rc, err = _finish(proc)
    assert rc == code, err
    assert "restarted" not in err
    rc, err = _finish(_start("--resume", str(run_dir)))
    assert rc == 0, err
    assert "restarted" not in err
    _assert_same(run_dir, reference)
