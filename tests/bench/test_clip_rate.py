"""bench/clip_rate.py: its arithmetic by hand, and the norms it records are the clipper's."""

import pytest


def test_summarise_by_hand():
    from bench.clip_rate import summarise

    tasks = [[0.3, 0.6], [0.1, 0.2], [1.0, 0.0]]  # sorted: 0, .1, .2, .3, .6, 1
    s = summarise(tasks, [0.2, 0.7, 0.9], max_norm=0.5)
    assert s["task_median"] == 0.3 and s["task_p90"] == 1.0
    assert s["task_clipped"] == pytest.approx(2 / 6)
    # old joint norms: sqrt(.45)/2 = .335, sqrt(.05)/2 = .112, 1/2 = .5 (not above the clip)
    assert s["old_joint_clipped"] == 0.0
    assert s["pooled_median"] == 0.7 and s["pooled_clipped"] == pytest.approx(2 / 3)
    assert summarise([], [], 0.5) == {}


def test_recorded_norms_are_what_the_clip_sees(tmp_path):
    import train
    from agents.config import load_config
    from bench.clip_rate import record

    cfg = load_config(
        "configs/gridworld_distral.yaml",
        ["progress=false", "eval.episodes=0", "env.num_envs_per_task=2", "agent.hidden=[8]"],
    )
    runner = train.build(cfg, tmp_path / "run")
    logged = []
    step = runner.train_step
    runner.train_step = lambda: logged.append(step()) or logged[-1]
    try:
        tasks, pooled = record(runner, 2)
    finally:
        runner.env.close()
    assert [len(row) for row in tasks] == [runner.num_tasks] * 2 and len(pooled) == 2
    for row, mean, scalars in zip(tasks, pooled, logged, strict=True):
        total = (sum(v * v for v in row) + mean * mean) ** 0.5  # the norm the runner logs
        assert scalars["losses/grad_norm"] == pytest.approx(total, rel=1e-5)
