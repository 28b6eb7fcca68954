"""Representation mode's one backward through the heads (mtrl.weighting.heads_pass): known answers,
agreement with one backward per task, and every graph it must leave to that path untouched."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mtrl.weighting as W
import mtrl.weighting.base as base_module
from mtrl.architectures import build_mlp
from mtrl.weighting.grads import backward_task_params, task_gradient_provider, task_gradients
from mtrl.weighting.heads_pass import heads_pass

GRADIENT_METHODS = ["pcgrad", "mgda", "cagrad", "imtl_g", "nash_mtl", "upgrad"]


def test_rows_and_head_gradients_by_hand():
    # z = 2 x with x = ((1, 2), (3, 4)); L1 = sum(z a) with a = (1, -1): dL1/dz = (1, -1) per row,
    # dL1/da = column sums of z = (8, 12). L2 = 0.5 sum((z b)^2) with b = (0.5, 0): z b = (1, 3),
    # dL2/dz = (z b) b^T = ((0.5, 0), (1.5, 0)), dL2/db = z^T (z b) = (2*1 + 6*3, 4*1 + 8*3).
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a = torch.tensor([1.0, -1.0], requires_grad=True)
    b = torch.tensor([0.5, 0.0], requires_grad=True)
    z = 2 * x
    g = heads_pass([(z @ a).sum(), 0.5 * ((z @ b) ** 2).sum()], z)
    assert g is not None
    torch.testing.assert_close(g, torch.tensor([[1.0, -1.0, 1.0, -1.0], [0.5, 0.0, 1.5, 0.0]]))
    torch.testing.assert_close(a.grad, torch.tensor([8.0, 12.0]))
    torch.testing.assert_close(b.grad, torch.tensor([20.0, 28.0]))
    assert x.grad is None  # the trunk is the caller's: the pass stops at z
    # and the trunk's graph is still there for the aggregated direction
    z.backward(torch.ones_like(z))
    torch.testing.assert_close(x.grad, torch.full((2, 2), 2.0))


def test_leaf_features_stacked_losses_and_accumulation():
    z = torch.tensor([[1.0, -2.0]], requires_grad=True)
    w = torch.tensor([3.0, 1.0], requires_grad=True)
    w.grad = torch.tensor([10.0, 10.0])  # accumulated into, as backward would
    losses = torch.stack([(z * w).sum(), (z**2).sum(), torch.tensor(0.0)])  # third: no gradient
    g = heads_pass(losses, z)
    assert g is not None
    torch.testing.assert_close(g, torch.tensor([[3.0, 1.0], [2.0, -4.0], [0.0, 0.0]]))
    torch.testing.assert_close(w.grad, torch.tensor([11.0, 8.0]))
    assert z.grad is None  # the features' gradient is the caller's (the aggregated direction)


def test_a_task_reaching_z_twice_and_through_another_output_of_its_node():
    # task 0 consumes z in two nodes (summed); task 1 consumes the other chunk only: its row is
    # d L1/dz = 0, as one backward per task says, and nothing flows past the chunk node.
    x = torch.randn(3, 4, requires_grad=True)
    z, other = (x * 1.5).chunk(2, dim=1)
    losses = [(z**2).sum() + z.sin().sum(), other.exp().sum()]
    expected = task_gradients(losses, [z])
    g = heads_pass(losses, z)
    assert g is not None
    torch.testing.assert_close(g, expected)
    assert x.grad is None


@pytest.mark.parametrize(("name", "tower"), [("hard_sharing", []), ("mmoe", [5])])
def test_equals_one_backward_per_task_on_the_architectures(name, tower):
    torch.manual_seed(0)
    kwargs = {"tower_hidden": tower} if name == "mmoe" else {}
    model = build_mlp(name, 4, [6, 5], [1, 2, 1], **kwargs)
    x, y = torch.randn(7, 4), torch.randn(7, 2)

    def losses() -> tuple[list[torch.Tensor], torch.Tensor]:
        outs, z = model(x, return_features=True)
        return [F.mse_loss(o, y[:, : o.shape[1]]) for o in outs], z

    parts, z = losses()
    expected = task_gradients(parts, [z])
    backward_task_params(torch.stack(parts), [z], stop=z)
    heads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    parts, z = losses()
    got = heads_pass(parts, z)
    assert got is not None
    torch.testing.assert_close(got, expected)
    got_heads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got_heads.keys() == heads.keys() and heads  # the heads, and no shared parameter
    for n, g in heads.items():
        torch.testing.assert_close(got_heads[n], g)


def _graphs() -> dict[str, tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor, list]]:
    """Graphs the one pass cannot separate: (losses, features, leaves whose .grad must stay)."""
    torch.manual_seed(0)
    w1, w2 = nn.Linear(3, 4), nn.Linear(4, 1)
    heads = [nn.Linear(4, 1), nn.Linear(4, 1)]
    x = torch.randn(5, 3)
    h = torch.tanh(w1(x))
    z = w2(h) * h  # (5, 4)
    shared_head = heads[0](z)
    graphs = {
        "shared consumer": ([shared_head.sum(), (2 * shared_head).sum()], z),
        "skip connection": ([heads[0](z).sum(), heads[1](z + h).sum()], z),
        "tied weight": ([heads[0](z).sum(), (z @ w1.weight).sum()], z),
        "one reduction": (torch.cat([heads[0](z), heads[1](z)], 1).pow(2).mean(0), z),
        "no task reaches z": ([heads[0](h).sum(), heads[1](h).sum()], z),
    }
    leaves = [*w1.parameters(), *w2.parameters(), *heads[0].parameters(), *heads[1].parameters()]
    return {k: (losses, f, leaves) for k, (losses, f) in graphs.items()}


@pytest.mark.parametrize("case", list(_graphs()))
def test_graphs_that_do_not_separate_are_left_untouched(case):
    losses, z, leaves = _graphs()[case]
    assert heads_pass(losses, z) is None
    assert all(p.grad is None for p in leaves)
    # the graph is intact: one backward per task still works on it
    parts = list(losses.unbind()) if isinstance(losses, torch.Tensor) else losses
    task_gradients(parts, [z])


def test_features_without_gradient_and_a_leaf_loss():
    z = torch.ones(2, 2)
    assert heads_pass([z.sum()], z) is None
    p = torch.ones((), requires_grad=True)
    assert heads_pass([p], torch.ones(2, requires_grad=True)) is None
    assert p.grad is None


def test_hooks_are_removed_after_the_pass():
    # the consumers (a sum, a negation) save no tensors, so a second backward can run
    x = torch.randn(4, 3, requires_grad=True)
    z = x * 2
    losses = [z.sum(), z.neg().sum()]
    g = heads_pass(losses, z)
    assert g is not None
    torch.testing.assert_close(g, torch.cat([torch.ones(1, 12), -torch.ones(1, 12)]))
    before = g.clone()
    torch.autograd.grad(losses[0] + losses[1], z)  # a hook left behind would write into g
    torch.testing.assert_close(g, before)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_aggregators_take_the_one_pass_with_the_same_result(name, monkeypatch):
    grads: dict[str, list[torch.Tensor]] = {}
    weights = {}
    for path in ("one pass", "per task"):
        torch.manual_seed(1)
        model = build_mlp("hard_sharing", 4, [6, 5], [1, 1, 2, 1])
        x, y = torch.randn(9, 4), torch.randn(9, 2)
        calls = []
        if path == "per task":
            monkeypatch.setattr(base_module, "heads_pass", lambda *a, calls=calls: calls.append(1))
        outs, z = model(x, return_features=True)
        parts = [F.mse_loss(o, y[:, : o.shape[1]]) for o in outs]
        weights[path] = W.build(name, 4).backward(parts, model.shared_parameters(), features=z)
        grads[path] = [p.grad.clone() for p in model.parameters()]
        assert calls == ([1] if path == "per task" else [])
    torch.testing.assert_close(weights["one pass"], weights["per task"])
    for a, b in zip(grads["one pass"], grads["per task"], strict=True):
        torch.testing.assert_close(a, b)


def test_a_gradient_provider_keeps_the_matrix():
    # the RL agents' provider (agents.blocked) defines the matrix: the one pass stays out
    model = build_mlp("hard_sharing", 3, [4], [1, 1])
    outs, z = model(torch.randn(5, 3), return_features=True)
    parts = [o.sum() for o in outs]
    asked = []

    def provider(losses, inputs):
        asked.append(inputs[0] is z)
        return task_gradients(losses, inputs)

    with task_gradient_provider(provider):
        W.build("pcgrad", 2).backward(parts, model.shared_parameters(), features=z)
    assert asked == [True]


def test_a_parameter_two_heads_use_outside_z_gets_the_plain_sum_once():
    # s scales both heads after their own consumers of z: the rows stay separate, and s gets
    # d(L1 + L2)/ds = sum(z a) + sum(z b) = 3 + 6, the same as one backward of the sum.
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([2.0, 2.0])
    s = torch.tensor(2.0, requires_grad=True)
    g = heads_pass([(z @ a).sum() * s, (z @ b).sum() * s], z)
    assert g is not None
    torch.testing.assert_close(g, torch.tensor([[2.0, 2.0], [4.0, 4.0]]))
    torch.testing.assert_close(s.grad, torch.tensor(9.0))


def test_explicit_task_params_given_twice_get_their_gradient_once():
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    a = torch.tensor([1.0, -1.0], requires_grad=True)
    g = heads_pass([(z @ a).sum(), z.sum()], z, task_params=[a, a])
    assert g is not None
    torch.testing.assert_close(a.grad, torch.tensor([1.0, 2.0]))  # dL1/da = z, once
