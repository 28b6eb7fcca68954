"""Opt-in process isolation (``env.workers=true``): each task's envs step in their own subprocess.

A worker that dies (killed, segfault) or raises is restarted with a fresh env seeded
``seed + 1000*k + 1_000_000*r`` (task k, r-th restart of that task; modulo 2**31 - 2**20, the run
seeds' range); the slots of that task report
the step as truncated (reward 0, ``final_obs`` = the observation the action was taken in) and the
run continues. Restarts are counted in ``restarts`` and described by :meth:`drain_events`.
Costs one process per task and a pipe round trip per step (see docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import signal
import traceback
import weakref
from typing import Any, cast

import numpy as np

from envs.base import (
    SEED_LIMIT,
    EnvError,
    MultiTaskVecEnv,
    StepResult,
    check_actions,
    check_seed,
    require_all_tasks,
)
from envs.factory import make_multitask_env

RESTART_SEED_STRIDE = 1_000_000
REPLY_TIMEOUT = 300.0  # seconds without a reply before a live worker counts as hung


class WorkerFault(Exception):
    """A worker died, hung or raised; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _worker(
    conn: Any, suite: str, task: str, envs: int, kwargs: dict[str, Any], inherited: list[Any]
) -> None:
    """Subprocess loop: build one task's vector env and answer commands until ``close``.

    ``inherited``: the parent's ends of this and the earlier workers' pipes, which the fork copied
    into this process. They are closed first: while any process holds a parent end, its worker
    gets no EOF when the trainer dies without closing it (SIGKILL, the OOM killer), and as the
    workers ignore SIGTERM they would live on, orphaned, holding their emulators' memory.
    """
    for end in inherited:
        end.close()
    # Ctrl-C in a terminal (or a SIGTERM to the job) signals the whole process group: the parent
    # decides when to stop and closes (or SIGKILLs) its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        env = make_multitask_env(suite, [task], envs, **kwargs)
    except Exception as e:
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    fault = False
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, OSError):
            break
        try:
            if cmd == "step":
                if fault:
                    raise RuntimeError("injected fault")
                out: Any = env.step(arg)
            elif cmd == "reset":
                out = env.reset(seed=arg)
            elif cmd == "get_state":
                out = env.get_state() if hasattr(env, "get_state") else None
            elif cmd == "set_state":  # sent only with a get_state snapshot, so the env has one
                out = cast(Any, env).set_state(arg)
            elif cmd == "fault":  # test hook: the next step raises
                fault, out = True, None
            elif cmd == "close":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", out))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))
    env.close()
    conn.close()


def _kill_all(procs: list[Any]) -> None:
    for proc in procs:
        if proc is not None and proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


class WorkerVecEnv(MultiTaskVecEnv):
    """A :class:`MultiTaskVecEnv` of ``suite`` with one subprocess per task (task-major slots)."""

    def __init__(
        self,
        suite: str,
        tasks: list[str] | None,
        num_envs_per_task: int,
        suite_kwargs: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.suite, self.kwargs = suite, dict(suite_kwargs or {})
        probe = make_multitask_env(suite, tasks, num_envs_per_task, **self.kwargs)  # validates
        self.task_names = list(probe.task_names)
        self.num_envs_per_task = probe.num_envs_per_task
        self.single_observation_space = probe.single_observation_space
        self.single_action_space = probe.single_action_space
        self.has_state = hasattr(probe, "get_state")
        self._references = [probe.reference_scores(k) for k in range(len(self.task_names))]
        probe.close()
        self._ctx = mp.get_context("fork")
        self._procs: list[Any] = [None] * self.num_tasks
        self._conns: list[Any] = [None] * self.num_tasks
        self.base_seed = check_seed(seed)
        self.restart_count = [0] * self.num_tasks
        self.restarts = 0
        self._events: list[str] = []
        self._last_obs: np.ndarray | None = None
        self._pending: list[str | None] = [None] * self.num_tasks
        self._stepping = False  # a step_async is waiting for its step_wait
        self._closed = False
        # Kill leftover workers at exit even if close() is never called (they ignore SIGTERM).
        self._finalizer = weakref.finalize(self, _kill_all, self._procs)
        for k in range(self.num_tasks):
            self._start(k)

    def reference_scores(self, task: int) -> tuple[float, float] | None:
        """As the wrapped suite's env (taken from the probe env at construction)."""
        return self._references[task]

    # ------------------------------------------------------------------ process management
    def _start(self, k: int) -> None:
        parent, child = self._ctx.Pipe()
        inherited = [c for c in self._conns if c is not None] + [parent]
        args = (
            child,
            self.suite,
            self.task_names[k],
            self.num_envs_per_task,
            self.kwargs,
            inherited,
        )
        proc = self._ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        child.close()
        self._procs[k], self._conns[k] = proc, parent

    def _stop(self, k: int) -> None:
        proc, conn = self._procs[k], self._conns[k]
        if conn is not None:
            conn.close()
        if proc is not None and proc.is_alive():
            proc.kill()
        if proc is not None:
            proc.join(timeout=5)

    def _call(self, k: int, cmd: str, arg: Any = None) -> Any:
        self._send(k, cmd, arg)
        return self._recv(k)

    def _send(self, k: int, cmd: str, arg: Any = None) -> None:
        try:
            self._conns[k].send((cmd, arg))
        except (BrokenPipeError, OSError, EOFError) as e:
            raise WorkerFault(self._death_reason(k, e)) from None

    def _recv(self, k: int) -> Any:
        conn, proc = self._conns[k], self._procs[k]
        waited = 0.0
        try:
            while not conn.poll(0.5):
                waited += 0.5
                if not proc.is_alive():
                    raise WorkerFault(self._death_reason(k))
                if waited >= REPLY_TIMEOUT:
                    raise WorkerFault(f"did not answer within {REPLY_TIMEOUT:.0f} s")
            status, out = conn.recv()
        except (EOFError, OSError, ConnectionResetError) as e:
            raise WorkerFault(self._death_reason(k, e)) from None
        if status == "error":
            raise WorkerFault(f"raised {out.splitlines()[0]}")
        return out

    def _death_reason(self, k: int, err: BaseException | None = None) -> str:
        proc = self._procs[k]
        proc.join(timeout=1)
        code = proc.exitcode
        return f"died (exit code {code})" if code is not None else f"lost its pipe ({err})"

    def _restart(self, k: int, reason: str) -> np.ndarray:
        """Replace worker k with a fresh env on a derived seed; return its reset obs (E, ...)."""
        self._stop(k)
        self.restart_count[k] += 1
        self.restarts += 1
        # wrapped into the run seeds' range like eval and resume seeds: the native ALE takes a C
        # int, and large allowed seeds plus two restarts' strides overflowed it
        seed = self.base_seed + 1000 * k + RESTART_SEED_STRIDE * self.restart_count[k]
        seed %= SEED_LIMIT
        self._start(k)
        try:
            obs = self._call(k, "reset", seed)
        except WorkerFault as e:
            raise EnvError(
                f"env worker for task {self.task_names[k]!r} cannot restart: {e}"
            ) from None
        self._events.append(
            f"env worker for task {self.task_names[k]!r} {reason}; restarted with seed {seed}, "
            f"its {self.num_envs_per_task} episodes counted as truncated"
        )
        return obs

    def healthy(self) -> bool:
        """Whether every worker process is alive (else a snapshot is impossible until the next
        step restarts it)."""
        return all(p is not None and p.is_alive() for p in self._procs)

    def drain_events(self) -> list[str]:
        """Messages about restarts since the last call."""
        events, self._events = self._events, []
        return events

    def kill_worker(self, k: int) -> int:
        """Test hook: SIGKILL task k's worker process; returns its pid."""
        pid = self._procs[k].pid
        self._procs[k].kill()
        self._procs[k].join(timeout=5)
        return pid

    def inject_fault(self, k: int) -> None:
        """Test hook: make task k's worker raise on its next step."""
        self._call(k, "fault")

    # ------------------------------------------------------------------ vector env API
    def _check_open(self, idle: bool = False) -> None:
        """Refuse use after :meth:`close` (and, with ``idle``, while a step is pending)."""
        if self._closed:
            raise EnvError("this env is closed (its workers have exited); make a new one")
        if idle and self._stepping:
            raise EnvError("a step is pending; call step_wait() first")

    def _slots(self, k: int) -> slice:
        e = self.num_envs_per_task
        return slice(k * e, (k + 1) * e)

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every worker; task k gets ``seed + 1000*k`` (slot seeds as in-process).

        A step started by :meth:`step_async` and not yet waited for is received and dropped first
        (its replies would otherwise answer the reset and every later step).
        """
        self._check_open()
        if self._stepping:
            self._stepping = False
            for k in range(self.num_tasks):
                if self._pending[k] is None:  # the step was sent: drop its reply
                    with contextlib.suppress(WorkerFault):  # a dead worker is restarted below
                        self._recv(k)
                self._pending[k] = None
        if seed is not None:
            self.base_seed = check_seed(seed)
        parts = []
        for k in range(self.num_tasks):
            s = None if seed is None else self.base_seed + 1000 * k
            try:
                parts.append(self._call(k, "reset", s))
            except WorkerFault as e:
                parts.append(self._restart(k, e.reason))
        self._last_obs = np.concatenate(parts)
        return self._last_obs.copy()

    def step_async(self, actions: np.ndarray, tasks: slice | None = None) -> None:
        require_all_tasks(tasks)
        self._check_open()
        if self._last_obs is None:
            raise EnvError("call reset() before step()")
        if self._stepping:
            raise EnvError("a step is already pending; call step_wait() first")
        a = check_actions(actions, self.num_envs, int(self.single_action_space.n))
        self._stepping = True
        for k in range(self.num_tasks):
            try:
                self._send(k, "step", a[self._slots(k)])
                self._pending[k] = None
            except WorkerFault as e:
                self._pending[k] = e.reason

    def step_wait(self, tasks: slice | None = None) -> StepResult:
        require_all_tasks(tasks)
        self._check_open()
        if not self._stepping or self._last_obs is None:
            raise EnvError("step_wait() without step_async()")
        self._stepping = False
        n, e = self.num_envs, self.num_envs_per_task
        obs = np.empty_like(self._last_obs)
        final = np.empty_like(self._last_obs)
        reward = np.zeros(n, np.float32)
        terminated = np.zeros(n, bool)
        truncated = np.zeros(n, bool)
        episodes = []
        for k in range(self.num_tasks):
            sl = self._slots(k)
            try:
                pending = self._pending[k]
                if pending is not None:
                    raise WorkerFault(pending)
                res: StepResult = self._recv(k)
            except WorkerFault as err:
                self._pending[k] = None
                final[sl] = self._last_obs[sl]
                obs[sl] = self._restart(k, err.reason)
                truncated[sl] = True
                continue
            obs[sl], final[sl], reward[sl] = res.obs, res.final_obs, res.reward
            terminated[sl], truncated[sl] = res.terminated, res.truncated
            for ep in res.episodes:
                ep.task, ep.slot = k, k * e + ep.slot
                episodes.append(ep)
        self._last_obs = obs
        return StepResult(obs.copy(), reward, terminated, truncated, final, episodes)

    # ------------------------------------------------------------------ checkpointing
    def get_state(self) -> dict[str, Any]:
        """Every worker's env snapshot plus restart counters and the last observation."""
        self._check_open(idle=True)
        if not self.has_state:
            raise EnvError(f"the {self.suite} suite has no env snapshots")
        states = []
        for k in range(self.num_tasks):
            try:
                states.append(self._call(k, "get_state"))
            except WorkerFault as e:  # the next step restarts it and truncates its episodes
                raise EnvError(
                    f"env worker for task {self.task_names[k]!r} {e.reason}; no snapshot"
                ) from None
        return {
            "workers": states,
            "restart_count": list(self.restart_count),
            "restarts": self.restarts,
            "base_seed": self.base_seed,
            "last_obs": None if self._last_obs is None else self._last_obs.copy(),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`get_state` snapshot (same tasks and slot count)."""
        self._check_open(idle=True)
        if len(state["workers"]) != self.num_tasks:
            raise EnvError(f"state has {len(state['workers'])} workers, env {self.num_tasks}")
        for k, s in enumerate(state["workers"]):
            try:
                self._call(k, "set_state", s)
            except WorkerFault as e:
                raise EnvError(f"env worker for task {self.task_names[k]!r} {e.reason}") from None
        self.restart_count = [int(c) for c in state["restart_count"]]
        self.restarts = int(state["restarts"])
        self.base_seed = int(state["base_seed"])
        self._last_obs = state["last_obs"]

    def close(self) -> None:
        self._closed = True
        for k in range(self.num_tasks):
            if self._conns[k] is None:
                continue
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conns[k].send(("close", None))
            self._procs[k].join(timeout=2)
            self._stop(k)
            self._conns[k] = None
