"""Products of :class:`~agents.networks.GroupedLinear` layers, forward and backward.

Weights are (groups, out, in), nn.Linear's layout per group. On the CPU, torch's matmul calls
MKL, whose single-precision GEMM runs a generic code path on non-Intel CPUs; oneDNN (the library
torch's CPU convolutions already use) runs the same float32 products with the machine's vector
units. On this project's AMD EPYC machines the Nature CNN's (16, 3136) @ (3136, 512) layer takes
about 0.4 ms through MKL and 0.2 ms through oneDNN, its input gradient at 80 samples 1.3 vs
0.65 ms, and the four task columns' (4, 3136) @ (3136, 512) products 0.8 ms as one MKL
``baddbmm`` and 0.2 ms with weights prepacked for oneDNN (``python bench/profile_update.py
--kernels``). Acting passes (no autograd) use the prepacked weights, repacked when the weights
change (their version counter), i.e. once per update. Layers with fewer than
:data:`MIN_WEIGHTS` weights per group (policy/value heads, small MLPs) stay on MKL, which is
faster there; CUDA and other dtypes use torch's usual kernels.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.weak import WeakTensorKeyDictionary

MIN_WEIGHTS = 1 << 16  # per group; measured crossover between 512x18 (MKL) and 1600x128 (oneDNN)
ENABLED = True  # module switch, e.g. for tests comparing both kernels

# weight -> (version, data_ptr, per-group packed weights); weak, so it never keeps a layer alive
_PACKED = WeakTensorKeyDictionary()


@functools.cache
def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def use_onednn(weight: Tensor) -> bool:
    """Whether products with this (groups, out, in) weight run through oneDNN."""
    return (
        ENABLED
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.shape[-2] * weight.shape[-1] >= MIN_WEIGHTS
        and _onednn_available()
    )


def _linear(x: Tensor, w: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (N, in) @ w.T (+ bias) through oneDNN; w is (out, in) (any strides) or prepacked."""
    return torch.ops.mkldnn._linear_pointwise(x, w, bias, "none", [], "")


def _packed(weight: Tensor, batch: int) -> list[Tensor]:
    """Per-group oneDNN-packed copies of ``weight``, rebuilt when it has changed."""
    key = weight.detach()
    entry = _PACKED.get(weight)
    if entry is None or entry[0] != weight._version or entry[1] != weight.data_ptr():
        reorder = torch.ops.mkldnn._reorder_linear_weight
        packs = [reorder(key[k], batch) for k in range(weight.shape[0])]
        _PACKED[weight] = entry = (weight._version, weight.data_ptr(), packs)
    return entry[2]


def linear_backward(
    grad: Tensor, x: Tensor, weight: Tensor, needs: tuple[bool, bool, bool]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``x @ weight.T + bias`` over groups: x (K, B, in), weight (G, out, in) with
    G = 1 (one map for every row) or G = K, bias (G, 1, out); ``needs`` as ctx.needs_input_grad."""
    gx = gw = gb = None
    onednn = use_onednn(weight)
    if weight.shape[0] == 1:
        w = weight[0]
        g2, x2 = grad.reshape(-1, w.shape[0]), x.reshape(-1, w.shape[1])
        if needs[0]:
            gx = (_linear(g2, w.t()) if onednn else g2 @ w).view(x.shape)
        if needs[1]:
            # oneDNN reads the transposed operands fastest when they are contiguous.
            gw = _linear(g2.t().contiguous(), x2.t().contiguous()) if onednn else g2.t() @ x2
            gw = gw.unsqueeze(0)
        if needs[2]:
            gb = g2.sum(0).view(1, 1, -1)
        return gx, gw, gb
    if needs[0]:
        if onednn:  # one GEMM per group: torch exposes no batched oneDNN GEMM (1.1 vs 1.9 ms bmm)
            gx = torch.stack([_linear(grad[k], weight[k].t()) for k in range(weight.shape[0])])
        else:
            gx = torch.bmm(grad, weight)
    if needs[1]:  # per-group oneDNN plus the stack copy is no faster than one bmm here
        gw = torch.bmm(grad.transpose(1, 2), x)
    if needs[2]:
        gb = grad.sum(1, keepdim=True)
    return gx, gw, gb


class _SharedLinear(torch.autograd.Function):
    """``x @ weight[0].T + bias[0]`` over every row of x (K, B, in), through oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        w = weight[0]
        y = _linear(x.reshape(-1, w.shape[1]), w, bias.view(-1))
        return y.view(*x.shape[:-1], w.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return linear_backward(grad, x, weight, ctx.needs_input_grad)


class _GroupedLinear(torch.autograd.Function):
    """``x[k] @ weight[k].T + bias[k]`` per group: one batched GEMM forward, the input gradient
    through oneDNN in backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias, x, weight.transpose(1, 2))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        return linear_backward(grad, x, weight, ctx.needs_input_grad)


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor, tasks: slice | None = None) -> Tensor:
    """x (K, B, in) -> (K, B, out) with weight (G, out, in), bias (G, 1, out), G in {1, K}.

    ``tasks`` selects the K groups of a grouped layer that the rows are (all when None).
    """
    onednn = use_onednn(weight) and x.dtype == torch.float32
    if onednn and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad)):
        groups = range(weight.shape[0]) if tasks is None else range(weight.shape[0])[tasks]
        packs = _packed(weight, x.shape[1] * (x.shape[0] if weight.shape[0] == 1 else 1))
        if weight.shape[0] == 1:
            y = _linear(x.reshape(-1, x.shape[-1]), packs[0], bias.view(-1))
            return y.view(*x.shape[:-1], -1)
        return torch.stack([_linear(x[i], packs[k], bias[k, 0]) for i, k in enumerate(groups)])
    if weight.shape[0] > 1 and tasks is not None:
        weight, bias = weight[tasks], bias[tasks]
    if weight.shape[0] == 1:
        if onednn:
            return _SharedLinear.apply(x, weight, bias)
        # flatten(0, 1): a view (weight[0]'s backward would allocate a full-size zero tensor)
        return torch.nn.functional.linear(x, weight.flatten(0, 1), bias.view(-1))
    if onednn:
        return _GroupedLinear.apply(x, weight, bias)
    return torch.baddbmm(bias, x, weight.transpose(1, 2))
