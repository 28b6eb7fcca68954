"""Space-to-depth for a first convolution whose kernel is a multiple of its stride.

A k x k convolution with stride s over (C, H, W) frames equals a (k/s) x (k/s) convolution with
stride 1 over the frames' s x s pixel blocks stacked as channels, (C*s*s, H/s, W/s) (the layout
of ``pixel_unshuffle``), with the weights rearranged to match. For the Nature CNN's first layer
(8x8, stride 4, 4 input channels) oneDNN runs the second form faster on the CPU: 64 input
channels vectorise where 4 did not (docs/benchmarks.md, "Throughput"). The rearranged frames
cost one copy, which the encoder needs anyway to put uint8 frames in channels-last order; moving
s pixels at a time as one s-byte word makes it cheaper than that layout copy was.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

# an s-byte word moves s uint8 pixels of a row at once
_WORDS = {2: torch.int16, 4: torch.int32, 8: torch.int64}

ENABLED = True  # False: encoders built afterwards run the first layer strided (for comparison)


def depth_factor(obs_shape: Sequence[int], kernel: int, stride: int) -> int:
    """The block size s for a first layer (kernel, stride) over ``obs_shape`` = (C, H, W), or 1
    when the layer is not eligible (stride 1, kernel not a multiple of the stride, H or W not a
    multiple of it, no word of s bytes, or :data:`ENABLED` off)."""
    _, h, w = obs_shape
    if (
        ENABLED
        and stride in _WORDS
        and kernel % stride == 0
        and h % stride == 0
        and w % stride == 0
    ):
        return stride
    return 1


def frames_to_depth(x: Tensor, s: int, rows: bool) -> Tensor | None:
    """uint8 frames (K, B, C, H, W) as s x s blocks in channels, channels-last uint8:
    ``rows`` -> (K*B, C*s*s, H/s, W/s) (sample-major rows, a shared conv); otherwise
    (B, K*C*s*s, H/s, W/s) with task k's channels in group k (a grouped conv). Channel order
    within a group is (c, i, j) for pixel (s*y + i, s*x + j), as ``pixel_unshuffle``. None when
    ``x`` is not uint8 frames whose rows can be read as s-byte words."""
    if x.dtype != torch.uint8 or x.dim() != 5 or x.shape[-1] % s or x.shape[-2] % s:
        return None
    if x.stride(-1) != 1 or x.storage_offset() % s or any(st % s for st in x.stride()[:-1]):
        x = x.clone(memory_format=torch.contiguous_format)  # contiguous() keeps an odd offset
    k, b, c, h, w = x.shape
    words = x.view(_WORDS[s]).view(k, b, c, h // s, s, w // s)  # (K, B, C, y, i, x)
    if rows:
        blocks = words.permute(0, 1, 3, 5, 2, 4).reshape(k * b, h // s, w // s, c * s)
    else:
        blocks = words.permute(1, 3, 5, 0, 2, 4).reshape(b, h // s, w // s, k * c * s)
    # reshape copies here (the permute is not viewable); each word unpacks to its s pixels j
    return blocks.view(torch.uint8).permute(0, 3, 1, 2)


def weight_to_depth(weight: Tensor, s: int) -> Tensor:
    """Conv weights (O, C, k, k) -> (O, C*s*s, k/s, k/s) for frames from :func:`frames_to_depth`:
    weight[o, c, s*a + i, s*b + j] moves to [o, (c, i, j), a, b], which is ``pixel_unshuffle``."""
    return F.pixel_unshuffle(weight, s)


def weight_from_depth(grad: Tensor, s: int) -> Tensor:
    """Inverse of :func:`weight_to_depth` (``pixel_shuffle``) on the last three dims: takes a
    weight gradient, or a stack of per-task ones (..., O, C*s*s, a, b), back to (..., O, C, k, k)."""
    return F.pixel_shuffle(grad, s)
