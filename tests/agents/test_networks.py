"""Grouped (one network per task, batched) modules equal K separate networks."""

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
