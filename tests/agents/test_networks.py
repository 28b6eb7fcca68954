"""Grouped (one network per task, batched) modules equal K separate networks."""

import pytest
import torch

from agents.networks import MINATAR_CONVS, NATURE_CONVS, ActorCritic, ConvEncoder, GroupedLinear


def test_grouped_linear_equals_separate_linears():
    torch.manual_seed(0)
    layer = GroupedLinear(3, 4, 2)
    x = torch.randn(3, 5, 4)
    out = layer(x)
    for k in range(3):
        expected = x[k] @ layer.weight[k] + layer.bias[k]
        torch.testing.assert_close(out[k], expected)


def _single(enc: ConvEncoder, k: int, obs_shape, convs, dim, scale) -> ConvEncoder:
    """Copy group k's weights of a grouped encoder into a groups=1 encoder."""
    one = ConvEncoder(obs_shape, convs, dim, groups=1, scale=scale)
    with torch.no_grad():
        for src, dst in zip(enc.convs, one.convs):
            if isinstance(src, torch.nn.Conv2d):
                dst.weight.copy_(src.weight.chunk(enc.groups)[k])
                dst.bias.copy_(src.bias.chunk(enc.groups)[k])
        one.fc.weight[0].copy_(enc.fc.weight[k])
        one.fc.bias[0].copy_(enc.fc.bias[k])
    return one


def test_grouped_conv_encoder_equals_separate_encoders():
    torch.manual_seed(0)
    for shape, convs, dim, scale in [
        ((10, 10, 10), MINATAR_CONVS, 16, 1.0),
        ((4, 84, 84), NATURE_CONVS, 32, 255.0),
    ]:
        enc = ConvEncoder(shape, convs, dim, groups=3, scale=scale)
        x = torch.randint(0, 256 if scale > 1 else 2, (3, 2, *shape), dtype=torch.uint8)
        out = enc(x)
        assert out.shape == (3, 2, dim)
        for k in range(3):
            ref = _single(enc, k, shape, convs, dim, scale)(x[k : k + 1])
            torch.testing.assert_close(out[k], ref[0], rtol=1e-4, atol=1e-5)


def test_independent_network_gradients_stay_in_their_task():
    torch.manual_seed(0)
    net = ActorCritic("minatar", (10, 10, 10), 6, 3, shared_encoder=False)
    x = torch.randint(0, 2, (3, 4, 10, 10, 10), dtype=torch.uint8)
    logits, values = net(x)
    (logits[1].sum() + values[1].sum()).backward()
    conv = net.encoder.convs[0]
    grads = conv.weight.grad.chunk(3)
    assert grads[0].abs().sum() == 0 and grads[2].abs().sum() == 0
    assert grads[1].abs().sum() > 0
    assert net.shared_parameters() == []


def test_shared_encoder_is_shared():
    net = ActorCritic("gridworld", (25,), 4, 3, shared_encoder=True)
    shared = {id(p) for p in net.shared_parameters()}
    assert shared == {id(p) for p in net.encoder.parameters()}
    # task heads are per task: 3 groups
    assert net.policy.weight.shape == (3, 64, 4)


def test_encoders_by_hand_scale_uint8_and_apply_every_relu():
    from torch.nn import functional as F

    from agents.networks import MLPEncoder

    torch.manual_seed(0)
    enc = ConvEncoder((2, 6, 6), ((3, 3, 1),), 4, groups=1, scale=255.0)
    with torch.no_grad():
        enc.fc.bias.fill_(-0.05)  # some features negative before the final ReLU
    x = torch.randint(0, 256, (2, 3, 2, 6, 6), dtype=torch.uint8)
    conv = enc.convs[0]
    h = F.relu(F.conv2d(x.flatten(0, 1).float() / 255.0, conv.weight, conv.bias))
    expected = F.relu(h.flatten(1) @ enc.fc.weight[0] + enc.fc.bias[0]).view(2, 3, 4)
    out = enc(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert (out == 0).any()
    # only uint8 frames are scaled: float observations are taken as they are
    torch.testing.assert_close(enc(x.float() / 255.0), expected, rtol=1e-5, atol=1e-6)
    mlp = MLPEncoder(5, [6, 4])
    with torch.no_grad():
        for layer in mlp.layers:
            layer.bias.fill_(-0.3)
    x = torch.randn(2, 7, 5)
    h = F.relu(x @ mlp.layers[0].weight[0] + mlp.layers[0].bias[0])
    expected = F.relu(h @ mlp.layers[1].weight[0] + mlp.layers[1].bias[0])
    torch.testing.assert_close(mlp(x), expected)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize(
    ("obs_shape", "convs", "scale"),
    [((10, 10, 10), MINATAR_CONVS, 1.0), ((4, 36, 36), NATURE_CONVS, 255.0)],
)
def test_conv_encoder_is_bitwise_the_straightforward_composition(groups, obs_shape, convs, scale):
    # The encoder skips the multiplication by 1 / scale = 1 and applies the last ReLU after the
    # copy into (C, H, W) order (a faster backward): outputs and gradients must not move a bit
    # from relu(conv) per layer, copy, fc, relu, with the input always scaled. The Nature CNN's
    # first layer runs over 4x4 pixel blocks (agents.depth), here built with pixel_unshuffle.
    from torch.nn import functional as F

    from agents.replay import conv2d

    torch.manual_seed(0)
    enc = ConvEncoder(obs_shape, convs, 16, groups=groups, scale=scale)
    k, b = groups, 5
    x = (torch.rand(k, b, *obs_shape) * (2 if scale == 1.0 else 256)).to(torch.uint8)
    weights = torch.randn(k, b, 16)

    def reference() -> torch.Tensor:
        c, hh, ww = obs_shape
        if groups == 1:
            h = x.reshape(k * b, c, hh, ww)
        else:
            h = x.transpose(0, 1).reshape(b, k * c, hh, ww)
        depth = 4 if convs == NATURE_CONVS else 1
        assert enc.depth == depth
        if depth > 1:
            h = F.pixel_unshuffle(h, depth)
        h = h.contiguous(memory_format=torch.channels_last).float().mul_(1.0 / scale)
        for i, conv in enumerate(enc.convs[::2]):
            h = F.relu(
                conv2d(h, conv.weight, conv.bias, conv.stride, groups, depth if i == 0 else 1)
            )
        if groups == 1:
            h = h.contiguous().reshape(k, b, enc.flat_dim)
        else:
            h = h.contiguous().reshape(b, k, enc.flat_dim).transpose(0, 1)
        return F.relu(enc.fc(h))

    results = []
    for forward in (lambda: enc(x), reference):
        enc.zero_grad()
        out = forward()
        (out * weights).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in enc.parameters()]))
    (out, grads), (ref, ref_grads) = results
    assert torch.equal(out, ref)
    assert all(torch.equal(g, r) for g, r in zip(grads, ref_grads))
