"""GroupedLinear's products (agents.linear): oneDNN and MKL paths give torch's float64 answer."""

import pytest
import torch

import agents.linear as linear
from agents.networks import GroupedLinear

IN, OUT = 300, 256  # 76,800 weights per group: above MIN_WEIGHTS, so oneDNN on the CPU


def _reference(x, weight, bias):
    """float64 autograd reference: x[k] @ weight[k or 0] + bias[k or 0]."""
    w = weight.expand(x.shape[0], -1, -1) if weight.shape[0] == 1 else weight
    b = bias.expand(x.shape[0], -1, -1) if bias.shape[0] == 1 else bias
    return torch.baddbmm(b, x, w)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("onednn", [True, False])
def test_forward_and_gradients_match_float64(monkeypatch, groups, onednn):
    monkeypatch.setattr(linear, "ENABLED", onednn)
    torch.manual_seed(0)
    layer = GroupedLinear(groups, IN, OUT)
    with torch.no_grad():
        layer.bias.normal_()
    assert linear.use_onednn(layer.weight) == (onednn and linear._onednn_available())
    x = torch.randn(3, 5, IN, requires_grad=True)
    g = torch.randn(3, 5, OUT)
    out = layer(x)
    out.backward(g)

    x64 = x.detach().double().requires_grad_()
    w64 = layer.weight.detach().double().requires_grad_()
    b64 = layer.bias.detach().double().requires_grad_()
    ref = _reference(x64, w64, b64)
    ref.backward(g.double())
    tol = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(out.double(), ref, **tol)
    torch.testing.assert_close(x.grad.double(), x64.grad, **tol)
    torch.testing.assert_close(layer.weight.grad.double(), w64.grad, **tol)
    torch.testing.assert_close(layer.bias.grad.double(), b64.grad, **tol)


def test_task_slice_gradients_land_in_their_groups():
    torch.manual_seed(0)
    layer = GroupedLinear(4, IN, OUT)
    x = torch.randn(2, 3, IN)
    layer(x, slice(1, 3)).sum().backward()
    grad = layer.weight.grad
    assert grad[0].abs().sum() == 0 and grad[3].abs().sum() == 0
    expected = x.transpose(1, 2) @ torch.ones(2, 3, OUT)  # d(sum)/dW_k = x_k^T 1
    torch.testing.assert_close(grad[1:3], expected, rtol=1e-5, atol=1e-4)


def test_small_and_non_float32_layers_stay_on_torch_matmul():
    assert not linear.use_onednn(torch.zeros(1, 512, 18))  # a policy head: below MIN_WEIGHTS
    assert not linear.use_onednn(torch.zeros(1, IN, OUT, dtype=torch.float64))
    layer = GroupedLinear(2, IN, OUT).double()
    x = torch.randn(2, 4, IN, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference(x, layer.weight, layer.bias))


def test_linear_backward_skips_gradients_not_asked_for():
    weight, x, g = torch.randn(1, IN, OUT), torch.randn(2, 3, IN), torch.randn(2, 3, OUT)
    gx, gw, gb = linear.linear_backward(g, x, weight, (False, True, False))
    assert gx is None and gb is None
    torch.testing.assert_close(gw[0], x.reshape(-1, IN).t() @ g.reshape(-1, OUT))
