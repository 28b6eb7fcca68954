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


def test_version_1_checkpoints_resume_except_two_column_distral(tmp_path):
    """Version 1 task heads held f_i; a 2-column Distral agent now reads them as beta * f_i."""
    import pytest

    import train
    from agents import runstate
    from agents.config import ConfigError, load_config

    for name, ok in (("a2c_2col", True), ("distral_kl_1col", True), ("distral_kl_2col", False)):
        cfg = load_config(
            "configs/gridworld_distral.yaml",
            [f"agent.name={name}", "progress=false", "eval.episodes=0", "env.num_envs_per_task=1"],
        )
        runner = train.build(cfg, tmp_path / name)
        try:
            runner.reset()
            state = runstate.capture(runner)
            runstate.restore(runner, state)  # the current version always loads
            state["version"] = 1
            if ok:
                runstate.restore(runner, state)
            else:
                with pytest.raises(ConfigError, match="predates the 2-column head change"):
                    runstate.restore(runner, state)
        finally:
            runner.env.close()
