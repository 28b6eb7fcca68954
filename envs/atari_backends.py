"""The two backends behind :class:`envs.atari.AtariVecEnv`, with one interface (``reset``,
``send``, ``recv``, ``discard``, ``action_sets``, ``close``): ale-py's native vector env, one per
game, and a gymnasium ``SyncVectorEnv`` of the single-game wrapper chain."""

from __future__ import annotations

import os
from typing import Any, cast

import gymnasium as gym
import numpy as np

from envs.base import EnvError


def _action_set_error(games: list[str], sets: list[list[int]]) -> None:
    sizes = {g: len(s) for g, s in zip(games, sets, strict=True)}
    raise EnvError(
        f"games have different minimal action sets {sizes}; set env.atari.full_action_space=true "
        "(full_action_space=True in code) for ALE's common 18 actions"
    )


class _NativeBackend:
    """One ``AtariVectorEnv`` per game; obs/rewards concatenated task-major.

    ale-py's own frame limit returns a truncation frame that differs from the frame a normal step
    gives, so its limit is set past ours and we truncate at ``max_episode_steps`` ourselves (a
    partial ``reset_mask`` reset), matching the gymnasium backend's ``TimeLimit`` exactly.
    """

    def __init__(self, games: list[str], num_envs: int, cfg: dict[str, Any]) -> None:
        from ale_py.vector_env import AtariVectorEnv

        self.num_envs = num_envs
        self.max_steps = int(cfg["max_episode_steps"])
        self.t = np.zeros(len(games) * num_envs, np.int64)
        self.envs = [
            AtariVectorEnv(
                game,
                num_envs,
                # About one emulator thread per core in total: oversubscribing is slower.
                num_threads=max(1, min(num_envs, (os.cpu_count() or 1) // len(games))),
                max_num_frames_per_episode=(self.max_steps + 2) * int(cfg["frameskip"]),
                repeat_action_probability=float(cfg["repeat_action_probability"]),
                full_action_space=bool(cfg["full_action_space"]),
                autoreset_mode="SameStep",
                img_height=int(cfg["screen_size"]),
                img_width=int(cfg["screen_size"]),
                grayscale=True,
                stack_num=int(cfg["frame_stack"]),
                frameskip=int(cfg["frameskip"]),
                maxpool=True,
                noop_max=int(cfg["noop_max"]),
                episodic_life=False,
                reward_clipping=False,
                use_fire_reset=False,
            )
            for game in games
        ]

    def action_sets(self) -> list[list[int]]:
        return [[int(a.value) for a in env.ale.get_action_set()] for env in self.envs]

    def reset(self, seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        obs, lives = [], []
        for k, env in enumerate(self.envs):
            seed = None if seeds is None else seeds[k * self.num_envs : (k + 1) * self.num_envs]
            o, info = env.reset(seed=seed)
            order = np.argsort(info["env_id"])
            obs.append(o[order])
            lives.append(info["lives"][order])
        self.t[:] = 0
        return np.concatenate(obs), np.concatenate(lives).astype(np.int64)

    def discard(self, games: range | None = None) -> None:
        """Receive and drop the results of a step sent to ``games`` (before a reset)."""
        for k in games or range(len(self.envs)):
            self.envs[k].recv()

    def send(self, actions: np.ndarray, games: range | None = None) -> None:
        games = games or range(len(self.envs))
        for i, k in enumerate(games):
            self.envs[k].send(actions[i * self.num_envs : (i + 1) * self.num_envs])

    def recv(self, games: range | None = None) -> tuple[np.ndarray, ...]:
        parts = []
        for k in games or range(len(self.envs)):
            env = self.envs[k]
            obs, rew, term, trunc, info = env.recv()
            order = np.argsort(info["env_id"])
            final = obs.copy()
            done = term | trunc
            if done.any():
                final[done] = info["final_obs"][done]
            obs, rew, term, trunc, final = (
                obs[order],
                rew[order],
                term[order],
                trunc[order],
                final[order],
            )
            lives = info["lives"][order]
            t = self.t[k * self.num_envs : (k + 1) * self.num_envs]  # a view: updated in place
            t += 1
            cut = ~(term | trunc) & (t >= self.max_steps)
            if cut.any():
                o, reset_info = env.reset(options={"reset_mask": cut})
                ids = np.asarray(reset_info["env_id"])
                obs[cut] = o[np.argsort(ids)][cut]
                lives = np.where(cut, np.asarray(reset_info["lives"])[np.argsort(ids)], lives)
                trunc = trunc | cut
            t[term | trunc] = 0
            parts.append((obs, rew, term, trunc, lives, final))
        obs, rew, term, trunc, lives, final = (np.concatenate(p) for p in zip(*parts, strict=True))
        return obs, rew.astype(np.float64), term, trunc, lives.astype(np.int64), final

    def close(self) -> None:
        for env in self.envs:
            env.close()


class _GymnasiumBackend:
    """``SyncVectorEnv`` of the single-game wrapper chain, same-step autoreset."""

    def __init__(self, games: list[str], num_envs: int, cfg: dict[str, Any]) -> None:
        from envs.atari import make_atari_env  # here: envs.atari imports this module

        envs = [make_atari_env(g, **cfg) for g in games for _ in range(num_envs)]
        # ALE's AtariEnv keeps its action set private; gymnasium's Env type does not know it
        sets = [cast(Any, e.unwrapped)._action_set for e in envs[::num_envs]]
        self.sets = [[int(a.value) for a in s] for s in sets]
        if any(s != self.sets[0] for s in self.sets):  # SyncVectorEnv would refuse them
            for e in envs:
                e.close()
            _action_set_error(games, self.sets)
        fns = [lambda e=e: e for e in envs]
        self.vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        self.num_envs = num_envs
        self._actions: np.ndarray | None = None

    def action_sets(self) -> list[list[int]]:
        return self.sets

    def reset(self, seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        obs, info = self.vec.reset(seed=None if seeds is None else [int(s) for s in seeds])
        return obs, np.asarray(info["lives"], np.int64)

    def discard(self, games: range | None = None) -> None:
        """Forget a step that was sent but not received (nothing has run yet)."""
        self._actions = None

    def send(self, actions: np.ndarray, games: range | None = None) -> None:
        assert games is None, "the gymnasium backend steps all games together"
        self._actions = actions

    def recv(self, games: range | None = None) -> tuple[np.ndarray, ...]:
        obs, rew, term, trunc, info = self.vec.step(self._actions)
        final = obs.copy()
        done = np.asarray(info.get("_final_obs", np.zeros(len(obs), bool)))
        for i in np.flatnonzero(done):
            final[i] = info["final_obs"][i]
        lives = np.asarray(info["lives"], np.int64)
        return obs, np.asarray(rew, np.float64), term, trunc, lives, final

    def close(self) -> None:
        self.vec.close()
