"""agents.runstate: what a checkpoint that does not fit the run reports."""

import torch


def test_checkpoint_mismatch_message_names_the_tensor():
    # load_state_dict's first line only says "Error(s) in loading state_dict for Linear:"
    from agents.runstate import _fail

    try:
        torch.nn.Linear(3, 2).load_state_dict(torch.nn.Linear(4, 2).state_dict())
    except RuntimeError as e:
        msg = str(_fail("agent parameters", e))
    assert "size mismatch for weight" in msg and "Error(s) in loading" not in msg


def test_older_checkpoints_resume_only_where_their_meaning_is_unchanged(tmp_path):
    """Version 1 task heads held f_i (a 2-column Distral agent now reads them as beta * f_i);
    before version 3 a task's gradient was 1/K of its own mean's, and the per-task optimisers'
    statistics hold that scale. A network only pooled (a2c_multitask) got and gets the mean."""
    import pytest

    import train
    from agents import runstate
    from agents.config import ConfigError, load_config

    head, scale = "predates the 2-column head change", "predates the per-task gradient change"
    cases = {
        "a2c_multitask": {1: None, 2: None},
        "a2c_2col": {1: scale, 2: scale},
        "distral_kl_1col": {1: scale, 2: scale},
        "distral_kl_2col": {1: head, 2: scale},
    }
    for name, refusals in cases.items():
        cfg = load_config(
            "configs/gridworld_distral.yaml",
            [f"agent.name={name}", "progress=false", "eval.episodes=0", "env.num_envs_per_task=1"],
        )
        runner = train.build(cfg, tmp_path / name)
        try:
            runner.reset()
            state = runstate.capture(runner)
            runstate.restore(runner, state)  # the current version always loads
            for version, refusal in refusals.items():
                old = {**state, "version": version}
                if refusal is None:
                    runstate.restore(runner, old)
                else:
                    with pytest.raises(ConfigError, match=refusal):
                        runstate.restore(runner, old)
        finally:
            runner.env.close()


def test_loop_state_round_trips_and_foreign_state_is_refused(tmp_path):
    """Counters, accumulators and episode bookkeeping come back exactly; a checkpoint of another
    state version or task list is refused."""
    from collections import deque

    import numpy as np
    import pytest

    import train
    from agents import runstate
    from agents.config import ConfigError, load_config

    def build(name):
        cfg = load_config(
            "configs/gridworld_distral.yaml",
            ["progress=false", "eval.episodes=0", "env.num_envs_per_task=1"],
        )
        return train.build(cfg, tmp_path / name)

    src, dst = build("src"), build("dst")
    try:
        src.obs = src.reset()
        dst.obs = dst.reset()
        src.global_step, src.update, src.nonfinite_total, src.nonfinite_streak = 40, 5, 3, 2
        src.learning_return = (
            np.arange(src.learning_return.size, dtype=np.float64).reshape(src.learning_return.shape)
            + 0.5
        )
        src.ep_time.fill_(7.0)
        src.recent = [deque([1.0, 2.0], maxlen=10) for _ in src.recent]
        src.episode_log = [(8, 0, 1.5, 4)]
        src.pending = [{"step": 8, "task": 0}]
        state = runstate.capture(src)
        runstate.restore(dst, state)
        counters = ("global_step", "update", "nonfinite_total", "nonfinite_streak")
        assert [getattr(dst, k) for k in counters] == [40, 5, 3, 2]
        np.testing.assert_array_equal(dst.learning_return, src.learning_return)
        torch.testing.assert_close(dst.ep_time, src.ep_time)
        assert [list(d) for d in dst.recent] == [[1.0, 2.0]] * len(src.recent)
        assert dst.episode_log == [(8, 0, 1.5, 4)] and dst.pending == [{"step": 8, "task": 0}]
        with pytest.raises(ConfigError, match="version 99"):
            runstate.restore(dst, {**state, "version": 99})
        env = {**state["env"], "tasks": list(reversed(state["env"]["tasks"]))}
        with pytest.raises(ConfigError, match="differ from this run"):
            runstate.restore(dst, {**state, "env": env})
    finally:
        src.env.close()
        dst.env.close()


def test_a_runner_warns_when_the_checkpoint_had_other_settings(tmp_path):
    """train.py --resume refuses a changed agent.n_steps; the Python API lets a script mean it,
    but says the continuation is not exact (it used to continue without a word)."""
    import warnings

    import pytest

    import train
    from agents import runstate
    from agents.config import load_config

    def build(name, *extra):
        args = ["progress=false", "eval.episodes=0", "env.num_envs_per_task=1", *extra]
        return train.build(load_config("configs/gridworld_distral.yaml", args), tmp_path / name)

    src = build("src")
    src.obs = src.reset()
    state = runstate.capture(src)
    src.env.close()
    same = build("same", "log_interval=7", "device=cpu")  # settings a resume may change
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_state_dict(state)
    same.env.close()
    other = build("other", "agent.n_steps=8", "agent.lr=0.01")
    with pytest.warns(RuntimeWarning, match=r"other values of agent\.lr, agent\.n_steps; training"):
        other.load_state_dict(state)
    other.env.close()
    assert runstate.changed_settings(other, {**state, "config": None}) == []
    foreign = {**state, "config": {**state["config"], "no_such_key": 1}}
    assert runstate.changed_settings(other, foreign) == [
        "(the checkpoint's config does not fit this version's schema)"
    ]
