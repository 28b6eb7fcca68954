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
