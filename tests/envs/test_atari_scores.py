"""Human-normalised Atari scores: the reference table and where it is reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.evaluate import evaluate
from envs.atari import AtariVecEnv, rom_ids
from envs.atari_scores import REFERENCE_SCORES, human_normalised
from envs.gridworld import GridworldVecEnv


def test_human_normalised_by_hand():
    assert human_normalised("pong", -20.7) == 0.0  # random
    assert human_normalised("pong", 14.6) == pytest.approx(1.0)  # human
    assert human_normalised("pong", 21.0) == pytest.approx((21.0 + 20.7) / 35.3)
    assert human_normalised("breakout", 30.5) == pytest.approx(1.0)
    assert human_normalised("lost_luggage", 100.0) is None  # not in Atari-57
    assert human_normalised("pong", float("nan")) is None


def test_table_covers_atari_57_with_ale_rom_ids():
    assert len(REFERENCE_SCORES) == 57
    assert set(REFERENCE_SCORES) <= set(rom_ids())
    assert all(human != random for random, human in REFERENCE_SCORES.values())


@pytest.mark.atari
def test_evaluation_reports_human_normalised_atari_only():
    env = AtariVecEnv(["Pong", "Breakout"], num_envs_per_task=1, max_episode_steps=20)
    assert env.human_normalised(1, 30.5) == pytest.approx(1.0)  # task 1 is breakout
    res = evaluate(
        env, lambda o: torch.zeros(o.shape[:2], dtype=torch.long), 1, 0, torch.device("cpu")
    )
    env.close()
    for game in ("pong", "breakout"):
        assert res[game]["human_normalised"] == pytest.approx(
            human_normalised(game, res[game]["mean_return"])
        )
    grid = GridworldVecEnv("four_rooms", num_envs_per_task=1, max_episode_steps=5)
    res = evaluate(
        grid, lambda o: torch.zeros(o.shape[:2], dtype=torch.long), 1, 0, torch.device("cpu")
    )
    assert all("human_normalised" not in v for v in res.values())
    assert np.isfinite([v["mean_return"] for v in res.values()]).all()


@pytest.mark.atari
def test_worker_env_forwards_the_suite_references():
    from envs.workers import WorkerVecEnv

    env = WorkerVecEnv("atari", ["Pong"], 1, {"max_episode_steps": 5})
    try:
        assert env.human_normalised(0, 14.6) == pytest.approx(1.0)
    finally:
        env.close()
    env = WorkerVecEnv("gridworld", None, 1)
    try:
        assert env.human_normalised(0, 1.0) is None
    finally:
        env.close()


@pytest.mark.parametrize(
    ("game", "random", "human"),
    [
        # (random, human) no-op-start references, Badia et al. 2020 (Agent57) Table H.1-H.2, as
        # in DeepMind's dqn_zoo atari_data.py: the default tasks, the games named like MinAtar's,
        # every game with a negative reference, and the near-tie Video Pinball.
        ("pong", -20.7, 14.6),
        ("breakout", 1.7, 30.5),
        ("space_invaders", 148.0, 1668.7),
        ("seaquest", 68.4, 42054.7),
        ("asterix", 210.0, 8503.3),
        ("freeway", 0.0, 29.6),
        ("alien", 227.8, 7127.7),
        ("montezuma_revenge", 0.0, 4753.3),
        ("ms_pacman", 307.3, 6951.6),
        ("double_dunk", -18.6, -16.4),
        ("fishing_derby", -91.7, -38.7),
        ("ice_hockey", -11.2, 0.9),
        ("pitfall", -229.4, 6463.7),
        ("skiing", -17098.1, -4336.9),
        ("surround", -10.0, 6.5),
        ("tennis", -23.8, -8.3),
        ("video_pinball", 16256.9, 17667.9),
        ("zaxxon", 32.5, 9173.3),
    ],
)
def test_reference_scores_match_the_published_table(game, random, human):
    assert REFERENCE_SCORES[game] == (random, human)
    assert human_normalised(game, random) == 0.0
    assert human_normalised(game, human) == pytest.approx(1.0)
