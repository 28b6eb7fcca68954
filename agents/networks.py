"""Encoders and heads that evaluate one shared network or K per-task networks in one batch.

Inputs are task-major batches ``(K, B, *obs_shape)``: row k holds B samples of task k (the
multi-task env lays its slots out task-major, so a rollout reshapes to this for free). A *grouped*
module holds K independent copies of its weights and applies copy k to row k in a single batched
kernel (grouped convolution, ``baddbmm``), which is what makes one network per task affordable: no
Python loop over tasks. A *shared* module (``groups=1``) applies one set of weights to every row.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from agents.depth import depth_factor, frames_to_depth
from agents.linear import grouped_linear
from agents.replay import Tape

# (out_channels, kernel, stride) per conv layer
NATURE_CONVS: tuple[tuple[int, int, int], ...] = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
MINATAR_CONVS: tuple[tuple[int, int, int], ...] = ((16, 3, 1),)


def _orthogonal_(weight: Tensor, gain: float, groups: int) -> None:
    """Orthogonal init applied separately to each of the ``groups`` blocks along dim 0."""
    with torch.no_grad():
        for block in weight.chunk(groups, dim=0):
            nn.init.orthogonal_(block.view(block.shape[0], -1), gain=gain)


class GroupedLinear(nn.Module):
    """``groups`` independent linear maps: (K, B, in) -> (K, B, out); groups=1 is one shared map.

    Weights are stored as (groups, in, out) so the grouped case is a single ``baddbmm``; the
    products run through :mod:`agents.linear` (oneDNN on the CPU for the large layers).
    """

    def __init__(self, groups: int, in_features: int, out_features: int, gain: float = 1.0):
        super().__init__()
        self.groups = groups
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(groups, 1, out_features))
        with torch.no_grad():
            for k in range(groups):
                w = torch.empty(out_features, in_features)
                nn.init.orthogonal_(w, gain=gain)
                self.weight[k].copy_(w.t())

    def forward(self, x: Tensor, tasks: slice | None = None) -> Tensor:
        """x (K, B, in) -> (K, B, out); ``tasks`` selects which groups the K rows are."""
        if self.groups == 1 or tasks is None:
            return grouped_linear(x, self.weight, self.bias)
        chosen = range(self.groups)[tasks]
        if len(chosen) == 1:
            # One group: as G = 1 it would take the shared kernel (or a batch of one product that
            # the BLAS splits over its threads), which rounds differently from the full batch of
            # groups, so acting over a one-task group (env.task_groups) did not give the values
            # the loss pass computes. Computed instead inside a window of two adjacent groups,
            # its input in both.
            lo = min(chosen[0], self.groups - 2)
            window = slice(lo, lo + 2)
            pair = x.expand(2, *x.shape[1:]).contiguous()
            i = chosen[0] - lo
            return grouped_linear(pair, self.weight[window], self.bias[window])[i : i + 1]
        return grouped_linear(x, self.weight[tasks], self.bias[tasks])


class ConvEncoder(nn.Module):
    """Conv stack + one fully connected layer, shared (groups=1) or one copy per task (groups=K).

    ``obs_shape`` is (C, H, W); uint8 inputs are divided by ``scale`` on the fly so observations
    stay uint8 until the network. Output (K, B, feature_dim). A first layer whose kernel is a
    multiple of its stride runs as the equal stride-1 conv over pixel blocks (:mod:`agents.depth`).
    """

    def __init__(
        self,
        obs_shape: Sequence[int],
        convs: Sequence[tuple[int, int, int]],
        feature_dim: int,
        groups: int = 1,
        scale: float = 255.0,
    ):
        super().__init__()
        c, h, w = obs_shape
        self.groups, self.scale, self.in_channels, self.in_width = groups, scale, c, w
        # first layer as a stride-1 conv over pixel blocks when it can be (agents.depth)
        self.depth = depth_factor(obs_shape, convs[0][1], convs[0][2]) if convs else 1
        layers: list[nn.Module] = []
        for out, k, s in convs:
            conv = nn.Conv2d(c * groups, out * groups, k, stride=s, groups=groups)
            _orthogonal_(conv.weight, math.sqrt(2), groups)
            if conv.bias is not None:  # always: Conv2d's default
                nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU()]
            c, h, w = out, (h - k) // s + 1, (w - k) // s + 1
        # channels_last (NHWC) makes oneDNN's CPU convolutions ~25% faster here (23 vs 30 ms for
        # forward+backward of the Nature CNN on 96 frames, 2 threads) and suits cuDNN too.
        # (Module.to takes memory_format at run time; torch's annotations leave it out)
        self.convs = nn.Sequential(*layers).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.flat_dim = c * h * w
        self.fc = GroupedLinear(groups, self.flat_dim, feature_dim, gain=math.sqrt(2))
        self.feature_dim = feature_dim
        self.tape = Tape()  # acting passes' activations, replayed by the loss (agents.replay)

    def forward(self, x: Tensor, tasks: slice | None = None) -> Tensor:
        """x (K, B, C, H, W) -> (K, B, feature_dim); ``tasks`` selects the groups of the K rows."""
        k, b = x.shape[:2]
        shared = self.groups == 1
        # Shared: rows are (task, sample) pairs. Grouped: (B, K*C, H, W), so that group k of the
        # conv sees task k's channels.
        layout = "rows" if shared else "channels"
        tape = self.tape
        if tape.replaying:
            h = tape.get(-1)
        else:
            blocks = frames_to_depth(x, self.depth, shared) if self.depth > 1 else None
            if blocks is not None:
                h = blocks
            elif shared:
                h = x.reshape(k * b, *x.shape[2:])
            else:
                h = x.transpose(0, 1).reshape(b, k * self.in_channels, *x.shape[3:])
            # Change layout while still uint8 (4x less to copy), then convert; float() keeps NHWC.
            h = h.contiguous(memory_format=torch.channels_last)
            h = h.float()
            if x.dtype == torch.uint8 and self.scale != 1.0:  # MinAtar's 0/1 planes: scale 1
                h = h.mul_(1.0 / self.scale)
            tape.store(-1, h, layout)
        convs = list(self.convs)[::2]  # slicing the Sequential would build a new Module per call
        depth = self.depth if h.shape[-1] != self.in_width else 1  # frames or pixel blocks
        for i, conv in enumerate(convs):
            w, bias = conv.weight, conv.bias
            if not shared and tasks is not None:  # the slice of the weights these tasks own
                per = w.shape[0] // self.groups
                w = w[tasks.start * per : tasks.stop * per]
                bias = bias[tasks.start * per : tasks.stop * per]
            h = tape.conv(i, h, w, bias, conv.stride, 1 if shared else k, layout, depth)
            depth = 1
            if i < len(convs) - 1:
                h = F.relu(h)
        # The last ReLU runs after the copy into the flat (C, H, W) order: its backward then sees
        # gradient and output in one layout (mixed NCHW/NHWC ran ~5x slower; same values).
        h = F.relu(h.contiguous())
        if shared:
            h = h.reshape(k, b, self.flat_dim)
        else:
            h = h.reshape(b, k, self.flat_dim).transpose(0, 1)
        return F.relu(tape.linear(len(convs), self.fc, h, tasks))


class MLPEncoder(nn.Module):
    """ReLU MLP over flat observations, shared (groups=1) or one copy per task (groups=K)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], groups: int = 1):
        super().__init__()
        dims = [in_dim, *hidden]
        self.groups = groups
        self.layers = nn.ModuleList(
            GroupedLinear(groups, a, b, gain=math.sqrt(2)) for a, b in itertools.pairwise(dims)
        )
        self.feature_dim = dims[-1]
        self.tape = Tape()  # acting passes' activations, replayed by the loss (agents.replay)

    def forward(self, x: Tensor, tasks: slice | None = None) -> Tensor:
        """x (K, B, *obs) -> (K, B, feature_dim); ``tasks`` selects the groups of the K rows."""
        if self.tape.replaying:
            h = self.tape.get(-1)
        else:
            h = x.float().flatten(2)
            self.tape.store(-1, h, "features")
        for i, layer in enumerate(self.layers):
            h = F.relu(self.tape.linear(i, layer, h, tasks))
        return h


def make_encoder(
    suite: str, obs_shape: Sequence[int], groups: int, hidden: Sequence[int] = ()
) -> ConvEncoder | MLPEncoder:
    """The suite's encoder: Nature CNN (Atari), small conv (MinAtar), MLP (gridworld)."""
    if suite == "atari":
        return ConvEncoder(obs_shape, NATURE_CONVS, 512, groups=groups, scale=255.0)
    if suite == "minatar":
        return ConvEncoder(obs_shape, MINATAR_CONVS, 128, groups=groups, scale=1.0)
    if suite == "gridworld":
        return MLPEncoder(int(math.prod(obs_shape)), list(hidden) or [64, 64], groups=groups)
    raise ValueError(f"no encoder for suite {suite!r}")


class ActorCritic(nn.Module):
    """Encoder + policy and value heads over task-major batches (K, B, *obs).

    ``shared_encoder``: one encoder for all tasks (hard sharing) or one per task (independent).
    ``task_heads``: per-task policy/value heads, or one task-agnostic head pair.
    """

    def __init__(
        self,
        suite: str,
        obs_shape: Sequence[int],
        num_actions: int,
        num_tasks: int,
        shared_encoder: bool,
        task_heads: bool = True,
        hidden: Sequence[int] = (),
    ):
        super().__init__()
        self.num_tasks = num_tasks
        self.encoder = make_encoder(suite, obs_shape, 1 if shared_encoder else num_tasks, hidden)
        heads = num_tasks if task_heads else 1
        d = self.encoder.feature_dim
        self.policy = GroupedLinear(heads, d, num_actions, gain=0.01)
        self.value = GroupedLinear(heads, d, 1, gain=1.0)

    def forward(self, obs: Tensor, tasks: slice | None = None) -> tuple[Tensor, Tensor]:
        """obs (K, B, *obs_shape) -> (logits (K, B, A), values (K, B)).

        ``tasks`` (a slice of task indices) says which tasks the K rows are when K is a subset.
        """
        h = self.encoder(obs, tasks)
        return self.policy(h, tasks), self.value(h, tasks).squeeze(-1)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters used by every task (empty for fully independent networks)."""
        params: list[nn.Parameter] = []
        for mod in (self.encoder, self.policy, self.value):
            if mod.groups == 1:
                params += list(mod.parameters())
        return params
