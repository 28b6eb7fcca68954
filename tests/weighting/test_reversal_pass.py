"""Gradient reversal in one backward (mtrl.weighting.reversal_pass): known answers, agreement
with the two-pass path, and the graphs that must take the two passes."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mtrl.weighting as W
import mtrl.weighting.gradient_reversal as reversal_module
from mtrl.architectures import build_mlp
from mtrl.weighting.reversal_pass import reversed_backward


def test_trunk_reversed_heads_plain_by_hand():
    # z = theta x with x = (1, 2), theta = 3: z = (3, 6). L1 = sum(a z), a = 2 (normal):
    # dL1/dtheta = a sum(x) = 6, dL1/da = sum(z) = 9. L2 = sum(b z^2), b = 0.5 (adversary):
    # dL2/dtheta = b sum(2 z x) = 0.5 (6 + 24) = 15, dL2/db = sum(z^2) = 45.
    # lambda = 0.5: theta gets 6 - 0.5 * 15 = -1.5; a and b their own gradients.
    theta, a, b = (torch.tensor(v, requires_grad=True) for v in (3.0, 2.0, 0.5))
    z = theta * torch.tensor([1.0, 2.0])
    assert reversed_backward([(a * z).sum(), (b * z**2).sum()], [theta], [False, True], 0.5)
    torch.testing.assert_close(theta.grad, torch.tensor(-1.5))
    torch.testing.assert_close(a.grad, torch.tensor(9.0))
    torch.testing.assert_close(b.grad, torch.tensor(45.0))


def test_an_adversary_whose_loss_reads_the_trunk_directly_and_through_its_head():
    # L2 = sum(b z) + sum(z^2): its node leads to b and to theta, the z^2 branch to theta only
    # (pure), so that branch's edge and the head's edge into z are turned, b's is not.
    # dL2/dtheta = b sum(x) + sum(2 z x) = 0.5 * 3 + 30 = 31.5; dL2/db = sum(z) = 9.
    # A third task's loss is the trunk alone (its node pure): its seed is turned.
    theta, a, b = (torch.tensor(v, requires_grad=True) for v in (3.0, 2.0, 0.5))
    z = theta * torch.tensor([1.0, 2.0])
    losses = [(a * z).sum(), (b * z).sum() + (z**2).sum(), z.sum()]
    assert reversed_backward(losses, [theta], [False, True, True], 2.0)
    # 6 - 2 * 31.5 - 2 * 3
    torch.testing.assert_close(theta.grad, torch.tensor(6.0 - 63.0 - 6.0))
    torch.testing.assert_close(a.grad, torch.tensor(9.0))
    torch.testing.assert_close(b.grad, torch.tensor(9.0))


def test_features_mode_and_stacked_losses():
    # targets = [z]: the trunk behind z gets z's gradient, the normal part plus -lambda times
    # the adversary's: d/dtheta [sum(a z) - 0.5 sum(b z^2)] = -1.5 as above
    theta, a, b = (torch.tensor(v, requires_grad=True) for v in (3.0, 2.0, 0.5))
    z = theta * torch.tensor([1.0, 2.0])
    stacked = torch.stack([(a * z).sum(), (b * z**2).sum()])
    assert reversed_backward(stacked, [z], [False, True], 0.5, features=z)
    torch.testing.assert_close(theta.grad, torch.tensor(-1.5))
    torch.testing.assert_close(b.grad, torch.tensor(45.0))


def test_hooks_are_removed_after_the_pass():
    # nodes that save no tensors (expand, add, sum), so the graph takes a second backward
    theta, b = torch.tensor(1.0, requires_grad=True), torch.zeros(3, requires_grad=True)
    z = theta.expand(3)
    loss = (z + b).sum()
    assert reversed_backward([loss], [theta], [True], 1.0)
    torch.testing.assert_close(theta.grad, torch.tensor(-3.0))
    loss.backward()  # a hook left behind would turn this one too
    torch.testing.assert_close(theta.grad, torch.tensor(0.0))


def _fallbacks() -> dict[str, tuple]:
    torch.manual_seed(0)
    trunk, head = nn.Linear(3, 4), nn.Linear(4, 1)
    x = torch.randn(5, 3)
    z = torch.tanh(trunk(x))
    out = head(z)
    parts = z.chunk(2, dim=1)
    shared, leaves = list(trunk.parameters()), [*trunk.parameters(), *head.parameters()]
    return {
        # one head output feeds both losses: its node would turn the normal task's gradient
        "shared head": ([out.sum(), (out**2).sum()], shared, None, leaves),
        # a (2,) loss from one reduction: the tasks cannot be told apart
        "one reduction": (torch.cat([out, 2 * out], 1).mean(0), shared, None, leaves),
        # the adversary reads the features' node through its other output
        "other output": ([parts[0].sum(), parts[1].sum()], [parts[0]], parts[0], leaves),
    }


@pytest.mark.parametrize("case", list(_fallbacks()))
def test_graphs_that_need_two_passes_are_left_untouched(case):
    losses, targets, features, leaves = _fallbacks()[case]
    assert not reversed_backward(losses, targets, [False, True], 0.5, features=features)
    assert all(p.grad is None for p in leaves)
    parts = list(losses.unbind()) if isinstance(losses, torch.Tensor) else losses
    torch.autograd.grad(parts[0] + parts[1], targets)  # the graph is intact


@pytest.mark.parametrize("mode", ["params", "features"])
@pytest.mark.parametrize("stacked", [False, True])
@pytest.mark.parametrize(("name", "adversarial"), [("hard_sharing", [1]), ("mmoe", [0, 2])])
def test_equals_the_two_pass_path(name, adversarial, mode, stacked, monkeypatch):
    grads = {}
    for path in ("one pass", "two passes"):
        torch.manual_seed(3)
        model = build_mlp(name, 4, [6, 5], [1, 2, 1])
        x, y = torch.randn(8, 4), torch.randn(8, 2)
        used = []
        if path == "two passes":
            monkeypatch.setattr(
                reversal_module, "reversed_backward", lambda *a, used=used: used.append(1)
            )
        outs, z = model(x, return_features=True)
        losses = [F.mse_loss(o, y[:, : o.shape[1]]) for o in outs]
        method = W.build("gradient_reversal", 3, adversarial=adversarial, lambda_=0.7)
        arg = torch.stack(losses) if stacked else losses
        if mode == "params":
            method.backward(arg, model.shared_parameters())
        else:
            method.backward(arg, model.shared_parameters(), features=z)
        grads[path] = {n: p.grad.clone() for n, p in model.named_parameters()}
        assert used == ([1] if path == "two passes" else [])
    assert grads["one pass"].keys() == grads["two passes"].keys()
    for n, g in grads["one pass"].items():
        torch.testing.assert_close(g, grads["two passes"][n], msg=n)
