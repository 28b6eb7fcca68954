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


def test_the_fallback_never_reports_more_episodes_than_asked():
    # 1 episode asked of 3 slots, the cap hit before slot 2 finished one: slots 0 and 1 each
    # have one, and both were reported (2 episodes for eval.episodes=1)
    env = _Slots(periods=[1, 2, 0], rets=[1.0, 0.0, 0.0], lengths=[1, 2, 1])
    res = evaluate(env, _zeros, 1, 0, torch.device("cpu"), 5)["t0"]
    assert res["episodes"] == 1 and res["mean_return"] == 1.0  # slot 0's, the first in the round
    assert res["max_steps_reached"] is True
    env = _Slots(periods=[1, 1, 1, 0], rets=[1.0, 0.0, 0.0, 0.0], lengths=[1, 1, 1, 1])
    res = evaluate(env, _zeros, 5, 0, torch.device("cpu"), 5)["t0"]  # 2 per slot, 6 finished
    assert res["episodes"] == 5 and res["mean_return"] == 2 / 5  # round-robin: 0, 1, 2, 0, 1
    env = _Slots(periods=[1, 1, 1, 1, 0], rets=[0.0, 0.0, 0.0, 1.0, 0.0], lengths=[1] * 5)
    res = evaluate(env, _zeros, 6, 0, torch.device("cpu"), 5)["t0"]  # 2 per slot, 8 finished
    # round-robin 0, 1, 2, 3, 0, 1 takes slot 3's episode; slot by slot (0, 0, 1, 1, 2, 2) did not
    assert res["episodes"] == 6 and res["mean_return"] == 1 / 6


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


class _Slots:
    """``num_tasks`` tasks of ``len(periods)`` slots each: slot s finishes an episode every
    ``periods[s]`` steps with return ``rets[s]`` and length ``lengths[s]``; counts its steps."""

    def __init__(self, periods, rets, lengths, num_tasks=1):
        e = len(periods)
        self.num_tasks, self.num_envs_per_task, self.num_envs = num_tasks, e, num_tasks * e
        self.task_names = [f"t{k}" for k in range(num_tasks)]
        self.periods, self.rets, self.lengths = periods, rets, lengths
        self.t, self.seed, self.closed = 0, None, False

    def reset(self, seed=None):
        self.t, self.seed = 0, seed
        return np.zeros((self.num_envs, 3), dtype=np.float32)

    def step(self, actions):
        self.t += 1
        e = self.num_envs_per_task
        eps = [
            EpisodeStat(
                task=i // e, ret=self.rets[i % e] + i // e, length=self.lengths[i % e], slot=i
            )
            for i in range(self.num_envs)
            if self.periods[i % e] and self.t % self.periods[i % e] == 0
        ]
        return SimpleNamespace(obs=np.zeros((self.num_envs, 3), dtype=np.float32), episodes=eps)

    def close(self):
        self.closed = True


def _zeros(o):
    return torch.zeros(o.shape[:2], dtype=torch.long)


def test_round_robin_over_three_slots_and_the_exact_means():
    env = _Slots(periods=[1, 1, 1], rets=[1.0, 2.0, 4.0], lengths=[1, 2, 3])
    res = evaluate(env, _zeros, 4, 0, torch.device("cpu"), 1000)["t0"]
    # 2 rounds needed; episodes: slot 0, 1, 2 of round 1, then slot 0 of round 2 (not slot 0 twice
    # then slot 1 twice, which would leave slot 2 out)
    assert res["episodes"] == 4
    assert res["mean_return"] == (1 + 2 + 4 + 1) / 4  # the mean, not the median (1.5)
    assert res["mean_length"] == (1 + 2 + 3 + 1) / 4
    assert env.t == 2  # stops as soon as every slot has its 2 episodes


def test_max_steps_is_the_exact_number_of_steps_taken():
    # slot 1 finishes its 2nd episode at step 20: a cap of 19 steps leaves it one round short
    short = _run(episodes=4, max_steps=19)
    assert short["episodes"] == 2 and short["max_steps_reached"] is True
    full = _run(episodes=4, max_steps=20)
    assert full["episodes"] == 4 and "max_steps_reached" not in full


def test_human_normalised_is_of_each_tasks_own_mean_return():
    env = _Slots(periods=[1], rets=[1.0], lengths=[1], num_tasks=2)  # task k returns 1 + k
    env.human_normalised = lambda task, mean: 100 * task + mean
    res = evaluate(env, _zeros, 2, 0, torch.device("cpu"), 1000)
    assert res["t0"]["human_normalised"] == 1.0 and res["t0"]["mean_return"] == 1.0
    assert res["t1"]["human_normalised"] == 102.0 and res["t1"]["mean_return"] == 2.0


class _Agent(torch.nn.Module):
    def __init__(self, pi0: bool = False):
        super().__init__()
        self.name, self.has_pi0, self.modes = "fake", pi0, []
        if pi0:
            self.act_pi0 = self.act

    def act(self, obs, greedy=True):
        self.modes.append(self.training)
        return _zeros(obs)


def _runner(episodes=2, max_steps=50_000, periods=(1,), pi0=False):
    envs = []

    def make():
        envs.append(
            _Slots(periods=list(periods), rets=[1.0] * len(periods), lengths=[1] * len(periods))
        )
        return envs[-1]

    cfg = SimpleNamespace(
        seed=3, eval=SimpleNamespace(episodes=episodes, max_steps=max_steps, greedy=True)
    )
    r = SimpleNamespace(cfg=cfg, make_eval_env=make, agent=_Agent(pi0), device=torch.device("cpu"))
    r.global_step, r.update = 1000, 10
    return r, envs


def test_fresh_env_evaluation_seed_mode_cap_and_close():
    from agents.evaluate import evaluate_on_fresh_env

    r, envs = _runner(max_steps=7, periods=(0,))  # the slot never finishes: the cap ends it
    res = evaluate_on_fresh_env(r, r.agent.act)
    assert envs[0].seed == 3 + 10_000_000  # seeded apart from training (seed 3)
    assert envs[0].t == 7 and res["t0"]["episodes"] == 0 and res["t0"]["max_steps_reached"]
    assert set(r.agent.modes) == {False}  # evaluated in eval mode ...
    assert r.agent.training and envs[0].closed  # ... and put back in train mode; env closed


def test_no_evaluation_with_zero_episodes():
    from agents.evaluate import evaluate_on_fresh_env, final_summary

    r, envs = _runner(episodes=0, pi0=True)
    assert evaluate_on_fresh_env(r, r.agent.act) == {} and envs == []
    summary = final_summary(r, 0.5)
    assert summary["tasks"] == {} and "pi0_tasks" not in summary


def test_final_summary_totals():
    from agents.evaluate import final_summary

    r, _ = _runner(episodes=1)
    summary = final_summary(r, 0.5)
    assert summary["agent"] == "fake" and summary["total_steps"] == 1000  # env steps, not updates
    assert summary["sps"] == 2000.0  # 1000 steps in 0.5 s
    assert summary["tasks"]["t0"]["episodes"] == 1 and "pi0_tasks" not in summary
