"""The training loop: collect an n-step rollout -> per-task losses -> weighting -> step -> log.

The runner owns the environment, TensorBoard, the progress bar, checkpoints and the final
evaluation; agents own only acting and losses. Environment steps are counted over all envs.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from agents.base import Agent, make_optimizer
from agents.checkpoint import save_checkpoint
from agents.config import Config, to_dict, to_yaml
from agents.evaluate import evaluate
from agents.rollout import Rollout, obs_to_tensor
from mtrl.weighting.base import InternalOptimizerMixin


class EqualWeighting(torch.nn.Module):
    """Fallback weighting: backpropagate the plain sum of task losses."""

    def backward(self, losses: Tensor, shared_params: Any = None) -> Tensor:
        losses.sum().backward()
        return torch.ones_like(losses).detach()


class Runner:
    """Trains ``agent`` on ``env`` for ``cfg.total_steps`` environment steps, writing ``run_dir``."""

    def __init__(
        self,
        cfg: Config,
        env,
        agent: Agent,
        run_dir: Path,
        device: torch.device,
        weighting: torch.nn.Module | None = None,
        make_eval_env: Callable[[], Any] | None = None,
    ):
        self.cfg, self.env, self.agent, self.device = cfg, env, agent.to(device), device
        self.run_dir = Path(run_dir)
        self.weighting = (weighting or EqualWeighting()).to(device)
        self.make_eval_env = make_eval_env
        self.optimizers = agent.make_optimizers()
        # Learnable weighting parameters (e.g. uncertainty's log-variances) that the method does
        # not update itself get their own optimiser of the agent's kind.
        wparams = [p for p in self.weighting.parameters() if p.requires_grad]
        if wparams and not isinstance(self.weighting, InternalOptimizerMixin):
            self.optimizers.append(make_optimizer(cfg.agent, wparams))
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
        self.loss_history: list[dict[str, float]] = []
        self.writer = None

    # ----------------------------------------------------------------------------- helpers
    def _open_writer(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run_dir))
        self.writer.add_text("config", "```yaml\n" + to_yaml(self.cfg) + "\n```", 0)

    def _record_episodes(self, episodes: list) -> None:
        for ep in episodes:
            name = self.env.task_names[ep.task]
            self.recent[ep.task].append(ep.ret)
            self.episode_log.append((self.global_step, ep.task, ep.ret, ep.length))
            if self.writer is not None:
                self.writer.add_scalar(f"task/{name}/return", ep.ret, self.global_step)
                self.writer.add_scalar(f"task/{name}/length", ep.length, self.global_step)

    def _postfix(self) -> str:
        parts = []
        for name, rets in zip(self.env.task_names, self.recent):
            parts.append(f"{name[:10]}={np.mean(rets):.2f}" if rets else f"{name[:10]}=-")
        return " ".join(parts)

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
        groups = self.task_groups()
        whole = len(groups) == 1  # then the env is stepped without a task slice
        ro.obs[:, 0] = obs

        def act(g: slice, t: int) -> None:
            actions = self.agent.step(ro.obs[g, t], g)
            ro.actions[t, g] = actions
            env.step_async(actions.reshape(-1).cpu().numpy(), None if whole else g)

        for g in groups:
            act(g, 0)
        for t in range(ro.num_steps):
            for g in groups:
                res = env.step_wait(None if whole else g)
                self._record_step(t, g, res)
                if t + 1 < ro.num_steps:
                    act(g, t + 1)
        return ro.obs[:, ro.num_steps]

    def _record_step(self, t: int, g: slice, res) -> None:
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

    def reset(self) -> Tensor:
        """Reset every env with the run's seed; return the first observation (K, E, *obs)."""
        return obs_to_tensor(self.env.reset(seed=self.cfg.seed), self.num_tasks, self.device)

    def train_step(self) -> dict[str, float]:
        """Losses -> weighting.backward -> clip -> optimizer steps; returns logged scalars."""
        task_losses, terms = self.agent.task_losses(self.rollout)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        weights = self.weighting.backward(task_losses, self.agent.shared_parameters())
        grad_norm = torch.tensor(0.0)
        if self.cfg.agent.max_grad_norm > 0:
            for opt in self.optimizers:
                params = [p for g in opt.param_groups for p in g["params"]]
                grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.agent.max_grad_norm)
        for opt in self.optimizers:
            opt.step()
        self.update += 1
        logged: dict[str, float] = {}
        for key, value in terms.items():
            value = value.detach()
            logged[f"losses/{key}"] = float(value.mean())
            if value.ndim == 1:  # per-task diagnostic (K,)
                for name, v in zip(self.env.task_names, value.cpu().tolist()):
                    logged[f"task/{name}/{key}"] = v
        self._track_learning_return()
        logged["losses/total"] = float(task_losses.detach().sum())
        logged["losses/grad_norm"] = float(grad_norm)
        for name, w in zip(self.env.task_names, weights.detach().cpu().tolist()):
            logged[f"weights/{name}"] = w
        return logged

    def _track_learning_return(self) -> None:
        """Episode sums of the rewards the agent learned from (Distral: regularised return)."""
        ro = self.rollout
        if ro.learning_rewards is None:
            return
        done = (ro.terminated | ro.truncated).cpu().numpy()
        rewards = ro.learning_rewards.cpu().numpy()
        for t in range(ro.num_steps):
            self.learning_return += rewards[t]
            for k, e in zip(*np.nonzero(done[t])):
                name = self.env.task_names[k]
                if self.writer is not None:
                    value = float(self.learning_return[k, e])
                    self.writer.add_scalar(
                        f"task/{name}/regularised_return", value, self.global_step
                    )
                self.learning_return[k, e] = 0.0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training (see agents.checkpoint)."""
        return {
            "agent_name": self.agent.name,
            "agent": self.agent.state_dict(),
            "optimizers": [opt.state_dict() for opt in self.optimizers],
            "weighting": self.weighting.state_dict(),
            "global_step": self.global_step,
            "ep_time": self.ep_time,
            "update": self.update,
            "config": to_dict(self.cfg),
        }

    def checkpoint(self) -> None:
        save_checkpoint(self.state_dict(), self.run_dir / "checkpoints" / "last.pt")

    def run(self) -> dict[str, Any]:
        """Train to ``total_steps``, checkpoint, evaluate, write ``summary.json``; return it."""
        from tqdm import tqdm

        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(to_yaml(cfg))
        self._open_writer()
        per_update = cfg.agent.n_steps * self.env.num_envs
        num_updates = math.ceil(cfg.total_steps / per_update)
        obs = self.reset()
        bar = tqdm(
            total=num_updates * per_update,
            unit="step",
            unit_scale=True,
            disable=not cfg.progress,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        start, last_log, last_ckpt = time.perf_counter(), 0, 0
        pending: list[dict[str, float]] = []
        try:
            for _ in range(num_updates):
                obs = self.collect(obs)
                scalars = self.train_step()
                pending.append(scalars)
                self.loss_history.append(scalars)
                bar.update(per_update)
                bar.set_postfix_str(self._postfix(), refresh=False)
                if self.global_step - last_log >= cfg.log_interval or _ == num_updates - 1:
                    self._log(pending, time.perf_counter() - start)
                    pending, last_log = [], self.global_step
                if self.global_step - last_ckpt >= cfg.checkpoint_interval:
                    self.checkpoint()
                    last_ckpt = self.global_step
        finally:
            bar.close()
        elapsed = time.perf_counter() - start
        self.checkpoint()
        summary = self._summary(elapsed)
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        if self.writer is not None:
            self.writer.close()
        return summary

    def _log(self, pending: list[dict[str, float]], elapsed: float) -> None:
        if self.writer is None or not pending:
            return
        for key in pending[-1]:
            self.writer.add_scalar(key, float(np.mean([p[key] for p in pending])), self.global_step)
        self.writer.add_scalar(
            "charts/sps", self.global_step / max(elapsed, 1e-9), self.global_step
        )

    def evaluate(self, policy: Callable[[Tensor], Tensor]) -> dict[str, Any]:
        """Evaluate ``policy`` on a fresh env (seeded apart from training) in every task."""
        if self.make_eval_env is None or self.cfg.eval.episodes <= 0:
            return {}
        env = self.make_eval_env()
        try:
            self.agent.eval()
            return evaluate(
                env,
                policy,
                self.cfg.eval.episodes,
                seed=self.cfg.seed + 10_000_000,
                device=self.device,
                max_steps=self.cfg.eval.max_steps,
            )
        finally:
            self.agent.train()
            env.close()

    def _summary(self, elapsed: float) -> dict[str, Any]:
        greedy = self.cfg.eval.greedy
        summary: dict[str, Any] = {
            "agent": self.agent.name,
            "total_steps": self.global_step,
            "sps": self.global_step / max(elapsed, 1e-9),
            "tasks": self.evaluate(lambda o: self.agent.act(o, greedy=greedy)),
        }
        act_pi0 = getattr(self.agent, "act_pi0", None)
        if act_pi0 is not None and summary["tasks"]:
            # Distral's distilled policy pi0 in every task: the multi-task policy that transfers.
            summary["pi0_tasks"] = self.evaluate(lambda o: act_pi0(o, greedy=greedy))
        return summary
