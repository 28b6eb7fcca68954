"""Per-task gradient norms of ``nn.Linear`` weights without T outer products (GradNorm's cost).

A linear layer ``Z = X W^T + b`` over N rows has the weight gradient ``D_i^T X`` for task i,
where ``D_i = dL_i/dZ`` (N, out). Its squared norm is ``<X^T D_i, X^T D_i>``, or, with the Gram
matrix ``K = X X^T`` (N, N) computed once, ``<D_i D_i^T, K>``: ``N^2 out`` multiply-adds a task
instead of ``N in out``, the cheaper when the layer is wider than the batch. Either way the T
backward passes stop at Z (through the task heads only) instead of forming T weight gradients.
:class:`LinearTap` keeps X and Z from the layers' forward hooks to make this possible.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from mtrl.weighting.numerics import _ldexp, _scaled_rows, row_norms


class LinearTap:
    """Forward hooks on linear layers that keep each layer's last grad-recording call, so that
    :meth:`norms` can give the per-task gradient norms of the tapped tensors (each a
    layer's ``weight`` or ``bias``). Usable only when every layer ran exactly once, unmodified,
    since :meth:`clear`; otherwise :meth:`norms` returns None and the caller takes the
    generic path (a layer called twice, an in-place op on its output, an evaluation forward)."""

    def __init__(self, layers: Sequence[tuple[nn.Linear, bool, bool]]) -> None:
        """``layers``: ``(module, weight tapped, bias tapped)`` triples."""
        self.layers = list(layers)
        # each layer's latest recorded call (input, output, their versions) and the call count:
        # only the latest is kept, so forwards without a backward between them hold no memory
        self._calls: list[tuple[Tensor, Tensor, int, int] | None] = [None] * len(self.layers)
        self._counts = [0] * len(self.layers)
        ref = weakref.ref(self)  # the hooks must not keep a dropped weighting's tap alive

        def make_hook(i: int) -> Callable[[nn.Module, tuple, Tensor], None]:
            def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
                tap = ref()
                if tap is None or not (torch.is_grad_enabled() and output.requires_grad):
                    return
                x = args[0] if args else None
                if isinstance(x, Tensor) and isinstance(output, Tensor):
                    tap._calls[i] = (x, output, x._version, output._version)
                    tap._counts[i] += 1

            return hook

        self._handles = [
            m.register_forward_hook(make_hook(i)) for i, (m, _, _) in enumerate(layers)
        ]

    @classmethod
    def find(cls, model: nn.Module, tensors: Sequence[Tensor]) -> LinearTap | None:
        """A tap over the ``nn.Linear`` layers of ``model`` that own every tensor of ``tensors``
        (as ``weight`` or ``bias``), or None if some tensor is not a linear layer's."""
        owner: dict[int, tuple[nn.Linear, str]] = {}
        for m in model.modules():
            if isinstance(m, nn.Linear):
                owner[id(m.weight)] = (m, "weight")
                if m.bias is not None:
                    owner[id(m.bias)] = (m, "bias")
        flags: dict[int, tuple[nn.Linear, bool, bool]] = {}
        for t in tensors:
            if id(t) not in owner:
                return None
            m, which = owner[id(t)]
            _, w, b = flags.get(id(m), (m, False, False))
            flags[id(m)] = (m, w or which == "weight", b or which == "bias")
        return cls(list(flags.values())) if flags else None

    def clear(self) -> None:
        """Forget the recorded calls (after each backward: the next step records its own)."""
        self._calls = [None] * len(self.layers)
        self._counts = [0] * len(self.layers)

    def remove(self) -> None:
        """Remove the hooks from the layers."""
        for h in self._handles:
            h.remove()
        self.clear()

    def norms(self, losses: Sequence[Tensor]) -> Tensor | None:
        """``(T,)`` norms of the per-task gradients of the tapped tensors (all of them as one
        vector), or None when the recorded calls cannot give them (see the class docstring)."""
        if any(n != 1 for n in self._counts):
            return None
        calls = [c for c in self._calls if c is not None]
        if any(x._version != vx or z._version != vz for x, z, vx, vz in calls):
            return None  # modified in place after the layer (e.g. ReLU(inplace=True)): not Z
        zs = [z for _, z, _, _ in calls]
        grads: list[list[Tensor | None]] = []
        for loss in losses:
            if not loss.requires_grad:
                grads.append([None] * len(zs))
                continue
            grads.append(list(torch.autograd.grad(loss, zs, retain_graph=True, allow_unused=True)))
        if all(g is None for row in grads for g in row):
            return None  # the recorded calls are not in these losses' graph (a stale record)
        parts = []  # (T,) norms of each tapped tensor's gradients
        for j, ((_, weight, bias), (x, z, _, _)) in enumerate(zip(self.layers, calls, strict=True)):
            d = [None if (gj := g[j]) is None else gj.reshape(-1, z.shape[-1]) for g in grads]
            if weight:
                parts.append(weight_grad_norms(x.detach().reshape(-1, x.shape[-1]), d))
            if bias:
                sums = [z.new_zeros(z.shape[-1]) if di is None else di.sum(0) for di in d]
                parts.append(row_norms(torch.stack(sums)))
        return row_norms(torch.stack(parts, 1))  # (T, parts) -> (T,), without overflow


def weight_grad_norms(x: Tensor, d: Sequence[Tensor | None]) -> Tensor:
    """``|D_i^T X|`` for every task i, the norms of a linear layer's per-task weight gradients,
    from its input ``x`` (N, in) and output gradients ``d`` (T entries (N, out); None: zero).

    Squares of float32 overflow above ~1e19 and vanish below ~1e-19: if a result is not finite
    or that small, it is taken again on copies scaled by powers of two (exact); on a GPU always
    (reading the results to decide would be a host sync), as :func:`row_norms` does."""
    sq = _weight_sq_norms(x, d)
    floor = torch.finfo(sq.dtype).tiny / torch.finfo(sq.dtype).eps
    absent = torch.tensor([di is None for di in d], dtype=torch.bool)  # exact zeros: no rescale
    if x.device.type == "cpu" and bool((torch.isfinite(sq) & ((sq >= floor) | absent)).all()):
        return sq.sqrt()
    ex, xs = _scaled_rows(x.reshape(1, -1))
    exponents: list[Tensor] = []
    scaled: list[Tensor | None] = []
    for di in d:
        if di is None:
            exponents.append(torch.zeros_like(ex))
            scaled.append(None)
        else:
            e, s = _scaled_rows(di.reshape(1, -1))
            exponents.append(e)
            scaled.append(s.reshape(di.shape))
    norms = _weight_sq_norms(xs.reshape(x.shape), scaled).sqrt()
    return _ldexp(norms, ex + torch.cat(exponents))


def _weight_sq_norms(x: Tensor, d: Sequence[Tensor | None]) -> Tensor:
    """``|D_i^T X|^2`` one task at a time (no (T, N, out) temporaries), by the direct product
    ``X^T D_i`` (T N in out multiply-adds in all) or the Gram form ``<D_i D_i^T, X X^T>``
    (N^2 in once, then N^2 out a task), whichever is fewer."""
    n, width = x.shape
    out = max((di.shape[1] for di in d if di is not None), default=1)
    tasks = sum(di is not None for di in d)
    gram = x @ x.T if n * n * (width + tasks * out) < tasks * n * width * out else None
    sq = []
    for di in d:
        if di is None:
            sq.append(x.new_zeros(()))
        elif gram is None:
            sq.append((x.T @ di).square().sum())
        elif di.shape[1] > n:
            sq.append((gram * (di @ di.T)).sum())  # an (N, N) temporary
        else:
            sq.append((di * (gram @ di)).sum())  # an (N, out) one
    # >= 0 but for rounding in the Gram form's cancellations
    return torch.stack(sq).clamp_min(0.0) if sq else x.new_zeros(0)
