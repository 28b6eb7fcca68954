"""Learning within a fixed budget on the shipped four-rooms gridworld (4 goal tasks)."""

import torch

import train
from agents.config import load_config
from agents.evaluate import evaluate
from envs.gridworld import GridworldVecEnv


def _train_and_eval(
    tmp_path, agent: str, steps: int, config: str = "configs/gridworld_a2c.yaml"
) -> tuple[dict, GridworldVecEnv]:
    cfg = load_config(
        config,
        [f"agent.name={agent}", f"total_steps={steps}", "progress=false", "eval.episodes=0"],
    )
    runner = train.build(cfg, tmp_path / "run")
    runner.run()
    env = GridworldVecEnv(cfg.env.gridworld.map, None, 16)
    res = evaluate(env, lambda o: runner.agent.act(o, greedy=True), 64, 123, torch.device("cpu"))
    return res, env


def _assert_near_optimal(res: dict, env: GridworldVecEnv) -> None:
    assert len(res) == 4
    for task, stats in res.items():
        assert stats["episodes"] == 64
        assert stats["success_rate"] >= 0.95, (task, stats)
        assert stats["mean_length"] <= 1.25 * env.mean_optimal_length(task), (task, stats)


def test_a2c_independent_solves_four_rooms(tmp_path):
    _assert_near_optimal(*_train_and_eval(tmp_path, "a2c_independent", 200_000))


def test_distral_klent_2col_solves_four_rooms(tmp_path):
    res, env = _train_and_eval(
        tmp_path, "distral_klent_2col", 150_000, "configs/gridworld_distral.yaml"
    )
    _assert_near_optimal(res, env)
