"""GREAT (Sinha et al. 2018): the gradient classifier's input, its step, and the reversed term."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mtrl.weighting as W


def _great(lambda_: float, **kw) -> W.GREAT:
    torch.manual_seed(0)
    return W.build("great", 3, feature_dim=3, hidden=[5], lambda_=lambda_, **kw)


def test_lambda_zero_is_the_plain_sum_and_the_classifier_steps(make_toy):
    toy, ref = make_toy(), make_toy()
    method = _great(0.0, optimizer="sgd", lr=0.1)
    before = [p.detach().clone() for p in method.classifier.parameters()]
    losses, feats = toy.losses()
    w = method.backward(list(losses.unbind()), features=feats)
    assert torch.equal(w, torch.ones(3))
    ref.losses()[0].sum().backward()
    for p, q in zip(toy.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    assert all(p.grad is None for p in method.classifier.parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, method.classifier.parameters()))


def test_classifier_sees_each_tasks_per_sample_gradient_by_hand(make_toy):
    # MSE with linear heads: dL_i/dz_b = (2/B) (h_i(z_b) - y_ib) w_i; GREAT scales it by B
    toy = make_toy()
    method = _great(1.0)
    seen = []
    method.classifier.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    losses, feats = toy.losses()
    method.backward(losses, features=feats)
    z = feats.detach()
    expected = torch.cat(
        [2 * (h(z) - y) * h.weight.detach() for h, y in zip(toy.heads, toy.y, strict=True)]
    )  # (T*B, D), task-major
    torch.testing.assert_close(seen[-1], expected)  # the classifier's own step
    torch.testing.assert_close(seen[0], expected)  # the network's reversed term


def test_network_descends_sum_minus_lambda_times_the_classifiers_loss(make_toy):
    lam = 0.7
    toy, ref = make_toy(), make_toy()
    method = _great(lam, optimizer="sgd", lr=0.5)
    classifier = copy.deepcopy(method.classifier)  # the weights the network's term uses
    losses, feats = toy.losses()
    method.backward(losses, features=feats)

    losses, z = ref.losses()
    b = z.shape[0]
    g = torch.cat([torch.autograd.grad(loss, z, create_graph=True)[0] for loss in losses])
    labels = torch.arange(3).repeat_interleave(b)
    aux = F.cross_entropy(classifier(b * g), labels)
    params = list(ref.parameters())
    expected = torch.autograd.grad(losses.sum() - lam * aux, params, retain_graph=True)
    for p, e in zip(toy.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e)
    assert not torch.allclose(expected[0], torch.autograd.grad(losses.sum(), params[0])[0])
    # the classifier took one SGD step on the same loss, its own gradient (not reversed)
    c_params = list(classifier.parameters())
    c_grads = torch.autograd.grad(F.cross_entropy(classifier(b * g.detach()), labels), c_params)
    for p, q, gq in zip(method.classifier.parameters(), c_params, c_grads, strict=True):
        torch.testing.assert_close(p.detach(), q.detach() - 0.5 * gq)


def test_classifier_learns_to_tell_distinct_gradients_apart(make_toy):
    toy = make_toy()
    method = _great(0.0, lr=0.1)
    for _ in range(40):
        losses, feats = toy.losses()
        method.backward(losses, features=feats)
        toy.zero_grad()
    assert method.last_accuracy > 0.9  # 1/3 would be chance


def test_accuracy_is_read_from_the_device_only_when_asked_for(make_toy, device_traffic):
    toy, method = make_toy(), _great(0.5)
    assert math.isnan(method.last_accuracy)
    losses, feats = toy.losses()
    with device_traffic() as traffic:
        method.backward(losses, features=feats)
    assert traffic.reads["float"] == 0, traffic.reads  # float(accuracy): a CUDA sync per step
    assert method.last_accuracy in {i / 24 for i in range(25)}  # T * B = 24 gradients


def test_state_round_trip_repeats_the_next_step(make_toy):
    a = _great(0.5)
    toy = make_toy()
    for _ in range(3):
        losses, feats = toy.losses()
        a.backward(losses, features=feats)
    b = W.build("great", 3, feature_dim=3, hidden=[5], lambda_=0.0)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert float(b.lambda_) == 0.5
    for method in (a, b):
        losses, feats = toy.losses()
        method.backward(losses, features=feats)
    for p, q in zip(a.classifier.parameters(), b.classifier.parameters(), strict=True):
        assert torch.equal(p, q)


def test_great_needs_the_representation():
    method = _great(1.0)
    z = nn.Parameter(torch.randn(4, 3))
    losses = [z.sum(), (z**2).sum(), z.mean()]
    with pytest.raises(ValueError, match=r"pass features=z of shape \(B, 3\)"):
        method.backward(losses, [z])
    with pytest.raises(ValueError, match=r"got \(4, 2\)"):
        method.backward(losses, features=torch.randn(4, 2, requires_grad=True))
    with pytest.raises(TypeError, match="feature_dim"):
        W.build("great", 3)


def test_trainer_runs_great_in_representation_mode():
    from mtrl.architectures import build_mlp
    from mtrl.trainer import Trainer

    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randn(32, 2, 1)

    def trainer(arch: str, **kw) -> Trainer:
        model = build_mlp(arch, 4, [8, 6], [1, 1])
        great = W.build("great", 2, feature_dim=6)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        return Trainer(model, great, opt, [F.mse_loss] * 2, train_data=(x, y), **kw)

    t = trainer("hard_sharing", progress=False, batch_size=16)  # representation="auto"
    assert t.use_features
    t.fit()
    assert 0.0 <= t.weighting.last_accuracy <= 1.0
    with pytest.raises(ValueError, match="needs the shared representation"):
        trainer("soft_sharing")
    with pytest.raises(ValueError, match="needs the shared representation"):
        trainer("hard_sharing", representation=False)


def test_float64_model_with_the_default_float32_classifier(make_toy):
    # the Trainer moves a weighting to the model's device, not its dtype: the adversarial term
    # multiplied float64 gradients by the float32 classifier ("mat1 and mat2 must have the same
    # dtype"); it now runs and equals the all-float64 method up to float32 rounding
    grads = []
    for dtype in (torch.float32, torch.float64):
        toy = make_toy().double()
        toy.x, toy.y = toy.x.double(), toy.y.double()
        torch.manual_seed(0)
        method = W.build("great", 3, feature_dim=3, hidden=[5]).to(dtype)
        losses, feats = toy.losses()
        method.backward(losses, features=feats)
        grads.append(toy.grads())
        assert all(g.dtype == torch.float64 for g in grads[-1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
