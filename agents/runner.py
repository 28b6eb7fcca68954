"""The training loop: collect an n-step rollout -> per-task losses -> weighting -> step -> log.

The runner owns the environment, TensorBoard, the progress bar, checkpoints and the final
evaluation; agents own only acting and losses. Environment steps are counted over all envs.
Reliability (docs/reliability.md): periodic atomic checkpoints, exact resume, graceful SIGINT/SIGTERM,
skipping of non-finite updates, and one ``losses.jsonl`` line per update.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from agents import runstate
from agents.base import Agent, make_optimizer
from agents.blocked import blocked_task_gradients
from agents.checkpoint import remove_stale_temps, save_rotating, step_files
from agents.config import to_yaml
from agents.config_schema import Config
from agents.evaluate import evaluate_on_fresh_env, final_summary
from agents.guards import check_divergence, check_parameters, clip_and_check, learner_kinds
from agents.progress import postfix_width, task_postfix
from agents.report import draw_run_figure
from agents.resume import read_loss_log
from agents.rollout import Rollout, obs_to_tensor
from agents.run_log import open_loss_log, open_writer, update_scalars, write_interval
from agents.seeding import flushing_denormals
from agents.signals import Interrupted, StopFlag
from mtrl.io import atomic_write
from mtrl.state import state_snapshot
from mtrl.weighting import build as build_weighting
from mtrl.weighting.base import InternalOptimizerMixin, LossWeighting
from mtrl.weighting.grads import task_gradient_provider

if TYPE_CHECKING:
    from envs.base import MultiTaskVecEnv, StepResult


class Runner:
    """Trains ``agent`` on ``env`` for ``cfg.total_steps`` environment steps, writing ``run_dir``."""

    def __init__(
        self,
        cfg: Config,
        env: MultiTaskVecEnv,
        agent: Agent,
        run_dir: Path,
        device: torch.device,
        weighting: LossWeighting | None = None,
        make_eval_env: Callable[[], Any] | None = None,
    ):
        self.cfg, self.env, self.agent, self.device = cfg, env, agent.to(device), device
        self.run_dir = Path(run_dir)
        self.weighting = (weighting or build_weighting("equal", env.num_tasks)).to(device)
        self.make_eval_env = make_eval_env
        self.optimizers = agent.make_optimizers()
        # Learnable weighting parameters (e.g. uncertainty's log-variances) that the method does
        # not update itself get their own optimiser of the agent's kind.
        wparams = [p for p in self.weighting.parameters() if p.requires_grad]
        if wparams and not isinstance(self.weighting, InternalOptimizerMixin):
            self.optimizers.append(make_optimizer(cfg.agent, wparams))
        # how each optimiser's gradient is scaled and clipped (agents.guards)
        self.learners = learner_kinds(
            self.optimizers, agent.shared_parameters(), agent, env.num_tasks
        )
        # a scale-invariant weighting (Nash-MTL) has no sum over tasks for the 1/K to average
        self.pool = 1 if self.weighting.scale_invariant else env.num_tasks
        self.num_tasks, self.envs_per_task = env.num_tasks, env.num_envs_per_task
        space = env.single_observation_space
        self.rollout = Rollout(
            cfg.agent.n_steps,
            self.num_tasks,
            self.envs_per_task,
            device,
            tuple(space.shape),
            torch.from_numpy(np.zeros(0, dtype=space.dtype)).dtype,
        )
        self.global_step = 0
        self.update = 0
        self.learning_return = np.zeros((self.num_tasks, self.envs_per_task))
        # Episode step counter of every slot (K, E): time index t of the current observation.
        self.ep_time = torch.zeros(self.num_tasks, self.envs_per_task, device=device)
        self.recent: list[deque[float]] = [deque(maxlen=10) for _ in range(self.num_tasks)]
        # Every finished training episode as (global_step, task, raw return, length): the
        # learning curves that benchmarks and reports plot.
        self.episode_log: list[tuple[int, int, float, int]] = []
        self.loss_log_end = 0  # bytes of losses.jsonl a resumed run keeps (the checkpoint's)
        self.writer = None
        # Reliability state (all checkpointed, see agents.runstate).
        self.obs: Tensor | None = None  # current observation (K, E, *obs) between updates
        self.nonfinite_total = 0  # updates skipped for non-finite losses or gradients
        self.nonfinite_streak = 0  # ... in a row
        self.last_log = 0  # global_step of the last TensorBoard write
        self.last_ckpt = 0  # global_step of the last checkpoint
        self.elapsed = 0.0  # training seconds over every session of the run
        self.pending: list[dict[str, float]] = []  # scalars not yet averaged into TensorBoard
        self.resumed = False
        self.env_restored = True  # False after resuming a suite without env snapshots

    # ----------------------------------------------------------------------------- helpers
    def _record_episodes(self, episodes: list) -> None:
        for ep in episodes:
            name = self.env.task_names[ep.task]
            self.recent[ep.task].append(ep.ret)
            self.episode_log.append((self.global_step, ep.task, ep.ret, ep.length))
            if self.writer is not None:
                self.writer.add_scalar(f"task/{name}/return", ep.ret, self.global_step)
                self.writer.add_scalar(f"task/{name}/length", ep.length, self.global_step)

    # ----------------------------------------------------------------------------- training
    def task_groups(self) -> list[slice]:
        """Contiguous task groups stepped in a pipeline: while one group's emulators run, the
        policy acts for the other. ``env.task_groups=0`` picks 2 groups on CUDA (the network
        leaves the CPU to the emulators) and 1 on a CPU, where measured on 2 cores the emulator
        and network threads only contend (1,160 vs 1,300 steps/s for 4 Atari games)."""
        k = self.num_tasks
        n = self.cfg.env.task_groups or (2 if self.device.type == "cuda" else 1)
        if not getattr(self.env, "supports_task_groups", False):
            n = 1
        n = max(1, min(n, k))
        bounds = [round(i * k / n) for i in range(n + 1)]
        return [slice(a, b) for a, b in itertools.pairwise(bounds)]

    def collect(self, obs: Tensor) -> Tensor:
        """Fill the rollout from ``obs`` (K, E, *obs); return the observation after it.

        Pipelined over task groups: group g's actions for step t+1 are computed and sent as soon
        as its step t arrives, while the other group's emulators are still running. Every action
        still comes from the current policy, so this is exactly synchronous A2C.
        """
        ro, env = self.rollout, self.env
        ro.clear()
        self.agent.begin_rollout(ro.num_steps)
        groups = self.task_groups()
        whole = len(groups) == 1  # then the env is stepped without a task slice
        ro.obs[:, 0] = obs

        def act(g: slice, t: int) -> None:
            tasks = None if whole else g  # None: all tasks, without slicing every weight
            actions = self.agent.step(ro.obs[g, t], tasks, t)
            ro.actions[t, g] = actions
            env.step_async(actions.reshape(-1).cpu().numpy(), tasks)

        for g in groups:
            act(g, 0)
        for t in range(ro.num_steps):
            for g in groups:
                res = env.step_wait(None if whole else g)
                self._record_step(t, g, res)
                if t + 1 < ro.num_steps:
                    act(g, t + 1)
        return ro.obs[:, ro.num_steps]

    def _record_step(self, t: int, g: slice, res: StepResult) -> None:
        """Store the env results of step t for task group g; track episode times and stats."""
        ro = self.rollout
        ro.insert_env(t, g, res.reward, res.terminated, res.truncated)
        done = ro.terminated[t, g] | ro.truncated[t, g]
        ro.ep_time[t, g] = self.ep_time[g]
        self.ep_time[g] = (self.ep_time[g] + 1) * ~done
        if res.truncated.any():
            # Bootstrap truncated episodes from V(final observation), not the reset obs.
            final = obs_to_tensor(res.final_obs, g.stop - g.start, self.device)
            mask = ro.truncated[t, g]
            ro.final_values[t, g] = torch.where(mask, self.agent.values(final, g), 0.0)
        self.global_step += len(res.reward)
        self._record_episodes(res.episodes)
        ro.obs[g, t + 1] = obs_to_tensor(res.obs, g.stop - g.start, self.device)

    def reset(self, seed: int | None = None) -> Tensor:
        """Reset every env with ``seed`` (default: the run's); return the obs (K, E, *obs)."""
        seed = self.cfg.seed if seed is None else seed
        return obs_to_tensor(self.env.reset(seed=seed), self.num_tasks, self.device)

    def train_step(self) -> dict[str, float]:
        """Losses -> weighting.backward -> clip -> optimizer steps; returns logged scalars."""
        task_losses, terms = self.agent.task_losses(self.rollout)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        grad_norm = 0.0
        weights = torch.full((self.num_tasks,), float("nan"), device=task_losses.device)
        finite = bool(torch.isfinite(task_losses.detach()).all())
        if finite:
            saved = state_snapshot(self.weighting)  # clones: a fraction of deepcopy's cost
            weights = self.weighting_backward(task_losses)
            grad_norm, finite = self.clip_gradients()
            if not finite:  # undo what the weighting method learned from this batch
                self.weighting.load_state_dict(saved)
        if finite:
            for opt in self.optimizers:
                opt.step()
            self.nonfinite_streak = 0
        else:
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            self._skip_update()
        self.update += 1
        self._track_learning_return()
        return update_scalars(terms, task_losses, grad_norm, weights, self.env.task_names)

    def weighting_backward(self, task_losses: Tensor) -> Tensor:
        """The weighting's backward of the task losses (K,) over the shared parameters; returns
        its weights. The loss pass's rows are task-major through the encoders, so per-task
        gradients of their shared layers take one backward (:mod:`agents.blocked`)."""
        blockable = self.agent.blockable if self.agent.separable_losses else set()
        blocks = partial(blocked_task_gradients, blockable=blockable) if blockable else None
        with task_gradient_provider(blocks):
            return self.weighting.backward(task_losses, self.agent.shared_parameters())

    def clip_gradients(self) -> tuple[float, bool]:
        """Scale and clip the gradients per learner (:func:`agents.guards.clip_and_check`);
        return their norm and whether it is finite."""
        max_norm = self.cfg.agent.max_grad_norm
        return clip_and_check(self.optimizers, max_norm, self.learners, self.num_tasks, self.pool)

    def _skip_update(self) -> None:
        """Count a skipped non-finite update; warn once per streak."""
        self.nonfinite_total += 1
        self.nonfinite_streak += 1
        if self.nonfinite_streak == 1:
            print(
                f"warning: non-finite loss or gradient at step {self.global_step}; update skipped "
                f"({self.nonfinite_total} so far)",
                file=sys.stderr,
                flush=True,
            )

    def _track_learning_return(self) -> None:
        """Episode sums of the rewards the agent learned from (Distral: regularised return)."""
        ro = self.rollout
        if ro.learning_rewards is None:
            return
        # one copy to the host (float64 holds the float32 rewards exactly): one CUDA sync
        done = (ro.terminated | ro.truncated).double()
        both = torch.stack([done, ro.learning_rewards.double()]).cpu().numpy()
        done, rewards = both[0] != 0, both[1]
        for t in range(ro.num_steps):
            self.learning_return += rewards[t]
            # the step at which rollout step t ended, where task/*/return logged the episode
            step = self.global_step - (ro.num_steps - 1 - t) * self.env.num_envs
            for k, e in zip(*np.nonzero(done[t])):
                name = self.env.task_names[k]
                if self.writer is not None:
                    value = float(self.learning_return[k, e])
                    self.writer.add_scalar(f"task/{name}/regularised_return", value, step)
                self.learning_return[k, e] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (see agents.runstate)."""
        return runstate.capture(self)

    def load_state_dict(self, state: dict[str, Any], loss_log_end: int = 0) -> None:
        """Continue from a checkpoint: the next :meth:`run` resumes at its update and cuts
        ``losses.jsonl`` to its first ``loss_log_end`` bytes (the records the checkpoint
        covers; see :func:`agents.resume.loss_log_end`)."""
        runstate.restore(self, state)
        changed = runstate.changed_settings(self, state)
        if changed:  # train.py --resume refuses these; a script may mean them, so only warn
            warnings.warn(
                f"the checkpoint was written with other values of {', '.join(changed)}; training "
                "continues with this Runner's, so it is not an exact continuation",
                RuntimeWarning,
                stacklevel=2,
            )
        self.loss_log_end = loss_log_end
        self.resumed = True

    def loss_records(self) -> list[dict[str, float]]:
        """The run's ``losses.jsonl``: one dict per update, ``"step"`` (environment steps after
        it) and the logged scalars, read from disk (a long run's records are not kept in memory:
        ~0.65 GB over the default job's 500k updates, docs/reliability.md)."""
        return read_loss_log(self.run_dir / "losses.jsonl")

    def checkpoint(self) -> bool:
        """Write ``checkpoints/step_<N>.pt`` and ``last.pt`` atomically, keeping the last N.
        Returns False (and warns) while a dead env worker has no snapshot to save."""
        if not getattr(self.env, "healthy", lambda: True)():
            kept = f"last.pt stays at step {self.last_ckpt}" if self.last_ckpt else "none yet"
            print(
                f"warning: checkpoint at step {self.global_step} skipped: an env worker died "
                f"({kept})",
                file=sys.stderr,
                flush=True,
            )
            return False
        check_parameters(self.agent.parameters(), self.global_step, self.run_dir)
        self.last_ckpt = self.global_step
        ckpt_dir = self.run_dir / "checkpoints"
        save_rotating(self.state_dict(), ckpt_dir, self.global_step, self.cfg.keep_checkpoints)
        return True

    def num_updates(self) -> int:
        """Updates of the whole run: ``total_steps`` rounded up to whole rollouts."""
        return math.ceil(self.cfg.total_steps / (self.cfg.agent.n_steps * self.env.num_envs))

    def run(self, handle_signals: bool = True) -> dict[str, Any]:
        """Train to ``total_steps`` (continuing a resumed run), checkpoint, evaluate, write
        ``summary.json``; return it. A signal raises :class:`Interrupted` after a checkpoint (or
        after trying one: see ``Interrupted.saved_step``); ``handle_signals=False`` leaves
        SIGINT/SIGTERM to the caller's handlers, which then stop the run mid-update."""
        with flushing_denormals():
            with StopFlag(install=handle_signals) as stop:  # from here on a signal only sets a flag
                self._prepare()
                self._train(stop)
            summary = self._summary(self.elapsed)
        atomic_write(self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        draw_run_figure(self.run_dir, self.env.task_names, self.episode_log, summary)
        if self.writer is not None:
            self.writer.close()
        return summary

    def _prepare(self) -> None:
        """Create (or tidy, when resumed) the run directory, reset envs, open TensorBoard."""
        ckpt_dir = self.run_dir / "checkpoints"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(ckpt_dir)
        config = to_yaml(self.cfg).encode()
        if self.resumed:  # files a killed session wrote after its last.pt are another timeline
            for path in step_files(ckpt_dir):
                if int(path.stem.split("_")[1]) > self.global_step:
                    path.unlink()
            # a resume may change eval.*, device, intervals (agents.resume.RESUME_SAFE): the
            # config.yaml beside this session's summary and checkpoints says which it ran with
            if (self.run_dir / "config.yaml").read_bytes() != config:
                atomic_write(self.run_dir / "config.yaml", config)
        else:
            atomic_write(self.run_dir / "config.yaml", config)
            self.obs = self.reset()
        if self.update < self.num_updates():  # a finished run's resume only re-evaluates
            resumed_at = self.global_step if self.resumed else None
            self.writer = open_writer(self.run_dir, self.cfg, resumed_at)

    def _train(self, stop: StopFlag) -> None:
        """The update loop with logging, checkpoints, the divergence guard and signal checks."""
        from tqdm import tqdm

        cfg = self.cfg
        per_update = cfg.agent.n_steps * self.env.num_envs
        num_updates = self.num_updates()
        bar = tqdm(
            total=num_updates * per_update,
            initial=min(self.update, num_updates) * per_update,
            unit="step",
            unit_scale=True,
            disable=not cfg.progress,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        width = postfix_width()  # once: not a terminal query per update
        keep = self.loss_log_end if self.resumed else None
        losses = open_loss_log(self.run_dir / "losses.jsonl", keep)
        start, base, last_ckpt_time = time.perf_counter(), self.elapsed, time.monotonic()
        assert self.obs is not None, "the environments are reset (or restored) before training"
        try:
            while self.update < num_updates:
                self.obs = self.collect(self.obs)
                scalars = self.train_step()
                for msg in getattr(self.env, "drain_events", list)():
                    print(f"warning: {msg}", file=sys.stderr, flush=True)
                self.elapsed = base + time.perf_counter() - start
                self.pending.append(scalars)
                losses.write(json.dumps({"step": self.global_step, **scalars}) + "\n")
                losses.flush()
                bar.update(per_update)
                if not bar.disable:  # progress=false: no postfix to format
                    postfix = task_postfix(self.env.task_names, self.recent, width)
                    bar.set_postfix_str(postfix, refresh=False)
                if (
                    self.global_step - self.last_log >= cfg.log_interval
                    or self.update == num_updates
                ):
                    self._log(self.pending, self.elapsed)
                    self.pending, self.last_log = [], self.global_step
                check_divergence(
                    self.nonfinite_streak, cfg.max_nonfinite_updates, self.global_step, self.run_dir
                )
                due = self.global_step - self.last_ckpt >= cfg.checkpoint_interval or (
                    cfg.checkpoint_minutes > 0
                    and time.monotonic() - last_ckpt_time >= 60 * cfg.checkpoint_minutes
                )
                if stop.signum is not None or (due and self.nonfinite_streak == 0):
                    os.fsync(losses.fileno())
                    self.checkpoint()
                    last_ckpt_time = time.monotonic()
                if stop.signum is not None:
                    raise Interrupted(stop.signum, self.global_step, self.last_ckpt)
            if self.nonfinite_streak:  # the guard stops only at max_nonfinite_updates in a row
                print(
                    f"warning: the run's last {self.nonfinite_streak} updates were non-finite and "
                    "skipped, so it ended with the parameters from before them; lower agent.lr "
                    "or agent.max_grad_norm",
                    file=sys.stderr,
                    flush=True,
                )
            if self.last_ckpt != self.global_step:
                os.fsync(losses.fileno())
                self.checkpoint()
        finally:
            bar.close()
            losses.close()
            if self.writer is not None:
                self.writer.flush()

    def _log(self, pending: list[dict[str, float]], elapsed: float) -> None:
        if self.writer is None or not pending:
            return
        charts = {
            "sps": self.global_step / max(elapsed, 1e-9),
            "nonfinite_updates": self.nonfinite_total,
            "env_restarts": getattr(self.env, "restarts", 0),
        }
        write_interval(self.writer, pending, self.global_step, charts)

    def evaluate(self, policy: Callable[[Tensor], Tensor]) -> dict[str, Any]:
        """Evaluate ``policy`` on a fresh env (seeded apart from training) in every task."""
        return evaluate_on_fresh_env(self, policy)

    def _summary(self, elapsed: float) -> dict[str, Any]:
        return final_summary(self, elapsed)
