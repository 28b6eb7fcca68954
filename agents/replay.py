"""Forward reuse: the loss pass replays the activations the acting passes already computed.

In synchronous A2C the parameters do not change while a rollout is collected, so the forward
pass the loss needs over s_0..s_{T-1} is exactly what the T acting passes computed, a few envs at
a time, without autograd. An encoder's :class:`Tape` records each layer's input and
pre-activation outputs into buffers laid out as the loss pass's batch; in the loss pass each layer
returns its recorded output through an autograd function whose backward is the layer's usual
backward (one batched backward over T*E samples). The loss pass then costs a backward only: on
4 Atari games x 4 envs the loss pass goes from 8.5 to 3.0 ms per update for ``a2c_multitask``
and from 16.4 to 5.3 ms for two-column Distral, for ~2 ms more acting (the records' copies;
``bench/profile_update.py`` medians in docs/benchmarks.md).

The tape is used only when every (step, task) of the rollout was recorded and no parameter changed
since the rollout began (checked with tensor versions); otherwise the layers compute as usual.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from agents.blocked import BlockedGrads, open_blocks
from agents.depth import weight_from_depth, weight_to_depth
from agents.linear import linear_backward


class _ReplayConv(torch.autograd.Function):
    """Returns the recorded output of ``conv2d(x, weight, bias)``; backward as conv2d's."""

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        out: Tensor,
        stride: Sequence[int],
        groups: int,
        depth: int = 1,
    ) -> Tensor:
        ctx.save_for_backward(x, weight)
        # depth > 1: x holds pixel blocks (agents.depth); the backward is the stride-1 form's
        ctx.stride = [1, 1] if depth > 1 else list(stride)
        ctx.groups, ctx.depth = groups, depth
        ctx.ids = (id(weight), id(bias))  # agents.blocked's keys
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad
        if ctx.depth > 1:
            weight = weight_to_depth(weight, ctx.depth)
        sink = open_blocks(x.shape[0]) if ctx.groups == 1 else None
        if sink is not None and (need[1] or need[2]):
            return _blocked_conv_backward(ctx, sink, grad, x, weight)
        one = x.shape[0] == 1  # as conv2d's forward on two copies (see conv2d below)
        if one:
            x, grad = _two_copies(x), torch.cat([grad, torch.zeros_like(grad)])
        gx, gw, gb = torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]], ctx.stride, [0, 0], [1, 1], False, [0, 0],
            ctx.groups, [need[0], need[1], need[2]],
        )  # fmt: skip
        if one and gx is not None:
            gx = gx[:1]
        if gw is not None and ctx.depth > 1:
            gw = weight_from_depth(gw, ctx.depth)
        return gx, gw, gb, None, None, None, None


def _blocked_conv_backward(
    ctx: Any, sink: BlockedGrads, grad: Tensor, x: Tensor, weight: Tensor
) -> tuple[Tensor | None, ...]:
    """:class:`_ReplayConv`'s backward with its weight and bias gradients taken per task block
    of rows (recorded in ``sink``) and returned summed (:mod:`agents.blocked`)."""
    need = ctx.needs_input_grad

    def conv_backward(g: Tensor, h: Tensor, mask: list[bool]) -> tuple[Tensor | None, ...]:
        return torch.ops.aten.convolution_backward(
            g, h, weight, [weight.shape[0]], ctx.stride, [0, 0], [1, 1], False, [0, 0], 1, mask
        )

    gx = conv_backward(grad, x, [True, False, False])[0] if need[0] else None
    k = sink.num_tasks
    parts = [
        conv_backward(g, h, [False, need[1], need[2]])
        for g, h in zip(grad.chunk(k), x.chunk(k), strict=True)
    ]
    per_task: list[Tensor | None] = [None, None]
    if need[2]:
        per_task[1] = torch.stack([cast(Tensor, p[2]) for p in parts])
    if need[1]:
        weights = [cast(Tensor, p[1]) for p in parts]
        if ctx.depth > 1:
            weights = [weight_from_depth(g, ctx.depth) for g in weights]
        slot = sink.slot(ctx.ids[0])
        if slot is None:
            per_task[0] = torch.stack(weights)
        else:  # into the caller's matrix (agents.blocked)
            for t, g in enumerate(weights):
                slot[t].copy_(g)
            per_task[0] = slot
    gw, gb = sink.record(ctx.ids, per_task)
    return gx, gw, gb, None, None, None, None


def _two_copies(h: Tensor) -> Tensor:
    """A batch of one sample (1, C, H, W) as two copies of it, channels-last."""
    return h.expand(2, *h.shape[1:]).contiguous(memory_format=torch.channels_last)


def conv2d(
    h: Tensor, weight: Tensor, bias: Tensor, stride: Sequence[int], groups: int, depth: int = 1
) -> Tensor:
    """``F.conv2d`` without padding. oneDNN picks another algorithm for a batch of one sample,
    which rounds differently from the same sample inside a larger batch (the Nature CNN's third
    layer): acting with one env of one task then gave other activations than the loss pass over
    T*E samples, so ``agent.replay_forward=true`` differed from ``false``. A batch of one runs as
    two copies of the sample instead (its backward likewise, in :class:`_ReplayConv`).
    ``depth`` > 1: ``h`` holds depth x depth pixel blocks (:mod:`agents.depth`) and ``weight``
    keeps its usual shape; the equivalent stride-1 convolution runs."""
    if depth > 1:
        weight, stride = weight_to_depth(weight, depth), (1, 1)
    if h.shape[0] == 1:
        return torch.nn.functional.conv2d(_two_copies(h), weight, bias, stride, groups=groups)[:1]
    return torch.nn.functional.conv2d(h, weight, bias, stride, groups=groups)


class _ReplayLinear(torch.autograd.Function):
    """Returns the recorded output of a :class:`~agents.networks.GroupedLinear` over all groups."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor, out: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.ids = (id(weight), id(bias))  # agents.blocked's keys
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        sink = open_blocks(x.shape[0]) if weight.shape[0] == 1 else None
        if sink is None or x.shape[0] != sink.num_tasks or not (need[1] or need[2]):
            gx, gw, gb = linear_backward(grad, x, weight, need)
            return gx, gw, gb, None
        # one map for every row, rows (K, N, in) task-major: per-task gradients (agents.blocked)
        gx = linear_backward(grad, x, weight, (need[0], False, False))[0]
        weights: Tensor | None = None  # (K, 1, in, out)
        if need[1]:
            slot = sink.slot(ctx.ids[0])
            if slot is None:
                weights = torch.bmm(x.transpose(1, 2), grad).unsqueeze(1)
            else:  # straight into the caller's matrix (agents.blocked)
                weights = slot
                torch.bmm(x.transpose(1, 2), grad, out=slot.squeeze(1))
        biases = grad.sum(1, keepdim=True).unsqueeze(1) if need[2] else None  # (K, 1, 1, out)
        gw, gb = sink.record(ctx.ids, (weights, biases))
        return gx, gw, gb, None


class Tape:
    """Per-encoder record of one rollout's layer activations, in the loss pass's batch layout.

    Layouts of a recorded tensor for task slice g (k rows) and E envs, and of its replay:

    - ``rows``: (k*E, C, H, W), task-major rows (shared conv) -> (K*T*E, C, H, W)
    - ``channels``: (E, k*C, H, W), tasks in channel groups (grouped conv) -> (T*E, K*C, H, W)
    - ``features``: (k, E, D) -> (K, T*E, D)

    Image buffers are channels-last, like the encoder's convolutions.
    """

    def __init__(self) -> None:
        self.buffers: dict[int, tuple[str, Tensor]] = {}
        self.filled: Tensor | None = None  # (T, K) bool: which (step, task) were recorded
        self.cursor: tuple[int, slice] | None = None
        self.stored = 0  # layers recorded at the cursor
        self.params: list[Tensor] = []
        self.versions: list[int] = []
        self.valid = False
        self.replaying = False
        self.loss_pass = False  # inside the loss pass (replayed or recomputed)

    # ------------------------------------------------------------------ recording
    def begin(self, num_steps: int, num_tasks: int, params: Sequence[Tensor]) -> None:
        """Start recording a rollout of ``num_steps`` steps; ``params`` must stay unchanged."""
        self.filled = torch.zeros(num_steps, num_tasks, dtype=torch.bool)
        self.params = list(params)
        self.versions = [p._version for p in self.params]
        self.valid = True

    @contextmanager
    def at(self, t: int, tasks: slice) -> Iterator[None]:
        """Record the layers computed inside this block as step ``t`` of tasks ``tasks``."""
        if self.filled is None or not self.valid:
            yield
            return
        self.cursor, self.stored = (t, tasks), 0
        try:
            yield
            if self.stored:  # this encoder ran (a 1-column agent acts without pi0's)
                self.filled[t, tasks] = True
                self.valid &= self.stored == len(self.buffers)
        finally:
            self.cursor = None

    def store(self, index: int, value: Tensor, layout: str) -> None:
        """Record layer ``index``'s tensor (layout as in the class doc) at the cursor."""
        if self.cursor is None:
            return
        t, g = self.cursor
        k = g.stop - g.start
        self.stored += 1
        try:
            buf = self._buffer(index, value, layout, k)
            if layout == "rows":
                buf[g, t] = value.view(k, -1, *value.shape[1:])
            elif layout == "channels":
                buf[t, :, g] = value.unflatten(1, (k, value.shape[1] // k))
            else:
                buf[g, t] = value
        except RuntimeError:  # a shape this rollout's buffers do not fit: do not replay
            self.valid = False

    def _buffer(self, index: int, value: Tensor, layout: str, k: int) -> Tensor:
        """The buffer of layer ``index`` (allocated on first use), as a logical view."""
        filled = self.filled
        assert filled is not None, "recording without begin()"
        t_all, k_all = filled.shape
        if layout == "rows":  # memory (K, T, E, H, W, C)
            c, h, w = value.shape[1:]
            shape = (k_all, t_all, value.shape[0] // k, h, w, c)
        elif layout == "channels":  # memory (T, E, H, W, K, C)
            e, kc, h, w = value.shape
            shape = (t_all, e, h, w, k_all, kc // k)
        else:  # memory (K, T, E, D)
            shape = (k_all, t_all, *value.shape[1:])
        old = self.buffers.get(index)
        want = (layout, torch.Size(shape), value.dtype, value.device)
        if old is None or (old[0], old[1].shape, old[1].dtype, old[1].device) != want:
            if old is not None and bool(filled.any()):  # earlier steps' records are lost
                self.valid = False
            mem = torch.empty(shape, dtype=value.dtype, device=value.device)
            self.buffers[index] = (layout, mem)
        return self._logical(*self.buffers[index])

    @staticmethod
    def _logical(layout: str, mem: Tensor) -> Tensor:
        if layout == "rows":  # -> (K, T, E, C, H, W)
            return mem.permute(0, 1, 2, 5, 3, 4)
        if layout == "channels":  # -> (T, E, K, C, H, W)
            return mem.permute(0, 1, 4, 5, 2, 3)
        return mem

    # ------------------------------------------------------------------ replay
    def ready(self) -> bool:
        """Whether the whole rollout was recorded with the parameters it still has."""
        return (
            self.valid
            and self.filled is not None
            and bool(self.filled.all())
            and [p._version for p in self.params] == self.versions
        )

    def get(self, index: int) -> Tensor:
        """Layer ``index``'s record over the rollout, in the loss pass's batch layout."""
        layout, mem = self.buffers[index]
        x = self._logical(layout, mem)
        if layout == "rows":
            return x.flatten(0, 2)
        if layout == "channels":
            return x.flatten(0, 1).flatten(1, 2)
        return x.flatten(1, 2)

    def reset(self) -> None:
        """Forget the rollout (the buffers are kept for the next one)."""
        self.filled, self.cursor, self.params, self.versions = None, None, [], []
        self.valid = self.replaying = self.loss_pass = False

    # ------------------------------------------------------------------ layers
    def conv(
        self,
        index: int,
        h: Tensor,
        weight: Tensor,
        bias: Tensor,
        stride: Sequence[int],
        groups: int,
        layout: str,
        depth: int = 1,
    ) -> Tensor:
        """``conv2d(h, weight, bias)`` (no padding; ``depth`` as there), recorded or replayed."""
        if self.replaying:
            return _ReplayConv.apply(h, weight, bias, self.get(index), stride, groups, depth)
        if self.loss_pass and groups == 1 and torch.is_grad_enabled():
            # recomputed in the loss pass: a shared layer takes the replayed layer's backward,
            # which can split its weight gradient by task (agents.blocked)
            with torch.no_grad():
                z = conv2d(h, weight, bias, stride, groups, depth)
            return _ReplayConv.apply(h, weight, bias, z, stride, groups, depth)
        z = conv2d(h, weight, bias, stride, groups, depth)
        self.store(index, z, layout)
        return z

    def linear(self, index: int, layer: nn.Module, h: Tensor, tasks: slice | None) -> Tensor:
        """``layer(h, tasks)`` for a GroupedLinear, recorded or replayed (all tasks)."""
        if self.replaying:
            return _ReplayLinear.apply(h, layer.weight, layer.bias, self.get(index))
        if self.loss_pass and getattr(layer, "groups", None) == 1 and torch.is_grad_enabled():
            with torch.no_grad():  # recomputed in the loss pass, shared: as conv() above
                z = layer(h, tasks)
            return _ReplayLinear.apply(h, layer.weight, layer.bias, z)
        z = layer(h, tasks)
        self.store(index, z, "features")
        return z


def encoders(module: nn.Module) -> list[nn.Module]:
    """The encoders (modules with a :class:`Tape`) inside ``module``."""
    return [m for m in module.modules() if isinstance(getattr(m, "tape", None), Tape)]


def tapes(module: nn.Module) -> list[Tape]:
    """The tapes of every encoder inside ``module``."""
    return [cast(Tape, m.tape) for m in encoders(module)]


@contextmanager
def recording(
    items: Sequence[Tape], t: int | None, tasks: slice | None, num_tasks: int
) -> Iterator[None]:
    """Record into ``items`` as step ``t`` of ``tasks`` (no-op when ``t`` is None)."""
    if t is None:
        yield
        return
    g = slice(0, num_tasks) if tasks is None else tasks
    with ExitStack() as stack:
        for tape in items:
            stack.enter_context(tape.at(t, g))
        yield


@contextmanager
def replaying(items: Sequence[Tape]) -> Iterator[None]:
    """Inside: tapes holding the whole rollout replay it. After: every tape is reset."""
    for tape in items:
        tape.replaying = tape.ready()
        tape.loss_pass = True
    try:
        yield
    finally:
        for tape in items:
            tape.reset()
