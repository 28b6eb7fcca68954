"""Rollout storage: which observation is s_t, and how env results land in (T, K, E)."""

from pathlib import Path

import numpy as np
import torch

from agents.rollout import Rollout, obs_to_tensor

T, K, E = 3, 2, 2
PRESET = str(Path(__file__).resolve().parents[2] / "configs" / "gridworld_distral.yaml")


def test_step_obs_last_obs_and_unflatten_layouts():
    ro = Rollout(T, K, E, torch.device("cpu"), (1,))
    k, t, e = torch.meshgrid(torch.arange(K), torch.arange(T + 1), torch.arange(E), indexing="ij")
    ro.obs.copy_((100 * k + 10 * t + e).float().unsqueeze(-1))  # obs[k, t, e] = "k t e"
    steps = ro.step_obs()
    assert steps.shape == (K, T * E, 1)
    assert steps[1, 2 * E + 1, 0].item() == 121  # task 1, step 2, env 1
    assert ro.last_obs()[:, :, 0].tolist() == [[30.0, 31.0], [130.0, 131.0]]  # s_T
    back = ro.unflatten(steps)  # (T, K, E, 1)
    expected = (100 * k + 10 * t + e)[:, :T].permute(1, 0, 2).float()
    torch.testing.assert_close(back[..., 0], expected)


def test_insert_env_keeps_terminated_and_truncated_apart():
    ro = Rollout(T, K, E, torch.device("cpu"))
    ro.final_values.fill_(7.0)
    ro.insert_env(
        1,
        slice(1, 2),
        np.array([1.5, 2.5]),
        np.array([True, False]),
        np.array([False, True]),
    )
    assert ro.rewards[1].tolist() == [[0.0, 0.0], [1.5, 2.5]]
    assert ro.terminated[1].tolist() == [[False, False], [True, False]]
    assert ro.truncated[1].tolist() == [[False, False], [False, True]]
    assert ro.final_values[1].tolist() == [[7.0, 7.0], [0.0, 0.0]]  # the slots written
    assert not ro.terminated[0].any() and not ro.truncated[2].any()


def test_insert_env_copies_to_the_device_without_waiting_for_it(device_traffic):
    # gpu[i] = host synchronises the CUDA stream: three stalls per env step (meta stands in for
    # the GPU); obs_to_tensor's copy already did not wait
    ro = Rollout(T, K, E, torch.device("meta"))
    with device_traffic() as traffic:
        ro.insert_env(1, slice(1, 2), np.ones(2), np.ones(2, bool), np.zeros(2, bool))
        obs_to_tensor(np.zeros((K * E, 3), np.uint8), K, torch.device("meta"))
    assert traffic.blocking_copies == 0


def test_clear_forgets_the_learning_rewards():
    ro = Rollout(T, K, E, torch.device("cpu"))
    ro.learning_rewards = torch.ones(T, K, E)
    ro.clear()
    assert ro.learning_rewards is None


def test_runner_episode_clock_restarts_after_every_episode_end(tmp_path):
    """ep_time (the t of Distral's gamma^t distillation weight) counts steps inside the episode:
    0 at an episode's first step, +1 per step, back to 0 after a termination or truncation."""
    import train
    from agents.config import load_config

    cfg = load_config(
        PRESET,
        ["progress=false", "eval.episodes=0", "env.gridworld.max_episode_steps=3"],
    )
    runner = train.build(cfg, tmp_path / "run")
    try:
        obs = runner.reset()
        ro = runner.rollout
        ends = 0
        for _ in range(2):
            obs = runner.collect(obs)
            done = ro.terminated | ro.truncated
            ends += int(done.sum())
            for t in range(1, ro.num_steps):
                expected = torch.where(done[t - 1], 0.0, ro.ep_time[t - 1] + 1)
                torch.testing.assert_close(ro.ep_time[t], expected)
            assert float(ro.ep_time.max()) <= 2  # an episode here lasts at most 3 steps
        assert ends > 0
    finally:
        runner.env.close()


def test_runner_bootstraps_truncation_from_the_final_obs_not_the_reset_obs(tmp_path):
    """Same-step autoreset: where a step truncates, final_values holds V(final obs) of the finished
    episode (res.final_obs), not V of the next episode's first obs (res.obs); 0 elsewhere."""
    import train
    from agents.config import load_config

    cfg = load_config(
        PRESET,
        ["progress=false", "eval.episodes=0", "env.gridworld.max_episode_steps=3"],
    )
    runner = train.build(cfg, tmp_path / "run")
    env, results = runner.env, []
    step_wait = env.step_wait

    def recording_step_wait(tasks=None):
        results.append(step_wait(tasks))
        return results[-1]

    env.step_wait = recording_step_wait
    try:
        obs, ro = runner.reset(), runner.rollout
        k, e = runner.num_tasks, runner.envs_per_task
        differs = 0
        for _ in range(2):
            results.clear()
            obs = runner.collect(obs)
            for t, res in enumerate(results):
                trunc = torch.from_numpy(res.truncated & ~res.terminated).view(k, e)
                v_final = runner.agent.values(torch.from_numpy(res.final_obs).view(k, e, -1))
                v_reset = runner.agent.values(torch.from_numpy(res.obs).view(k, e, -1))
                torch.testing.assert_close(ro.final_values[t], torch.where(trunc, v_final, 0.0))
                differs += int((trunc & (v_final != v_reset)).sum())
        assert differs > 0  # the two candidates differed on some truncated slot
    finally:
        env.close()
