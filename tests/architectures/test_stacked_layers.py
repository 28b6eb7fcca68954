"""Stacked per-task layers equal K separate layers, and gradients stay in each task's slot."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtrl.architectures import StackedMLP, TaskConv2d, TaskLinear, group_by_task

K, B = 3, 11


def _ids() -> torch.Tensor:
    return torch.tensor([0, 2, 2, 1, 0, 2, 0, 0, 1, 2, 2])


def _separate_linears(layer: TaskLinear) -> list[nn.Linear]:
    out = []
    for k in range(layer.num_tasks):
        lin = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[k])
            lin.bias.copy_(layer.bias[k])
        out.append(lin)
    return out


@pytest.mark.parametrize("mode", ["group", "gather", "all"])
def test_task_linear_equals_separate_linears(mode: str) -> None:
    torch.manual_seed(0)
    layer = TaskLinear(K, 5, 4, mode=mode)
    seps = _separate_linears(layer)
    x, ids = torch.randn(B, 5), _ids()
    expected = torch.stack([seps[int(t)](x[b]) for b, t in enumerate(ids)])
    torch.testing.assert_close(layer(x, ids), expected)
    # forward_all: shared input (B, in) and per-task input (K, B, in)
    torch.testing.assert_close(layer.forward_all(x), torch.stack([s(x) for s in seps]))
    xs = torch.randn(K, B, 5)
    torch.testing.assert_close(
        layer.forward_all(xs), torch.stack([s(xs[k]) for k, s in enumerate(seps)])
    )


@pytest.mark.parametrize("mode", ["group", "gather", "all"])
def test_task_linear_gradient_only_reaches_own_slot(mode: str) -> None:
    torch.manual_seed(0)
    layer = TaskLinear(4, 5, 3, mode=mode)
    x = torch.randn(6, 5)
    ids = torch.tensor([1, 1, 3, 1, 3, 3])
    out = layer(x, ids)
    out[ids == 1].sum().backward()
    assert layer.weight.grad[1].abs().sum() > 0
    for k in (0, 2, 3):
        assert torch.all(layer.weight.grad[k] == 0)
        assert torch.all(layer.bias.grad[k] == 0)
    # matches separate layers' gradients
    seps = _separate_linears(layer)
    seps[1](x[ids == 1]).sum().backward()
    torch.testing.assert_close(layer.weight.grad[1], seps[1].weight.grad)


def test_stacked_mlp_equals_separate_mlps() -> None:
    torch.manual_seed(0)
    net = StackedMLP(K, 5, [7, 6], 2)
    mlps = []
    for k in range(K):
        dims = [5, 7, 6, 2]
        layers: list[nn.Module] = []
        for i, lay in enumerate(net.layers):
            lin = nn.Linear(dims[i], dims[i + 1])
            with torch.no_grad():
                lin.weight.copy_(lay.weight[k])
                lin.bias.copy_(lay.bias[k])
            layers += [lin, nn.ReLU()] if i < 2 else [lin]
        mlps.append(nn.Sequential(*layers))
    x, ids = torch.randn(B, 5), _ids()
    expected = torch.stack([mlps[int(t)](x[b]) for b, t in enumerate(ids)])
    torch.testing.assert_close(net(x, ids), expected)
    torch.testing.assert_close(net.forward_all(x), torch.stack([m(x) for m in mlps]))
    for k in range(K):  # one task's whole MLP on every sample (untested until now)
        torch.testing.assert_close(net.task_forward(x, k), mlps[k](x))
        torch.testing.assert_close(net.layers[0].task_forward(x, k), mlps[k][0](x))
    # gradient isolation through the whole MLP
    net(x, ids)[ids == 2].sum().backward()
    for lay in net.layers:
        assert torch.all(lay.weight.grad[:2] == 0) and lay.weight.grad[2].abs().sum() > 0


def test_task_conv2d_equals_separate_convs() -> None:
    torch.manual_seed(0)
    conv = TaskConv2d(K, 2, 4, 3, stride=1, padding=1)
    seps = []
    for k in range(K):
        c = nn.Conv2d(2, 4, 3, padding=1)
        with torch.no_grad():
            c.weight.copy_(conv.weight[k])
            c.bias.copy_(conv.bias[k])
        seps.append(c)
    x, ids = torch.randn(B, 2, 5, 5), _ids()
    expected = torch.stack([seps[int(t)](x[b : b + 1])[0] for b, t in enumerate(ids)])
    torch.testing.assert_close(conv(x, ids), expected)
    torch.testing.assert_close(conv.forward_all(x), torch.stack([s(x) for s in seps]))
    xs = torch.randn(K, 4, 2, 5, 5)
    torch.testing.assert_close(
        conv.forward_all(xs), torch.stack([s(xs[k]) for k, s in enumerate(seps)])
    )


def test_group_by_task_order_and_errors() -> None:
    x = torch.arange(5.0).unsqueeze(1)
    ids = torch.tensor([2, 0, 2, 1, 0])
    out = group_by_task(x, ids, 3, lambda h, t: h * 10 + t)
    torch.testing.assert_close(out, x * 10 + ids.unsqueeze(1).float())
    with pytest.raises(ValueError, match="task_ids"):
        group_by_task(x, torch.tensor([0, 1, 3, 0, 0]), 3, lambda h, t: h)
    with pytest.raises(ValueError, match="shape"):
        group_by_task(x, torch.tensor([0, 1]), 3, lambda h, t: h)


def test_group_by_task_reads_the_host_once(device_traffic) -> None:
    # The range check read the smallest and the largest id separately and bincount's counts a
    # third time (and CUDA's bincount reads the ids' extremes itself): 5 syncs per routed layer.
    x = torch.arange(6.0).unsqueeze(1)
    ids = torch.tensor([2, 0, 2, 1, 0, 2])
    with device_traffic() as traffic:
        out = group_by_task(x, ids, 4, lambda h, t: h * 10 + t)  # task 3 has no samples
    torch.testing.assert_close(out, x * 10 + ids.unsqueeze(1).float())
    assert traffic.total_reads == 1
    for bad in ([0, 1, -1, 0, 0, 2], [0, 1, 4, 0, 0, 2]):
        with pytest.raises(ValueError, match=f"lie in \\[0, 4\\), got {bad[2]}"):
            group_by_task(x, torch.tensor(bad), 4, lambda h, t: h)
    with pytest.raises(ValueError, match="lie in"):
        group_by_task(x, ids, 0, lambda h, t: h)
    empty = group_by_task(x[:0], ids[:0], 4, lambda h, t: h + t)
    assert empty.shape == (0, 1)


def test_select_checks_the_task_ids_with_one_host_read(device_traffic) -> None:
    from mtrl.architectures import build_mlp

    model = build_mlp("cross_stitch", 4, [8], [2, 2, 2])  # not separable: all outputs, select
    x, ids = torch.randn(5, 4), torch.tensor([2, 0, 2, 1, 0])
    with device_traffic() as traffic:
        model(x, ids)
    assert traffic.total_reads == 1  # int(low) and int(high) were two
