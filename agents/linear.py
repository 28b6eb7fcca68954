"""Products of :class:`~agents.networks.GroupedLinear` layers, forward and backward.

On the CPU, torch's matmul calls MKL, whose single-precision GEMM runs a generic code path on
non-Intel CPUs; oneDNN (the library torch's CPU convolutions already use) runs the same float32
products with the machine's vector units. On this project's AMD EPYC machines the Nature CNN's
(16, 3136) @ (3136, 512) layer takes about 0.4 ms through MKL and 0.2 ms through oneDNN, its input
gradient at 80 samples 1.3 vs 0.65 ms (``python bench/profile_update.py --kernels``). Layers
with fewer than :data:`MIN_WEIGHTS` weights per group (policy/value heads, small MLPs) stay on
MKL, which is faster there; CUDA and other dtypes use torch's usual kernels. Like the replay
path's, these backward passes are not themselves differentiable (no double backward).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

MIN_WEIGHTS = 1 << 16  # per group; measured crossover between 512x18 (MKL) and 1600x128 (oneDNN)
ENABLED = True  # module switch, e.g. for tests comparing both kernels


@functools.cache
def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def use_onednn(weight: Tensor) -> bool:
    """Whether products with this (groups, in, out) weight run through oneDNN."""
    return (
        ENABLED
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and weight.shape[-2] * weight.shape[-1] >= MIN_WEIGHTS
        and _onednn_available()
    )


def _mm(a: Tensor, b: Tensor) -> Tensor:
    """a (N, k) @ b (k, m) through oneDNN (its linear computes input @ weight.T)."""
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")


def _one_row(x: Tensor, weight: Tensor) -> bool:
    """Whether the products of x (K, B, in) with ``weight`` (G, in, out) have a single row (B = 1
    per group, or one row in all when G = 1). The BLAS computes a one-row product on its
    matrix-vector path, which rounds differently from the matrix product the same row gets inside
    a larger batch: the acting passes with one env per task then differed in the last bits from
    the loss pass over T*E rows, and ``agent.replay_forward=true`` from ``false``. Such products
    run on two copies of the row (and their gradients on the row plus a zero row) instead."""
    if x.dim() != 3:
        return False
    return (x.shape[1] if weight.shape[0] > 1 else x.shape[0] * x.shape[1]) == 1


def _two_rows(x: Tensor) -> Tensor:
    """x (K, 1, in) as (K, 2, in), two copies of its row (a copy: with a zero stride torch
    leaves the BLAS for a loop that rounds differently again)."""
    return x.expand(x.shape[0], 2, x.shape[2]).contiguous()


def linear_backward(
    grad: Tensor, x: Tensor, weight: Tensor, needs: tuple[bool, bool, bool]
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``x @ weight + bias`` over groups: x (K, B, in), weight (G, in, out) with
    G = 1 (one map for every row) or G = K, bias (G, 1, out); ``needs`` as ctx.needs_input_grad."""
    if _one_row(x, weight):  # the gradients of the two-row forward (see _one_row)
        pad = torch.cat([grad, torch.zeros_like(grad)], 1)
        gx, gw, gb = linear_backward(pad, _two_rows(x), weight, needs)
        return (None if gx is None else gx[:, :1]), gw, gb
    gx = gw = gb = None
    onednn = use_onednn(weight)
    if weight.shape[0] == 1:
        w = weight[0]
        g2, x2 = grad.reshape(-1, w.shape[1]), x.reshape(-1, w.shape[0])
        if needs[0]:
            gx = (_mm(g2, w.t()) if onednn else g2 @ w.t()).view(x.shape)
        if needs[1]:
            # oneDNN reads the transposed operands fastest when they are contiguous.
            gw = _mm(x2.t().contiguous(), g2) if onednn else x2.t() @ g2
            gw = gw.unsqueeze(0)
        if needs[2]:
            gb = g2.sum(0).view(1, 1, -1)
        return gx, gw, gb
    if needs[0]:
        if onednn:  # one GEMM per group: torch exposes no batched oneDNN GEMM (1.1 vs 1.9 ms bmm)
            gx = torch.stack([_mm(grad[k], weight[k].t()) for k in range(weight.shape[0])])
        else:
            gx = torch.bmm(grad, weight.transpose(1, 2))
    if needs[1]:  # per-group oneDNN plus the stack copy is no faster than one bmm here
        gw = torch.bmm(x.transpose(1, 2), grad)
    if needs[2]:
        gb = grad.sum(1, keepdim=True)
    return gx, gw, gb


class _SharedLinear(torch.autograd.Function):
    """``x @ weight[0] + bias[0]`` over every row of x (K, B, in), through oneDNN."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        w = weight[0]
        y = torch.ops.mkldnn._linear_pointwise(
            x.reshape(-1, w.shape[0]), w.t(), bias.view(-1), "none", [], ""
        )
        return y.view(*x.shape[:-1], w.shape[1])

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        return linear_backward(grad, x, weight, ctx.needs_input_grad)


class _GroupedLinear(torch.autograd.Function):
    """``x[k] @ weight[k] + bias[k]`` for each group: one batched GEMM forward, and the input
    gradient through oneDNN in backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias, x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors
        return linear_backward(grad, x, weight, ctx.needs_input_grad)


def grouped_linear(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """x (K, B, in) -> (K, B, out) with weight (G, in, out), bias (G, 1, out), G in {1, K}."""
    if _one_row(x, weight):  # as two rows (see _one_row); backward: linear_backward's padding
        return grouped_linear(_two_rows(x), weight, bias)[:, :1]
    if weight.shape[0] == 1:
        if use_onednn(weight) and x.dtype == torch.float32:
            return _SharedLinear.apply(x, weight, bias)
        # flatten(0, 1): a view (weight[0]'s backward would allocate a full-size zero tensor)
        return torch.matmul(x, weight.flatten(0, 1)) + bias.flatten(0, 1)
    if use_onednn(weight) and x.dtype == torch.float32:
        return _GroupedLinear.apply(x, weight, bias)
    return torch.baddbmm(bias, x, weight)
