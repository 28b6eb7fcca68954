"""Env workers must not outlive a trainer that is killed without closing them (SIGKILL, OOM)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.procs import HAS_PROC, alive

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import os, signal, numpy as np
    from envs.workers import WorkerVecEnv
    env = WorkerVecEnv("gridworld", None, 1, {}, seed=0)
    env.reset(seed=0)
    env.step(np.zeros(env.num_envs, np.int64))
    env.kill_worker(0)  # a restarted worker (forked after the others) too
    env.step(np.zeros(env.num_envs, np.int64))
    print(" ".join(str(p.pid) for p in env._procs), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no close(), no atexit, no finalizer
    """
)


@pytest.mark.skipif(not HAS_PROC, reason="reads /proc (Linux)")
def test_workers_exit_when_the_trainer_is_sigkilled():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # Popen + readline, not run(capture_output=True): surviving workers hold the stdout pipe
    # open, so reading to EOF would wait for them
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    pids = [int(p) for p in proc.stdout.readline().split()]
    proc.stdout.close()
    try:
        assert proc.wait(timeout=120) == -signal.SIGKILL
        assert len(pids) == 4
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in pids if alive(p)], "env workers outlived their trainer"
    finally:
        for p in pids:  # do not leave them behind when the test fails
            if alive(p):
                os.kill(p, signal.SIGKILL)
