"""Gradient reversal in one backward: a hook turns the adversaries' gradient where it enters the
shared part of the graph.

The shared targets (the shared parameters, or the features) must get
``d/dtheta (sum_normal L_i - lambda sum_adv L_j)`` and every other leaf the plain sum's gradient.
Call a node *pure* when it leads to a target and to no other leaf. Every path from a loss to a
target enters the pure nodes once and stays there; no path to another leaf enters them. So one
backward of the plain sum does it, with the gradient each adversary sends along an edge into a
pure node (or its seed, if its loss node is pure) multiplied by ``-lambda``: a hook on the node
the edge leaves. That node must carry no normal task's gradient; otherwise the caller takes
two passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.autograd.graph import Node

from mtrl.weighting.heads_pass import loss_roots

Hook = Callable[[Sequence[Tensor | None], object], tuple[Tensor | None, ...]]


def _pure_nodes(
    roots: Sequence[Node], is_target: Callable[[Node], bool], stop: Node | None, stop_nr: int
) -> dict[Node, bool] | None:
    """Every node ``roots`` reach (not expanding targets), mapped to whether it is pure. None
    when a loss reaches the features' node through another of its outputs."""
    target: dict[Node, bool] = {}  # leads to a target
    other: dict[Node, bool] = {}  # leads to a leaf that is not a target
    stack: list[tuple[Node, bool]] = [(r, False) for r in roots]
    while stack:  # post-order: a node is decided after its next functions
        fn, expanded = stack.pop()
        if fn in target:
            continue
        if is_target(fn):
            target[fn], other[fn] = True, False
            continue
        edges = [(nxt, nr) for nxt, nr in fn.next_functions if nxt is not None]
        if not edges:  # a leaf that is not a target
            target[fn], other[fn] = False, True
            continue
        if not expanded:
            if any(nxt is stop and nr != stop_nr for nxt, nr in edges):
                return None
            stack.append((fn, True))
            stack.extend((nxt, False) for nxt, _ in edges if nxt not in target)
            continue
        target[fn] = any(target[nxt] for nxt, _ in edges)
        other[fn] = any(other[nxt] for nxt, _ in edges)
    return {fn: t and not other[fn] for fn, t in target.items()}


def _reaches(roots: Sequence[Node], nodes: dict[Node, list[int]], pure: dict[Node, bool]) -> bool:
    """Whether any of ``roots`` reaches one of ``nodes`` (pure nodes are not expanded)."""
    seen: set[Node] = set()
    stack: list[Node | None] = list(roots)
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen or pure.get(fn, False):
            continue
        if fn in nodes:
            return True
        seen.add(fn)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return False


def _scaler(idx: list[int], factor: float) -> Hook:
    def scale(grad_inputs: Sequence[Tensor | None], _: object) -> tuple[Tensor | None, ...]:
        out = list(grad_inputs)
        for k in idx:
            g = out[k]
            if g is not None:
                out[k] = g * factor
        return tuple(out)

    return scale


def reversed_backward(
    losses: Tensor | Sequence[Tensor],
    targets: Sequence[Tensor],
    adversarial: Sequence[bool],
    lambda_: float,
    features: Tensor | None = None,
) -> bool:
    """Backward of ``sum_i L_i`` in one pass, the adversaries' gradient into ``targets`` (the
    shared parameters, or ``[features]``) multiplied by ``-lambda_``, every other leaf's plain.

    Returns False, having done nothing, when a normal task's loss reaches a node where an
    adversary's gradient enters the shared part, a loss reaches the features' node through
    another of its outputs, or a stacked loss vector is not ``torch.stack`` of the tasks' losses.
    """
    parts = losses if isinstance(losses, Tensor) else list(losses)
    roots = loss_roots(parts, parts.shape[0] if isinstance(parts, Tensor) else len(parts))
    if roots is None:
        return False
    stop, stop_nr = None, 0
    if features is not None:
        stop, stop_nr = features.grad_fn, features.output_nr

        def is_target(fn: Node) -> bool:  # the features' node, or a leaf's AccumulateGrad
            return fn is stop if stop is not None else getattr(fn, "variable", None) is features

    else:
        ids = {id(p) for p in targets}

        def is_target(fn: Node) -> bool:
            var = getattr(fn, "variable", None)
            return var is not None and id(var) in ids

    adv = [r for r, a in zip(roots, adversarial, strict=True) if a and r is not None]
    normal = [r for r, a in zip(roots, adversarial, strict=True) if not a and r is not None]
    pure = _pure_nodes(adv, is_target, stop, stop_nr)
    if pure is None:
        return False
    entries: dict[Node, list[int]] = {}  # node -> its edges into pure nodes
    for fn, is_pure in pure.items():
        if not is_pure:
            nexts = fn.next_functions
            idx = [k for k, (nxt, _) in enumerate(nexts) if nxt is not None and pure.get(nxt)]
            if idx:
                entries[fn] = idx
    if _reaches(normal, entries, pure):
        return False

    factor = -float(lambda_)
    seeds = [
        factor if a and r is not None and pure.get(r, False) else 1.0
        for r, a in zip(roots, adversarial, strict=True)
    ]
    if isinstance(parts, Tensor):
        outputs, grads = [parts], [torch.tensor(seeds).to(parts)]
    else:
        live = [(x, s) for x, s, r in zip(parts, seeds, roots, strict=True) if r is not None]
        outputs, grads = [x for x, _ in live], [torch.full_like(x, s) for x, s in live]
    if not any(r is not None for r in roots):
        return True  # no loss has a gradient: nothing to do
    handles = [fn.register_hook(_scaler(idx, factor)) for fn, idx in entries.items()]
    try:
        torch.autograd.backward(outputs, grads)
    finally:
        for h in handles:
            h.remove()
    return True
