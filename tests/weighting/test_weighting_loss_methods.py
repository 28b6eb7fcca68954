"""Known answers for the loss-weighting methods: random, uncertainty, DWA, GradNorm, FAMO."""

import math

import pytest
import torch

import mtrl.weighting as W


def const_losses(*values: float) -> torch.Tensor:
    """Losses (T,) attached to a dummy parameter so that backward works."""
    p = torch.zeros((), requires_grad=True)
    return torch.tensor(values) + 0 * p


def test_equal_weights_and_grads(toy):
    losses, _ = toy.losses()
    w = W.build("equal", 3).backward(losses)
    assert torch.equal(w, torch.ones(3))
    ref = toy.grads()
    toy.zero_grad()
    toy.losses()[0].sum().backward()
    assert all(torch.allclose(a, b) for a, b in zip(ref, toy.grads(), strict=True))


def test_random_weights_softmax_of_normal_seeded():
    a, b = W.RandomWeighting(4, seed=7), W.RandomWeighting(4, seed=7)
    wa = a.backward(const_losses(1, 2, 3, 4))
    wb = b.backward(const_losses(1, 2, 3, 4))
    assert torch.equal(wa, wb)
    assert torch.isclose(wa.sum(), torch.tensor(1.0)) and (wa > 0).all()
    z = torch.randn(4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(wa, torch.softmax(z, 0).float())
    assert not torch.equal(wa, a.backward(const_losses(1, 2, 3, 4)))  # fresh draw each step


def test_uncertainty_optimum_is_inverse_loss():
    fixed = torch.tensor([0.5, 2.0, 4.0])
    method = W.Uncertainty(3)
    opt = torch.optim.Adam(method.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        method.backward(fixed.clone())
        opt.step()
    w = method.backward(fixed.clone())
    # d/ds (0.5 e^-s L + 0.5 s) = 0  ->  e^s = L = sigma^2, weight 0.5 e^-s = 1 / (2 L)
    assert torch.allclose(w, 1 / (2 * fixed), rtol=1e-3)
    assert torch.allclose(method.log_vars.exp(), fixed, rtol=1e-3)


def test_uncertainty_total_loss_by_hand():
    method = W.Uncertainty(2, init_log_var=math.log(2.0))
    total, w = method.combine(torch.tensor([1.0, 3.0]))
    assert torch.allclose(w, torch.tensor([0.25, 0.25]))
    assert torch.isclose(total, torch.tensor(0.25 * 4 + math.log(2.0)))
    # Kendall et al. 2018, Eq. 10: a classification task weighs exp(-s) L, not 0.5 exp(-s) L
    method = W.build("uncertainty", 2, init_log_var=math.log(2.0), classification=[1])
    total, w = method.combine(torch.tensor([1.0, 3.0]))
    assert torch.allclose(w, torch.tensor([0.25, 0.5]))
    assert torch.isclose(total, torch.tensor(0.25 + 1.5 + math.log(2.0)))
    assert "scale" not in method.state_dict()  # older checkpoints still load
    with pytest.raises(ValueError, match="classification index 2"):
        W.Uncertainty(2, classification=[2])
    # the optimum weighs both forms by 1 / (2 L): exp(s) = 2 c L
    fixed = torch.tensor([0.5, 2.0])
    opt = torch.optim.Adam(method.parameters(), lr=0.05)
    for _ in range(600):
        opt.zero_grad()
        method.backward(fixed.clone())
        opt.step()
    assert torch.allclose(method.backward(fixed.clone()), 1 / (2 * fixed), rtol=1e-3)


def test_dwa_by_hand():
    method = W.DWA(2, temp=2.0)
    assert torch.equal(method.backward(const_losses(1, 2)), torch.ones(2))  # epoch 0
    method.backward(const_losses(3, 4))
    method.epoch_end()  # Lbar(0) = (2, 3)
    assert torch.equal(method.backward(const_losses(1, 3)), torch.ones(2))  # epoch 1
    method.epoch_end()  # Lbar(1) = (1, 3)
    w = method.backward(const_losses(5, 5))  # epoch 2: r = (1/2, 3/3)
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert torch.allclose(w, torch.tensor([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)]))


def test_dwa_and_gradnorm_steps_read_nothing_from_the_device(make_toy, device_traffic, monkeypatch):
    # int(self.epochs) (DWA, each step) and bool(self.initialized) (GradNorm) in a branch were a
    # CUDA sync every step. GradNorm's overflow-safe norms read them on the CPU only (free
    # there): as on a GPU, they are not read
    import mtrl.weighting.numerics as numerics

    monkeypatch.setattr(numerics, "_reads_are_free", lambda x: False)
    dwa, gradnorm = W.DWA(2), W.build("gradnorm", 3, optimizer="sgd")
    reads = 0
    for epoch in range(3):
        with device_traffic() as traffic:
            dwa.backward(const_losses(1 + epoch, 2))
            toy = make_toy()
            gradnorm.backward(toy.losses()[0], toy.shared())
            w = dwa.backward(const_losses(3, 4))
        reads += traffic.total_reads
        assert torch.equal(w, torch.ones(2)) == (epoch < 2)
        dwa.epoch_end()  # the caller's, once an epoch
    assert reads == 0
    torch.testing.assert_close(gradnorm.initial_losses, make_toy().losses()[0].detach())


def test_random_weights_go_to_the_device_without_waiting_for_it(device_traffic):
    method = W.build("random", 3, seed=0)
    losses = torch.ones(3, device="meta", requires_grad=True)  # meta stands in for the GPU
    with device_traffic() as traffic:
        _, w = method.combine(losses)
    assert traffic.blocking_copies == 0 and w.device.type == "meta"
    cpu = W.build("random", 3, seed=0).combine(torch.ones(3))[1]  # drawn on the CPU as before
    torch.testing.assert_close(
        cpu,
        torch.softmax(
            torch.randn(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), 0
        ).float(),
    )


def test_dwa_weights_follow_every_change_of_its_state():
    # combine reuses the epoch's weights; a loaded state, an edit of the buffers, a move to
    # another dtype and another losses dtype must each give the weights of the state they leave
    trained = W.DWA(2, steps_per_epoch=1)
    for losses in [(2, 3), (1, 3)]:
        trained.backward(const_losses(*losses))
    e1, e2 = math.exp(0.5 / 2), math.exp(1.0 / 2)  # r = (1/2, 3/3), as test_dwa_by_hand
    expected = torch.tensor([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)])
    method = W.DWA(2)  # epochs end when the caller says: one epoch's weights serve many steps
    assert torch.equal(method.backward(const_losses(5, 5)), torch.ones(2))  # cached: epoch 0
    method.load_state_dict(trained.state_dict())
    torch.testing.assert_close(method.backward(const_losses(5, 5)), expected)
    with torch.no_grad():
        method.history.copy_(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))  # r = (1, 1)
        method.epochs.fill_(2)
    w = method.combine(torch.ones(2))[1]
    assert torch.equal(w, torch.ones(2))
    w.mul_(7.0)  # the caller's copy: the next step's weights are not changed by it
    assert torch.equal(method.combine(torch.ones(2))[1], torch.ones(2))
    method.load_state_dict(trained.state_dict())
    assert method.combine(torch.ones(2, dtype=torch.float64))[1].dtype == torch.float64
    fresh = W.DWA(2)
    assert torch.equal(fresh.combine(torch.ones(2))[1], torch.ones(2))
    # new buffers, not edits (their version counters match the cached ones: both 0)
    fresh.history = torch.tensor([[2.0, 3.0], [1.0, 3.0]], dtype=torch.float64)
    fresh.epochs = torch.tensor(2)
    torch.testing.assert_close(fresh.combine(torch.ones(2))[1], expected)


def test_dwa_steps_per_epoch():
    method = W.DWA(2, steps_per_epoch=2)
    for losses in [(1, 2), (3, 4), (1, 3), (1, 3)]:
        assert torch.equal(method.backward(const_losses(*losses)), torch.ones(2))
    assert int(method.epochs) == 2
    assert not torch.equal(method.backward(const_losses(1, 1)), torch.ones(2))


def test_dwa_zero_loss_epochs_stay_finite():
    """Eq. 7 divides by last epoch's loss: a task at zero loss must not make the weights NaN."""
    method = W.DWA(2, steps_per_epoch=1)
    for _ in range(2):
        method.backward(const_losses(0, 1))
    # Lbar = (0, 1) twice: 0/0 counts as unchanged, so r = (1, 1) and the weights stay equal
    assert torch.equal(method.backward(const_losses(2, 1)), torch.ones(2))
    # Lbar(e-2) = (0, 1), Lbar(e-1) = (2, 1): task 0 rose from zero and takes all the weight
    assert torch.allclose(method.backward(const_losses(1, 1)), torch.tensor([2.0, 0.0]))


def _gradnorm_losses(theta: torch.Tensor, values: tuple[float, float]) -> torch.Tensor:
    # L_i = v_i + theta . e_i: value v_i at theta = 0, gradient norm 1 for both tasks
    return torch.stack([values[0] + theta[0], values[1] + theta[1]])


def test_gradnorm_moves_weight_to_slower_task():
    theta = torch.zeros(2, requires_grad=True)
    method = W.GradNorm(2, alpha=1.5, lr=0.05)
    w0 = method.backward(_gradnorm_losses(theta, (1.0, 1.0)), [theta])  # L(0) = (1, 1)
    assert torch.equal(w0, torch.ones(2))
    assert torch.allclose(theta.grad, torch.ones(2))  # model gradient with w = 1
    for _ in range(5):  # task 0 trained faster (loss halved), task 1 did not move
        method.backward(_gradnorm_losses(theta, (0.5, 1.0)), [theta])
        assert torch.isclose(method.task_weights.sum(), torch.tensor(2.0))
    w = method.task_weights.detach()
    assert w[1] > 1.0 > w[0]
    assert method.task_weights.grad is None  # internal optimiser leaves no .grad behind


def test_gradnorm_last_shared_layer_and_features(toy):
    method = W.GradNorm(3, last_shared_layer=toy.trunk[0].weight)
    losses, _ = toy.losses()
    method.backward(losses, toy.shared())
    assert torch.isclose(method.task_weights.sum(), torch.tensor(3.0))
    losses, feats = toy.losses()
    norms = torch.stack(
        [torch.autograd.grad(losses[i], feats, retain_graph=True)[0].norm() for i in range(3)]
    )
    method = W.GradNorm(3, optimizer="sgd", lr=0.01)
    method.backward(losses, features=feats)
    assert all(p.grad is not None for p in toy.parameters())
    # first step, r_i = 1: target mean(G); dL_grad/dw_i = sign(G_i - mean G) G_i at w = 1
    w = 1 - 0.01 * torch.sign(norms - norms.mean()) * norms
    torch.testing.assert_close(method.task_weights.detach(), 3 * w / w.sum())
    assert not torch.allclose(method.task_weights.detach(), torch.ones(3))


def test_gradnorm_default_layer_is_the_last_shared_weight_not_its_bias(make_toy):
    """The paper's W is the last shared layer's weight matrix; shared_params end with its bias."""

    def weights_after(layer) -> torch.Tensor:
        toy = make_toy()
        kw = {} if layer is None else {"last_shared_layer": layer(toy)}
        method = W.GradNorm(3, optimizer="sgd", lr=0.1, **kw)
        for _ in range(2):
            method.backward(toy.losses()[0], toy.shared())
        return method.task_weights.detach()

    default = weights_after(None)
    assert torch.equal(default, weights_after(lambda toy: toy.trunk[0].weight))
    assert not torch.allclose(default, weights_after(lambda toy: toy.trunk[0].bias))


def test_famo_weights_and_logit_update_by_hand():
    method = W.FAMO(2, lr=0.025, gamma=1e-3)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    losses = x**2  # (1, 4)
    w = method.backward(losses)
    # z = (.5, .5): gradient weights z_i / L_i normalised = (1, 1/4) / 1.25
    assert torch.allclose(w, torch.tensor([0.8, 0.2]))
    assert torch.allclose(x.grad, w * 2 * x.detach())  # sum_i w_i dL_i/dx
    method.update(torch.tensor([0.5, 4.0]))  # task 0 halved, task 1 unchanged
    delta = torch.tensor([math.log(2.0), 0.0])
    grad = 0.5 * (delta - 0.5 * delta.sum())
    assert torch.allclose(method.logits.detach(), -0.025 * grad)
    z = torch.softmax(method.logits.detach(), 0)
    assert z[1] > z[0]  # the lagging task gains weight
    with pytest.raises(RuntimeError):
        method.update(torch.tensor([0.5, 4.0]))


def test_famo_two_loss_toy_balances():
    # two quadratics with very different scales; FAMO keeps both decreasing
    x = torch.tensor([3.0, 3.0], requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1)
    method = W.FAMO(2)

    def losses():
        return torch.stack([100.0 * x[0] ** 2, x[1] ** 2])

    start = losses().detach()
    for _ in range(100):
        opt.zero_grad()
        method.backward(losses())
        opt.step()
        with torch.no_grad():
            method.update(losses())
    end = losses().detach()
    assert (end < 1e-2 * start).all()


def test_famo_rejects_losses_below_bound():
    with pytest.raises(ValueError, match="min_losses"):
        W.FAMO(2).backward(const_losses(1.0, -0.5))
    w = W.FAMO(2, min_losses=[-1.0, -1.0]).backward(const_losses(1.0, -0.5))
    assert torch.isclose(w.sum(), torch.tensor(1.0))


def test_famo_min_losses_of_the_wrong_length_is_a_value_error():
    # used to be torch's RuntimeError from reshape: a traceback from train.py
    with pytest.raises(ValueError, match=r"one bound per task \(2\), got 1"):
        W.build("famo", 2, min_losses=[1.0])


def test_famo_sgd_update_matches_torch_sgd_exactly():
    # the internal SGD step skips Optimizer.step's overhead; it must be torch's update itself
    method = W.FAMO(3, lr=0.1, gamma=0.05)
    ref = torch.nn.Parameter(torch.zeros(3))
    ref_opt = torch.optim.SGD([ref], lr=0.1, weight_decay=0.05)
    for before, after in [((1.0, 2.0, 3.0), (0.5, 2.5, 2.0)), ((0.5, 2.5, 2.0), (0.4, 1.0, 2.2))]:
        method.backward(torch.tensor(before, requires_grad=True))
        method.update(torch.tensor(after))
        z = torch.softmax(ref.detach(), 0)
        delta = (torch.tensor(before) / torch.tensor(after)).log()
        ref.grad = z * (delta - (z * delta).sum())
        ref_opt.step()
        assert torch.equal(method.logits.detach(), ref.detach())
    assert method.logits.grad is None


def test_famo_combine_gradient_is_the_papers():
    # backpropagating sum_i w_i L_i must give the gradient of sum_i z_i log D_i / sum_j z_j / D_j
    method = W.FAMO(3, min_losses=[0.5, 0.0, -1.0])
    with torch.no_grad():
        method.logits.copy_(torch.tensor([0.3, -0.2, 0.1]))
    x = torch.tensor([2.0, 1.5, 0.7], requires_grad=True)
    method.combine(x**2)[0].backward()
    y = x.detach().clone().requires_grad_()
    z = torch.softmax(method.logits.detach(), 0)
    b = torch.tensor([0.5, 0.0, -1.0])
    shifted = y**2 - b + method.c
    ((z * shifted.log()).sum() / (z / shifted.detach()).sum()).backward()
    assert torch.allclose(x.grad, y.grad)


def test_famo_update_rejects_new_losses_below_bound():
    method = W.FAMO(2)
    method.backward(const_losses(1.0, 2.0))
    with pytest.raises(ValueError, match="min_losses"):
        method.update(torch.tensor([0.5, -1.0]))


def test_random_backward_writes_the_weighted_sum_gradient():
    # L_i = c_i x_i: dL/dx_i = w_i c_i, with the weights the method returns
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    c = torch.tensor([2.0, 3.0, 4.0])
    w = W.RandomWeighting(3, seed=5).backward(c * x)
    assert not torch.allclose(w, torch.ones(3))
    assert torch.allclose(x.grad, w * c)


def test_gradnorm_steps_by_hand():
    # L_i = v_i + s_i theta_i at theta = 0: |dL_i/dtheta| = s_i = (1, 2); SGD lr 0.1, alpha 1.5.
    # dL_grad/dw_i = sign(w_i s_i - target_i) s_i (L1 objective), then renormalise to sum 2.
    s = torch.tensor([1.0, 2.0])
    theta = torch.zeros(2, requires_grad=True)
    method = W.GradNorm(2, alpha=1.5, lr=0.1, optimizer="sgd")
    with torch.no_grad():
        method.task_weights.copy_(torch.tensor([1.5, 0.5]))
    # step 1, L(0) = (1, 1) so r = (1, 1): G = w s = (1.5, 1.0), target = mean(G) = 1.25
    w = method.backward(torch.tensor([1.0, 1.0]) + s * theta, [theta])
    assert torch.allclose(w, torch.tensor([1.5, 0.5]))
    assert torch.allclose(theta.grad, torch.tensor([1.5, 1.0]))  # d(sum w_i L_i)/dtheta
    w1 = torch.tensor([1.4, 0.7]) * 2 / 2.1  # w - 0.1 (1, -2)
    assert torch.allclose(method.task_weights.detach(), w1)
    # step 2, L = (0.2, 0.8): L/L(0) = (0.2, 0.8), r = (0.4, 1.6); G = w1 s = (4/3, 4/3),
    # targets 4/3 r^1.5 = (0.34, 2.70): task 0 above its target, task 1 below
    theta.grad = None
    method.backward(torch.tensor([0.2, 0.8]) + s * theta, [theta])
    assert torch.allclose(theta.grad, w1 * s)
    w2 = (w1 + torch.tensor([-0.1, 0.2])) * 2 / 2.1
    assert torch.allclose(method.task_weights.detach(), w2)


@pytest.mark.parametrize("temp", [0.0, -2.0])
def test_dwa_temperature_that_is_not_positive_is_refused(temp):
    # it ran: temp = 0 divides by zero, a negative one favours the task improving fastest
    with pytest.raises(ValueError, match=rf"temp must be > 0, got {temp}"):
        W.build("dwa", 2, temp=temp)


def test_gradnorm_weights_stay_finite_with_huge_float32_losses(make_toy):
    # |dL_i/dW| of losses ~1e30 overflowed float32's .norm() (inf - inf in the target): w became
    # NaN for good while the step's own gradients were finite (no caller could see it). The norms
    # themselves are exact now (scaled by powers of two).
    for optimizer in ("adam", "sgd"):
        for scale in (1e30, 1e20, 1e-30):
            toy = make_toy()
            method = W.GradNorm(3, lr=0.05, optimizer=optimizer)
            for _ in range(3):
                toy.zero_grad()
                method.backward(toy.losses()[0] * scale, toy.shared())
                assert torch.isfinite(method.task_weights).all(), (optimizer, scale)
                assert torch.isclose(method.task_weights.sum(), torch.tensor(3.0))
    from mtrl.weighting.numerics import row_norms

    toy = make_toy()
    grads = W.task_gradients(toy.losses()[0], toy.shared()[:1])
    for scale in (1e30, 1e-30):
        exact = (grads.double() * scale).norm(dim=1).float()
        torch.testing.assert_close(row_norms(grads * scale), exact, rtol=1e-6, atol=0)
    assert torch.equal(row_norms(grads), grads.norm(dim=1))  # the same values where no overflow
    # the scaled path (always taken on a GPU) gives the plain norms' values too
    import mtrl.weighting.numerics as numerics

    base_free = numerics._reads_are_free
    try:
        numerics._reads_are_free = lambda x: False
        assert torch.equal(row_norms(grads), grads.norm(dim=1))
    finally:
        numerics._reads_are_free = base_free


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_famo_update_with_a_non_finite_loss_keeps_the_logits_finite(optimizer, bad):
    # The Trainer's same-batch update runs after its finite check: a step that overflowed a loss
    # gave delta = log(D / inf) = -inf and NaN logits from then on
    method = W.FAMO(2, optimizer=optimizer)
    method.backward(const_losses(1.0, 2.0))
    method.update(torch.tensor([0.5, bad]))
    assert torch.equal(method.logits.detach(), torch.zeros(2))
    w = method.backward(const_losses(1.0, 2.0))
    assert torch.isfinite(w).all()
    method.update(torch.tensor([0.5, 2.0]))  # a measurable step still moves the logits
    z = torch.softmax(method.logits.detach(), 0)
    assert z[1] > z[0]


def test_internal_optimiser_state_is_copied_out_and_in_not_aliased(make_toy):
    # Adam updates its moments in place: a state_dict taken (or loaded) earlier must not change
    # when the method steps again, or a kept snapshot / checkpoint would drift with training
    toy = make_toy()
    gradnorm = W.build("gradnorm", 3, optimizer="adam")
    gradnorm.backward(toy.losses()[0], toy.shared())
    saved = gradnorm.state_dict()
    moments = saved["_extra_state"]["optimizer"]["state"][0]["exp_avg"].clone()
    toy.zero_grad()
    gradnorm.backward(toy.losses()[0], toy.shared())
    live = gradnorm._opt.state_dict()["state"][0]["exp_avg"]
    assert not torch.equal(live, moments)  # the second step did move the moments
    assert torch.equal(saved["_extra_state"]["optimizer"]["state"][0]["exp_avg"], moments)
    other = W.build("gradnorm", 3, optimizer="adam")
    other.load_state_dict(saved)
    toy.zero_grad()
    other.backward(toy.losses()[0], toy.shared())
    assert torch.equal(saved["_extra_state"]["optimizer"]["state"][0]["exp_avg"], moments)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_gradnorm_steps_by_hand_at_extreme_float32_scales(scale):
    # test_gradnorm_steps_by_hand's first step with every gradient scaled by 1e30 (whose
    # float32 .norm() overflowed to inf: NaN target, no step) or 1e-30 (squares underflowing
    # to a zero norm: no step), and the learning rate by its inverse: the same weights
    s = torch.tensor([1.0, 2.0]) * scale
    theta = torch.zeros(2, requires_grad=True)
    method = W.GradNorm(2, alpha=1.5, lr=0.1 / scale, optimizer="sgd")
    with torch.no_grad():
        method.task_weights.copy_(torch.tensor([1.5, 0.5]))
    method.backward(torch.tensor([1.0, 1.0]) + s * theta, [theta])
    w1 = torch.tensor([1.4, 0.7]) * 2 / 2.1
    torch.testing.assert_close(method.task_weights.detach(), w1)


def test_gradnorm_skips_a_weight_update_without_a_finite_gradient():
    # |dL_0/dW| = |(3e38, 3e38)| is beyond float32's range (even computed exactly): w_0 G_0 and
    # the update's gradient are inf; that update steps on zeros instead of making w NaN for good
    theta = torch.zeros(2, requires_grad=True)
    for optimizer in ("sgd", "adam"):
        method = W.GradNorm(2, lr=0.1, optimizer=optimizer)
        for _ in range(2):
            theta.grad = None
            losses = [1.0 + torch.tensor([3e38, 3e38]) @ theta, 1.0 + theta.sum()]
            w = method.backward(losses, [theta])
            assert torch.equal(w, torch.ones(2)), optimizer
        assert torch.equal(method.task_weights.detach(), torch.ones(2)), optimizer


def test_gradnorm_layer_is_the_given_or_adopted_weight():
    given, adopted = torch.zeros(2, 2, requires_grad=True), torch.ones(2, 2, requires_grad=True)
    method = W.GradNorm(2)
    assert method.layer is None  # until a layer is given or adopted
    method.adopt_layer([adopted])
    assert method.layer == [adopted]
    explicit = W.GradNorm(2, last_shared_layer=given)
    explicit.adopt_layer([adopted])  # a given layer wins
    assert explicit.layer == [given]
