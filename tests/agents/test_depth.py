"""Space-to-depth for the first conv layer (agents.depth): the pixel-block layout, the weight
rearrangement and its inverse, and the stride-1 convolution equal to the strided one, forward
and backward (as the encoder and the replayed loss pass run it)."""

import pytest
import torch
from torch.nn import functional as F

import agents.depth as depth_module
from agents.depth import depth_factor, frames_to_depth, weight_from_depth, weight_to_depth
from agents.networks import NATURE_CONVS, ConvEncoder
from agents.replay import _ReplayConv, conv2d


def test_depth_factor_only_where_the_blocks_tile_the_frame(monkeypatch):
    assert depth_factor((4, 84, 84), 8, 4) == 4  # the Nature CNN on Atari frames
    assert depth_factor((4, 84, 84), 4, 2) == 2
    assert depth_factor((10, 10, 10), 3, 1) == 1  # MinAtar's stride 1
    assert depth_factor((4, 84, 84), 6, 4) == 1  # kernel not a multiple of the stride
    assert depth_factor((4, 85, 84), 8, 4) == 1  # height not a multiple
    assert depth_factor((4, 84, 86), 8, 4) == 1  # width not a multiple
    assert depth_factor((4, 84, 84), 6, 3) == 1  # no 3-byte word
    assert ConvEncoder((4, 84, 84), NATURE_CONVS, 8).depth == 4
    assert ConvEncoder((4, 86, 86), NATURE_CONVS, 8).depth == 1
    monkeypatch.setattr(depth_module, "ENABLED", False)  # bench/profile_update.py's comparison
    assert depth_factor((4, 84, 84), 8, 4) == 1


def test_a_two_by_two_block_by_hand():
    # one 2x2 frame [[1, 2], [3, 4]] is one block of 4 channels in (i, j) order; a 2x2 kernel
    # with stride 2 becomes a 1x1 kernel over them: 1*1 + 2*10 + 3*100 + 4*1000
    x = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8).view(1, 1, 1, 2, 2)
    blocks = frames_to_depth(x, 2, rows=True)
    assert blocks.tolist() == [[[[1]], [[2]], [[3]], [[4]]]]
    w = torch.tensor([[1.0, 10.0], [100.0, 1000.0]]).view(1, 1, 2, 2)
    assert weight_to_depth(w, 2).flatten().tolist() == [1.0, 10.0, 100.0, 1000.0]
    assert F.conv2d(x[0].float(), w, stride=2).item() == 4321.0
    assert F.conv2d(blocks.float(), weight_to_depth(w, 2)).item() == 4321.0


@pytest.mark.parametrize("s", [2, 4, 8])
@pytest.mark.parametrize("rows", [True, False])
def test_frames_to_depth_is_pixel_unshuffle_in_either_layout(s, rows):
    torch.manual_seed(0)
    k, b, c, h, w = 3, 2, 4, 16, 24
    x = torch.randint(0, 256, (k, b, c, h, w), dtype=torch.uint8)
    flat = x.reshape(k * b, c, h, w) if rows else x.transpose(0, 1).reshape(b, k * c, h, w)
    got = frames_to_depth(x, s, rows)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, F.pixel_unshuffle(flat, s))
    # rows that cannot be read as words as they are (offset 1, odd row stride) are copied first
    wide = torch.randint(0, 256, (k, b, c, h, w + 1), dtype=torch.uint8)
    shifted = wide[..., 1:]
    flat = shifted.reshape(k * b, c, h, w) if rows else shifted.transpose(0, 1).reshape(b, -1, h, w)
    assert torch.equal(frames_to_depth(shifted, s, rows), F.pixel_unshuffle(flat, s))
    # contiguous frames at an odd offset into their storage (a slice of a flat buffer)
    odd = torch.cat([torch.zeros(1, dtype=torch.uint8), x.flatten()])[1:].view(x.shape)
    assert odd.is_contiguous() and odd.storage_offset() == 1
    flat = odd.reshape(k * b, c, h, w) if rows else odd.transpose(0, 1).reshape(b, k * c, h, w)
    assert torch.equal(frames_to_depth(odd, s, rows), F.pixel_unshuffle(flat, s))


def test_frames_to_depth_declines_what_it_cannot_rearrange():
    frames = torch.zeros(1, 2, 4, 8, 8, dtype=torch.uint8)
    assert frames_to_depth(frames.float(), 4, True) is None  # not uint8
    assert frames_to_depth(frames[..., :6], 4, True) is None  # width not a multiple of 4
    assert frames_to_depth(frames[..., :6, :], 4, True) is None  # height
    assert frames_to_depth(frames[0], 4, True) is None  # not (K, B, C, H, W)


def test_weight_from_depth_inverts_weight_to_depth_with_leading_dims():
    w = torch.randn(5, 32, 3, 8, 8)  # e.g. per-task gradients of a (32, 3, 8, 8) weight
    moved = torch.stack([weight_to_depth(t, 4) for t in w])
    assert moved.shape == (5, 32, 48, 2, 2)
    assert torch.equal(weight_from_depth(moved, 4), w)
    assert torch.equal(weight_from_depth(weight_to_depth(w[0], 2), 2), w[0])


@pytest.mark.parametrize("groups", [1, 3])
def test_stride_one_block_conv_equals_the_strided_conv_forward_and_backward(groups):
    # float64 so that only a wrong rearrangement could differ: the encoder's conv2d and the
    # replayed layer's backward (weight and bias gradients taken back to the (O, C, 8, 8) shape)
    torch.manual_seed(1)
    k, b, c = groups, 4, 4
    x = torch.randint(0, 256, (k, b, c, 36, 36), dtype=torch.uint8)
    rows = groups == 1
    frames = x.reshape(k * b, c, 36, 36) if rows else x.transpose(0, 1).reshape(b, k * c, 36, 36)
    frames = frames.double()
    blocks = frames_to_depth(x, 4, rows).double()
    weight = torch.randn(32 * groups, c, 8, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(32 * groups, dtype=torch.float64, requires_grad=True)
    ref = F.conv2d(frames, weight, bias, stride=4, groups=groups)
    out = conv2d(blocks, weight, bias, (4, 4), groups, depth=4)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-9)
    g = torch.randn_like(ref)
    expected = torch.autograd.grad((ref * g).sum(), (weight, bias))
    replayed = _ReplayConv.apply(blocks, weight, bias, out.detach(), (4, 4), groups, 4)
    got = torch.autograd.grad((replayed * g).sum(), (weight, bias))
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-9)


def test_encoder_on_atari_frames_matches_the_strided_first_layer():
    # the whole encoder against itself with the first layer run strided on the frames
    torch.manual_seed(2)
    enc = ConvEncoder((4, 36, 36), NATURE_CONVS, 16, groups=2)
    x = torch.randint(0, 256, (2, 3, 4, 36, 36), dtype=torch.uint8)
    out = enc(x)
    enc.depth = 1  # as an encoder for which the first layer is not eligible
    torch.testing.assert_close(out, enc(x), rtol=1e-5, atol=1e-6)
