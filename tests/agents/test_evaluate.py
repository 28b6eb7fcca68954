"""agents.evaluate: which episodes count, so short episodes are not over-weighted."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from agents.evaluate import evaluate
from envs.base import EpisodeStat


class _TwoSpeeds:
    """One task, two slots: slot 0 finishes a won episode (return 1) every step, slot 1 a lost
    one (return 0) every ``slow`` steps."""

    num_tasks, num_envs_per_task, num_envs, task_names = 1, 2, 2, ["t"]

    def __init__(self, slow: int) -> None:
        self.slow, self.t = slow, 0

    def reset(self, seed=None):
        self.t = 0
        return np.zeros((2, 3), dtype=np.float32)

    def step(self, actions):
        self.t += 1
        eps = [EpisodeStat(task=0, ret=1.0, length=1, slot=0)]
        if self.t % self.slow == 0:
            eps.append(EpisodeStat(task=0, ret=0.0, length=self.slow, slot=1))
        return SimpleNamespace(obs=np.zeros((2, 3), dtype=np.float32), episodes=eps)


def _run(episodes: int, max_steps: int, slow: int = 10):
    policy = lambda o: torch.zeros(o.shape[:2], dtype=torch.long)  # noqa: E731
    return evaluate(_TwoSpeeds(slow), policy, episodes, 0, torch.device("cpu"), max_steps)["t"]


def test_episodes_alternate_over_slots_and_match_the_request():
    res = _run(episodes=3, max_steps=1000)
    # round-robin: slot 0's 1st, slot 1's 1st, slot 0's 2nd (it used to report 4 = 2 per slot)
    assert res["episodes"] == 3
    assert res["success_rate"] == 2 / 3
    assert res["mean_length"] == (1 + 10 + 1) / 3
    assert "max_steps_reached" not in res


def test_a_step_cap_keeps_only_complete_rounds():
    res = _run(episodes=4, max_steps=15)  # slot 0 has 2 episodes, slot 1 only 1
    # one round: one won, one lost; counting all 3 finished made it 2/3, favouring short episodes
    assert res["episodes"] == 2 and res["success_rate"] == 0.5
    assert res["max_steps_reached"] is True


def test_a_slot_without_any_episode_falls_back_to_what_finished():
    res = _run(episodes=4, max_steps=5)  # slot 1 never finishes
    assert res["episodes"] == 2 and res["success_rate"] == 1.0
    assert res["max_steps_reached"] is True


def test_eval_greedy_false_samples_both_distral_policies(tmp_path):
    """``eval.greedy`` reaches the final evaluation of pi_i and of pi0 (the Atari and MinAtar
    presets sample there: a near-uniform greedy policy is one fixed action)."""
    import train
    from agents.config import load_config
    from agents.evaluate import final_summary

    for greedy in (False, True):
        cfg = load_config(
            "configs/gridworld_distral.yaml",
            ["eval.episodes=2", f"eval.greedy={str(greedy).lower()}", "progress=false"],
        )
        runner = train.build(cfg, tmp_path / f"run{greedy}")
        seen = []
        for name in ("act", "act_pi0"):
            orig = getattr(runner.agent, name)

            def spy(obs, greedy=True, orig=orig, name=name, seen=seen, **kw):
                seen.append((name, greedy))
                return orig(obs, greedy=greedy, **kw)

            setattr(runner.agent, name, spy)
        try:
            summary = final_summary(runner, 1.0)
        finally:
            runner.env.close()
        assert summary["tasks"] and summary["pi0_tasks"]
        assert {n for n, _ in seen} == {"act", "act_pi0"}
        assert {g for _, g in seen} == {greedy}
