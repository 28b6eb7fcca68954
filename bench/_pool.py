"""Process pool of bench/learning.py: runs in spawned workers that stop with the parent, at
once, on Ctrl-C or SIGTERM, leaving no process behind."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from types import FrameType
from typing import Any


def run_in_processes(
    fn: Callable[[dict[str, Any]], dict[str, Any]],
    specs: list[dict[str, Any]],
    workers: int,
    done: Callable[[dict[str, Any], dict[str, Any]], None],
) -> None:
    """``done(spec, fn(spec))`` for every spec, in order, ``fn`` running in ``workers`` spawned
    processes (each spec gets ``"scratch"``: a directory removed even if its worker is killed).
    Any exception here, Ctrl-C or :class:`Terminated` kills the workers before it propagates."""
    with tempfile.TemporaryDirectory(prefix="bench-learning-") as scratch:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=get_context("spawn"),
            initializer=worker_init,
            initargs=(os.getpid(),),
        )
        try:
            futures = [(s, pool.submit(fn, {**s, "scratch": scratch})) for s in specs]
            for spec, fut in futures:
                done(spec, fut.result())
        except BaseException:  # a failed run, Ctrl-C, SIGTERM (Terminated): stop them all
            kill_pool(pool)
            raise
        pool.shutdown()


class Terminated(BaseException):
    """SIGTERM reached the parent (raised by the handler :func:`main` installs)."""

    signum = signal.SIGTERM


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    # further SIGTERMs (`timeout` sends two, to the process and its group) would cut the clean-up
    # short; the few that follow are ignored until main returns
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def worker_init(parent: int) -> None:
    """In each pool worker: leave the terminal's process group, so that Ctrl-C reaches only the
    parent (which stops the pool; the worker would print its own traceback), die
    with the parent on Linux, even when it is killed with SIGKILL, and give tqdm a thread lock (its
    default, a named semaphore, would be reported leaked when the parent kills this worker)."""
    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())
    os.setpgrp()
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel the pending runs and kill the workers at once: SIGKILL, which no run's clean-up
    can delay (the scratch directory goes with the parent's ``TemporaryDirectory``)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # public in Python 3.14 only
    ignored = (signal.SIGINT, signal.SIGTERM)
    main_thread = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, signal.SIG_IGN) for s in ignored} if main_thread else {}
    try:  # not cut short by a second Ctrl-C: it takes well under a second
        for proc in procs:
            proc.kill()
        pool.shutdown(wait=True, cancel_futures=True)
        for proc in procs:
            proc.join()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
