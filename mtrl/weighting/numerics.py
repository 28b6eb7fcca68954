"""Scale-safe linear algebra on a ``(T, P)`` gradient matrix: its Gram matrix, row norms and the
weighted sum of its rows, exact at any gradient scale (float32 squares overflow above ~1e19 and
underflow below ~1e-19), and the solvers' test for a task with a zero gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def gram_matrix(grads: Tensor) -> Tensor:
    """The Gram matrix ``G G^T`` (T, T) of ``grads`` (T, P) in float64, on their device.

    The product is taken in the gradients' dtype (one pass, as before), and again on rows scaled
    by powers of two (exact) if it lost range: float32 squares overflow above ~1e19 and underflow
    below ~1e-19, so gradients of norm 1e20 gave an inf Gram (NaN or zero weights) and 1e-30 a
    zero one, although every aggregator's answer is defined at any scale. When nothing overflows
    or underflows the scaled product is the plain one times exact powers of two: same values.
    """
    gram = (grads @ grads.T).double()
    tiny = torch.finfo(grads.dtype).tiny / torch.finfo(grads.dtype).eps  # squares lose bits
    host = gram.detach().cpu().numpy()  # (T, T): the solvers read it on the host anyway
    if grads.numel() == 0 or (np.isfinite(host).all() and (np.diag(host) >= tiny).all()):
        return gram
    if not all_finite(grads):
        return gram
    exponent, scaled = _scaled_rows(grads.detach())
    gram = (scaled @ scaled.T).double()
    exponent = exponent.to(gram.dtype)[:, None]
    return gram * torch.exp2(exponent) * torch.exp2(exponent.T)


def all_finite(x: Tensor) -> bool:
    """Whether every entry of ``x`` is finite, read on the host. The sum first: one pass without
    a temporary, and a finite sum means finite entries (a NaN or inf entry makes it NaN or inf);
    the entrywise test, ~20x slower on a (40, 82k) float32 matrix on the CPU, only when the sum
    is not finite (such an entry, or finite entries whose sum overflows)."""
    if x.numel() == 0:
        return True
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _scaled_rows(grads: Tensor) -> tuple[Tensor, Tensor]:
    """``(e, S)``: row i of ``grads`` is ``2^e_i S_i`` with ``max |S_i| < 1`` (exact; e = 0 for a
    zero row). Scaled in two halves: 2^149 (a subnormal float32 row) is out of float32's range."""
    if grads.shape[1] == 0:  # no entries (amax of nothing raises)
        return torch.zeros(grads.shape[0], dtype=torch.int32, device=grads.device), grads
    exponent = torch.frexp(grads.abs().amax(dim=1)).exponent  # (T,)
    return exponent, _ldexp(grads, -exponent[:, None])


def _ldexp(x: Tensor, exponent: Tensor) -> Tensor:
    """``x * 2^exponent`` exactly, in two halves (one power of two may be out of x's range)."""
    half = torch.div(exponent, 2, rounding_mode="floor")
    return torch.ldexp(torch.ldexp(x, half.to(x.dtype)), (exponent - half).to(x.dtype))


def row_norms(grads: Tensor) -> Tensor:
    """Euclidean norms (T,) of the rows of ``grads`` (T, P) without overflow or underflow:
    ``grads.norm(dim=1)``, unless a norm came out non-finite or below ~1e-18 (float32's squares
    overflow above ~1e19 and vanish under ~1e-19; a zero row too), then on rows scaled by powers
    of two (exact: the same values; ~9x the plain norm's time on the CPU, so only then). On a
    GPU always scaled: reading the norms to decide would be a host sync every step."""
    if _reads_are_free(grads):
        plain = grads.norm(dim=1)
        floor = (torch.finfo(grads.dtype).tiny / torch.finfo(grads.dtype).eps) ** 0.5
        if grads.shape[1] == 0 or bool((torch.isfinite(plain) & (plain >= floor)).all()):
            return plain
    exponent, scaled = _scaled_rows(grads)
    return _ldexp(scaled.norm(dim=1), exponent)


def _reads_are_free(x: Tensor) -> bool:
    """Whether reading ``x``'s values on the host costs no device sync (a CPU tensor)."""
    return x.device.type == "cpu"


def combine(weights: Tensor, grads: Tensor) -> Tensor:
    """``weights @ grads`` (P,) in the gradients' dtype, for solver weights (T,) of any dtype.

    A weight can be out of the gradients' range while its term is not: PCGrad's coefficient on a
    subnormal float32 gradient (~1e-42) is ~1e42, Nash-MTL's 1 / |g_i| the same; cast to float32
    it was inf and the direction inf. Then the sum is taken as ``sum (w_i 2^e_i) S_i`` over the
    rows scaled by powers of two (:func:`_scaled_rows`); otherwise exactly ``w @ grads``."""
    # the checks read a host copy of the (T,) weights: the solvers' come from numpy, and a
    # weight on another device than the gradients (CPU weights, CUDA gradients) may not meet them
    host = weights.detach().to("cpu", torch.float64).numpy()
    info = torch.finfo(grads.dtype)
    size = np.abs(host)
    fits = (size == 0) | ((size >= info.tiny) & (size <= info.max))  # NaN fails both
    if fits.all() or not np.isfinite(host).all():
        return weights.to(device=grads.device, dtype=grads.dtype) @ grads
    exponent, scaled = _scaled_rows(grads)
    ws = weights.to(device=grads.device, dtype=torch.float64) * torch.exp2(exponent.double())
    return ws.to(grads.dtype) @ scaled


def nonzero_rows(k: np.ndarray, rtol: float = 0.0) -> np.ndarray:
    """Indices of the tasks whose gradient is not zero, from a Gram matrix (T, T): squared norm
    above ``rtol`` times the largest. ``rtol`` 0 (exact zeros only): Nash-MTL and IMTL-G are
    invariant to a task's gradient scale, so a task 1e8 times smaller than another is still a
    task (a relative 1e-12 on the squared norms dropped every task under 1e-6 of the largest)."""
    diag = np.diag(k)
    return np.flatnonzero(diag > rtol * max(float(diag.max(initial=0.0)), 1e-300))
