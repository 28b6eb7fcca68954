"""Losses given as a sequence of T scalars (the fast path) give the same gradients as a stacked
(T,) vector, for every method."""

import re

import pytest
import torch

import mtrl.weighting as W

SKIP = {"random"}  # draws fresh weights per call


@pytest.mark.parametrize("name", sorted(set(W.names()) - SKIP))
@pytest.mark.parametrize("features", [False, True])
def test_sequence_and_stacked_losses_agree(make_toy, name, features):
    grads = []
    for as_list in (False, True):
        toy = make_toy(num_tasks=3, seed=1)
        if name == "great" and not features:
            pytest.skip("GREAT needs features=")
        torch.manual_seed(0)  # GREAT's classifier starts from the same weights
        w = W.build(name, 3, **({"feature_dim": 3} if name == "great" else {}))
        losses, feats = toy.losses()
        if as_list:  # independent scalars, as a training loop produces them
            losses = [((h(feats) - y) ** 2).mean() for h, y in zip(toy.heads, toy.y)]
        w.backward(losses, toy.shared(), features=feats if features else None)
        grads.append(toy.grads())
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_cpu_constant_among_device_losses_joins_them():
    # a task without samples often scores torch.tensor(0.0) (or 0.0): on the CPU the list
    # stacked, next to CUDA losses torch.stack refused to mix devices (meta stands in)
    from mtrl.relations.affinity import _as_loss_vector

    loss = torch.ones((), device="meta", requires_grad=True) * 2
    for stack in (W.base.as_loss_vector, _as_loss_vector):
        vec = stack([loss, torch.tensor(0.0), 0.5])
        assert vec.shape == (3,) and vec.device.type == "meta" and vec.requires_grad
        cpu = stack([torch.tensor(2.0), torch.tensor(0.0), 0.5])  # all on the CPU: as before
        assert cpu.device.type == "cpu" and cpu.tolist() == [2.0, 0.0, 0.5]


def test_a_scalar_loss_tensor_is_refused_with_its_shape():
    # a 0-d tensor is not a (T,) vector: as_loss_vector names the shape it got
    for bad in (torch.tensor(1.0), torch.ones(2, 1)):
        expected = f"losses must have shape (T,), got {tuple(bad.shape)}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            W.base.as_loss_vector(bad)
    with pytest.raises(ValueError, match=r"got \(\)"):
        W.build("equal", 1).backward(torch.tensor(1.0, requires_grad=True))
