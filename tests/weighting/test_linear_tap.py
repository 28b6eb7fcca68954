"""GradNorm's norms from linear layers' recorded forward (mtrl.weighting.linear_tap): known answers,
agreement with the plain per-task gradients, and every case that must fall back to them."""

import gc

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import mtrl.weighting as W
import mtrl.weighting.gradnorm as gradnorm_module
from mtrl.architectures import build_mlp
from mtrl.weighting.grads import task_gradients
from mtrl.weighting.linear_tap import LinearTap, weight_grad_norms


def linear(weight: list[list[float]], bias: bool = False) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=bias)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias:
            layer.bias.zero_()
    return layer


def test_norms_by_hand_direct_and_through_the_gram_matrix():
    # N = 2 rows, 2 inputs: the direct product. L1 = sum Z: D = (1, 1), grad = D^T X = (4, 6);
    # L2 = 2 Z[0]: D = (2, 0), grad = (2, 4).
    layer = linear([[0.5, -1.0]])
    tap = LinearTap.find(layer, [layer.weight])
    z = layer(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    got = tap.norms([z.sum(), 2 * z[0].sum()])
    torch.testing.assert_close(got, torch.tensor([52.0, 20.0]).sqrt())
    # N = 1 row, 3 inputs, 2 outputs (Gram form: N^2 (in + out) = 5 < N in out = 6). L = 3 Z[0, 0]:
    # D = (3, 0), grad = D^T X = ((3, 6, 6), (0, 0, 0)), norm 9; with the bias, its gradient
    # (3, 0) joins the vector: sqrt(81 + 9).
    layer = linear([[1.0, 1.0, 1.0], [1.0, -1.0, 0.5]], bias=True)
    weight_only = LinearTap.find(layer, [layer.weight])
    both = LinearTap.find(layer, [layer.weight, layer.bias])
    z = layer(torch.tensor([[1.0, 2.0, 2.0]]))
    torch.testing.assert_close(weight_only.norms([3 * z[0, 0]]), torch.tensor([9.0]))
    torch.testing.assert_close(both.norms([3 * z[0, 0]]), torch.tensor([90.0]).sqrt())


@pytest.mark.parametrize(
    ("name", "in_dim", "hidden", "batch"),
    [
        ("hard_sharing", 5, [7, 6], 16),  # layer narrower than the batch: direct products
        ("hard_sharing", 5, [40, 48], 12),  # wider: through the Gram matrix
        ("mmoe", 5, [9, 8], 10),  # several tensors: every expert's last weight
    ],
)
def test_norms_equal_the_plain_per_task_gradients(name, in_dim, hidden, batch):
    torch.manual_seed(0)
    model = build_mlp(name, in_dim, hidden, [1, 2, 1])
    layer = model.last_shared_layer()
    tap = LinearTap.find(model, layer)
    assert tap is not None and len(tap.layers) == len(layer)
    x = torch.randn(3, batch // 3, in_dim)  # a leading batch shape of two dims
    outs = model(x.reshape(-1, in_dim))
    losses = [o.square().mean() * (t + 1) for t, o in enumerate(outs)]
    expected = task_gradients(losses, layer).double().norm(dim=1)
    torch.testing.assert_close(tap.norms(losses).double(), expected, rtol=1e-5, atol=0)


def test_weight_grad_norms_at_scales_float32_squares_cannot_hold():
    torch.manual_seed(1)
    x, d = torch.randn(4, 6), list(torch.randn(3, 4, 2))
    ref = weight_grad_norms(x, d)
    torch.testing.assert_close(ref, torch.stack([(di.T @ x).norm() for di in d]))
    wide, rows = torch.randn(2, 6), list(torch.randn(3, 2, 2))  # the Gram form (x: the direct)
    torch.testing.assert_close(
        weight_grad_norms(wide, rows), torch.stack([(di.T @ wide).norm() for di in rows])
    )
    for scale in (2.0**70, 2.0**-75):  # squares beyond float32's range either way
        for a, b in ((x, d), (wide, rows)):
            base = weight_grad_norms(a, b)
            torch.testing.assert_close(weight_grad_norms(a * scale, b), base * scale)
            torch.testing.assert_close(weight_grad_norms(a, [bi * scale for bi in b]), base * scale)
    # a task without a gradient (None) or with a zero one has norm 0
    got = weight_grad_norms(x, [None, d[0], torch.zeros(4, 2)])
    assert got[0] == 0 and got[2] == 0
    torch.testing.assert_close(got[1], ref[0])


def test_records_that_cannot_give_the_norms_fall_back():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    tap = LinearTap.find(layer, [layer.weight])
    x = torch.randn(5, 3)
    # called twice before the backward: which call the losses used is unknown
    z = layer(x)
    layer(x)
    assert tap.norms([z.sum()]) is None
    tap.clear()
    # a forward that does not record (no grad) leaves the usable record in place
    z = layer(x)
    with torch.no_grad():
        layer(x)
    assert tap.norms([z.sum()]) is not None
    tap.clear()
    # output modified in place (an inplace ReLU): the record is no longer the layer's Z
    z = layer(x)
    loss = F.relu(z, inplace=True).sum()
    assert tap.norms([loss]) is None
    tap.clear()
    # a record from a forward these losses do not use
    layer(x)
    assert tap.norms([(x.sum() * torch.ones((), requires_grad=True))]) is None
    tap.clear()
    assert tap.norms([layer(x).sum()]) is not None
    tap.remove()
    assert tap.norms([layer(x).sum()]) is None  # the hooks are gone: nothing recorded


def test_find_needs_every_tensor_on_a_linear_layer():
    model = nn.Sequential(nn.Linear(2, 3), nn.Conv1d(1, 1, 1), nn.Linear(3, 1))
    assert LinearTap.find(model, [model[1].weight]) is None
    assert LinearTap.find(model, [model[0].weight, model[1].weight]) is None
    assert LinearTap.find(model, []) is None
    tap = LinearTap.find(model, [model[2].bias, model[0].weight])
    # one entry per layer, in the order the tensors name them
    assert tap.layers == [(model[2], False, True), (model[0], True, False)]


def test_a_dropped_tap_leaves_no_work_in_the_hooks():
    layer = nn.Linear(2, 2)
    tap = LinearTap.find(layer, [layer.weight])
    calls = tap._calls
    del tap
    gc.collect()
    layer(torch.randn(3, 2))  # the hook finds no tap and records nothing
    assert calls == [None]


def test_gradnorm_with_the_model_matches_the_plain_path_without_its_products(monkeypatch):
    """Same weights and model gradients over several steps, and the T weight gradients of the
    plain path are not formed once the model is given (the point of the tap)."""
    plain_calls = []
    original = gradnorm_module.task_gradients

    def counting(*args, **kwargs):
        plain_calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(gradnorm_module, "task_gradients", counting)
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.randn(6, 3)
    runs = {}
    for tapped in (False, True):
        torch.manual_seed(0)
        model = build_mlp("hard_sharing", 4, [10, 12], [1, 1, 1])
        method = W.GradNorm(3, lr=0.05)
        method.adopt_layer(model.last_shared_layer(), model if tapped else None)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        plain_calls.clear()
        for _ in range(4):
            opt.zero_grad()
            with torch.no_grad():
                model(x)  # an evaluation forward in between: not recorded
            outs = model(x)
            method.backward([F.mse_loss(o[:, 0], y[:, t]) for t, o in enumerate(outs)])
            opt.step()
        runs[tapped] = (
            method.task_weights.detach().clone(),
            [p.clone() for p in model.parameters()],
        )
        assert len(plain_calls) == (0 if tapped else 4)
    torch.testing.assert_close(runs[True][0], runs[False][0])
    assert not torch.allclose(runs[True][0], torch.ones(3))  # the weights moved
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        torch.testing.assert_close(a, b)


def test_gradnorm_takes_the_plain_path_when_the_record_is_unusable(monkeypatch):
    plain_calls = []
    original = gradnorm_module.task_gradients
    monkeypatch.setattr(
        gradnorm_module,
        "task_gradients",
        lambda *a, **k: plain_calls.append(1) or original(*a, **k),
    )
    torch.manual_seed(0)
    model = build_mlp("hard_sharing", 4, [5], [1, 1])
    method = W.GradNorm(2)
    method.adopt_layer(model.last_shared_layer(), model)
    x = torch.randn(3, 4)
    model(x)  # an extra recorded forward: two calls of the layer
    outs = model(x)
    method.backward([o.sum() for o in outs])
    assert plain_calls == [1]
    outs = model(x)  # the record was cleared: this step is tapped
    method.backward([o.sum() for o in outs])
    assert plain_calls == [1]
