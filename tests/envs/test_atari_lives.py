"""Life-loss termination against a scripted backend: only a drop in ``lives`` ends a learning
episode (a game that awards an extra life must not), and a game over is never counted twice."""

from __future__ import annotations

import numpy as np
import pytest

import envs.atari as atari


class _ScriptedBackend:
    """One game, one slot, 18 actions; ``lives`` and game ends follow a fixed script."""

    def __init__(self, games: list[str], num_envs: int, cfg: dict) -> None:
        self.script = iter(SCRIPT)

    def action_sets(self) -> list[list[int]]:
        return [list(range(18))]

    def reset(self, seeds: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros((1, 4, 84, 84), np.uint8), np.array([3])

    def send(self, actions: np.ndarray, games: range | None = None) -> None:
        pass

    def recv(self, games: range | None = None) -> tuple[np.ndarray, ...]:
        lives, term, trunc = next(self.script)
        obs = np.zeros((1, 4, 84, 84), np.uint8)
        return obs, np.zeros(1), np.array([term]), np.array([trunc]), np.array([lives]), obs


# (lives after the step, game over, time limit): gain a life, lose it, keep, lose, lose the last
# (game over with lives 0: one termination); the next game starts at 3 (a rise, not a loss),
# loses one, and is cut by the time limit as it loses another (a truncation: bootstrapped).
SCRIPT = [
    (4, False, False),
    (3, False, False),
    (3, False, False),
    (2, False, False),
    (0, True, False),
    (3, False, False),
    (2, False, False),
    (1, False, True),
]


@pytest.mark.parametrize("life_loss", [True, False])
def test_only_a_drop_in_lives_terminates(monkeypatch, life_loss):
    monkeypatch.setattr(atari, "_NativeBackend", _ScriptedBackend)
    env = atari.AtariVecEnv(["pong"], 1, backend="native", terminal_on_life_loss=life_loss)
    env.reset(seed=0)
    terminated, truncated, episodes = [], [], []
    for _ in SCRIPT:
        res = env.step(np.zeros(1, np.int64))
        terminated.append(bool(res.terminated[0]))
        truncated.append(bool(res.truncated[0]))
        episodes += [e.length for e in res.episodes]
    if life_loss:
        assert terminated == [False, True, False, True, True, False, True, False]
    else:
        assert terminated == [False, False, False, False, True, False, False, False]
    assert truncated == [False] * 7 + [True]
    assert episodes == [5, 3]  # whole games, however many lives each ended
