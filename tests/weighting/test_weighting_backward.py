"""backward(): gradient write-back, representation mode, accumulation, checkpoints, reversal."""

import math

import pytest
import torch

import mtrl.weighting as W

GRADIENT_METHODS = ["pcgrad", "mgda", "cagrad", "imtl_g", "nash_mtl", "upgrad"]


def plain_sum_grads(make_toy):
    ref = make_toy()
    ref.losses()[0].sum().backward()
    return ref


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_parameter_mode_writes_aggregate_and_head_grads(make_toy, name):
    toy, ref = make_toy(), plain_sum_grads(make_toy)
    method = W.build(name, 3)
    losses, _ = toy.losses()
    grads = W.task_gradients(losses, toy.shared())
    w = method.backward(losses, toy.shared())
    expected = w.to(grads) @ grads
    got = torch.cat([p.grad.reshape(-1) for p in toy.shared()])
    assert torch.allclose(got, expected, atol=1e-6)
    for p, q in zip(toy.task(), ref.task(), strict=True):  # heads: their own task's gradient
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_representation_mode_runs_and_backprops_through_trunk(make_toy, name):
    toy, ref = make_toy(), plain_sum_grads(make_toy)
    losses, feats = toy.losses()
    fgrads = W.task_gradients(losses, [feats])  # (T, B*D)
    w = W.build(name, 3).backward(losses, features=feats)
    assert w.shape == (3,) and torch.isfinite(w).all()
    direction = (w.to(fgrads) @ fgrads).view_as(feats)
    # the trunk received exactly d(features)/d(theta)^T direction
    ref2 = make_toy()
    _, f2 = ref2.losses()
    f2.backward(direction)
    for p, q in zip(toy.shared(), ref2.shared(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    for p, q in zip(toy.task(), ref.task(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_representation_mode_equals_parameter_mode_for_mean(make_toy):
    # equal weighting of gradients is linear: aggregating at the features or at the parameters
    # gives the same update (CAGrad with c = 0 is the mean gradient).
    a, b, c = make_toy(), make_toy(), make_toy()
    W.build("cagrad", 3, c=0.0).backward(a.losses()[0], a.shared())
    losses, feats = b.losses()
    W.build("cagrad", 3, c=0.0).backward(losses, features=feats)
    for pa, pb in zip(a.shared(), b.shared(), strict=True):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6)
    losses, feats = c.losses()
    W.build("equal", 3).backward(losses, features=feats)
    ref = plain_sum_grads(make_toy)
    for pc, pr in zip(c.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(pc.grad, pr.grad)
    for pa, pc in zip(a.shared(), c.shared(), strict=True):  # sum = 3 * mean
        assert torch.allclose(3 * pa.grad, pc.grad, atol=1e-6)


def test_explicit_task_params_and_accumulation(make_toy):
    toy = make_toy()
    losses, _ = toy.losses()
    method = W.build("mgda", 3)
    method.backward(losses, toy.shared(), task_params=toy.task()[:2])  # only head 0
    assert toy.task()[2].grad is None
    first = toy.grads()
    losses, _ = toy.losses()
    method.backward(losses, toy.shared(), task_params=toy.task()[:2])
    for g1, g2 in zip(first[:4], toy.grads()[:4], strict=True):  # trunk + head 0 accumulate
        assert torch.allclose(2 * g1, g2, atol=1e-6)


def test_gradient_methods_need_shared_params(make_toy):
    with pytest.raises(ValueError, match="shared_params or features"):
        W.build("pcgrad", 3).backward(make_toy().losses()[0])


def test_grad_reverse_function():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = W.grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.6, -1.5]))


@pytest.mark.parametrize("mode", ["params", "features"])
def test_gradient_reversal_weighting(make_toy, mode):
    toy = make_toy()
    losses, feats = toy.losses()
    method = W.build("gradient_reversal", 3, adversarial=[2], lambda_=0.5)
    if mode == "params":
        w = method.backward(losses, toy.shared())
    else:
        w = method.backward(losses, features=feats)
    assert torch.allclose(w, torch.tensor([1.0, 1.0, -0.5]))
    ref = make_toy()
    rl, _ = ref.losses()
    (rl[0] + rl[1] - 0.5 * rl[2]).backward(inputs=ref.shared())
    for p, q in zip(toy.shared(), ref.shared(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    plain = plain_sum_grads(make_toy)
    for p, q in zip(toy.task(), plain.task(), strict=True):  # adversary head still minimises
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


def test_gradient_reversal_reads_lambda_and_the_adversaries_in_one_host_read(
    make_toy, device_traffic
):
    # float(lambda_), nonzero() and int() of each adversary were one CUDA sync each
    toy = make_toy()
    losses, _ = toy.losses()
    method = W.build("gradient_reversal", 3, adversarial=[0, 2], lambda_=0.5)
    with device_traffic() as traffic:
        w = method.backward(list(losses.unbind()), toy.shared())
    assert traffic.total_reads == 1
    assert torch.equal(w, torch.tensor([-0.5, 1.0, -0.5]))


@pytest.mark.parametrize("mode", ["params", "features"])
@pytest.mark.parametrize(
    ("adversarial", "lambda_", "head_passes"),
    [([2], 0.5, [1, 1, 2]), ([], 1.0, [1, 1, 1]), ([1], -1.0, [1, 1, 1])],
)
def test_gradient_reversal_costs_one_backward_plus_the_adversaries_heads(
    make_toy, mode, adversarial, lambda_, head_passes
):
    # the trunk and every normal head are backpropagated once, as with equal weighting; only an
    # adversary's head is visited again, to turn its -lambda gradient into its own (none when
    # lambda = -1 makes -lambda already 1)
    toy = make_toy()
    passes = [0, 0, 0]

    def count(i):
        def hook(_module, _inputs, out):  # returns None: the output stays as it is
            out.register_hook(lambda g: passes.__setitem__(i, passes[i] + 1))

        return hook

    for i, head in enumerate(toy.heads):
        head.register_forward_hook(count(i))
    feats = toy.trunk(toy.x)
    trunk = []
    feats.register_hook(trunk.append)
    # one scalar per task (a stacked (T,) tensor would reach every head through its stack)
    losses = [((h(feats) - y) ** 2).mean() for h, y in zip(toy.heads, toy.y, strict=True)]
    method = W.build("gradient_reversal", 3, adversarial=adversarial, lambda_=lambda_)
    if mode == "params":
        method.backward(losses, toy.shared())
    else:
        method.backward(losses, features=feats)
    assert passes == head_passes and len(trunk) == 1
    ref = make_toy()
    rl, _ = ref.losses()
    w = torch.tensor([-lambda_ if i in adversarial else 1.0 for i in range(3)])
    (w * rl).sum().backward(inputs=ref.shared())
    for p, q in zip(toy.shared(), ref.shared(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    plain = plain_sum_grads(make_toy)
    for p, q in zip(toy.task(), plain.task(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)


# --- checkpoints ----------------------------------------------------------------------------------

CONFIGS = {
    "equal": {},
    "random": {"seed": 1},
    "uncertainty": {},
    "dwa": {"steps_per_epoch": 1},
    "gradnorm": {},
    "pcgrad": {"seed": 1},
    "mgda": {"normalization": "loss+"},
    "cagrad": {},
    "imtl_g": {},
    "nash_mtl": {},
    "famo": {"optimizer": "adam"},
    "gradient_reversal": {"adversarial": [1]},
    "upgrad": {},
    "great": {"feature_dim": 3, "lambda_": 0.5},
}


def _features(method, feats) -> dict:
    """GREAT classifies gradients w.r.t. the representation: it needs features=."""
    return {"features": feats} if isinstance(method, W.GREAT) else {}


def _step(method, toy):
    toy.zero_grad()
    losses, feats = toy.losses()
    w = method.backward(losses, toy.shared(), **_features(method, feats))
    if isinstance(method, W.FAMO):
        with torch.no_grad():
            method.update(toy.losses()[0] * 0.9)
    if isinstance(method, W.Uncertainty):
        with torch.no_grad():
            method.log_vars -= 0.1 * method.log_vars.grad
            method.log_vars.grad = None
    return w, toy.grads()


def test_all_registered_methods_have_a_checkpoint_config():
    assert set(CONFIGS) == set(W.names())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trip(make_toy, name):
    toy = make_toy()
    first = W.build(name, 3, **CONFIGS[name])
    for _ in range(4):
        _step(first, toy)
    state = first.state_dict()
    kwargs = dict(CONFIGS[name])
    if "seed" in kwargs:
        kwargs["seed"] = 99  # restored from the checkpoint, not from the constructor
    second = W.build(name, 3, **kwargs)
    second.load_state_dict(state)
    for _ in range(2):
        w1, g1 = _step(first, toy)
        w2, g2 = _step(second, toy)
        assert torch.allclose(w1, w2)
        assert all(torch.allclose(a, b) for a, b in zip(g1, g2, strict=True))


@pytest.mark.parametrize("name", ["pcgrad", "random"])
def test_generator_state_loads_from_a_checkpoint_mapped_to_a_gpu(on_gpu, name):
    # a CPU generator takes CPU states only: set_state(<GPU tensor>) raised "RNG state must be
    # a torch.ByteTensor" (weighting.load_state_dict(torch.load(f, map_location="cuda")))
    first = W.build(name, 3, seed=5)
    host = first.state_dict()["_extra_state"]["generator"]
    second = W.build(name, 3, seed=99)
    second.load_state_dict({"_extra_state": {"generator": on_gpu(host)}})
    assert torch.equal(second.generator.get_state(), first.generator.get_state())


@pytest.mark.parametrize("name", [*GRADIENT_METHODS, "gradient_reversal"])
def test_empty_shared_params_means_plain_sum(make_toy, name):
    # e.g. independent networks: the RL agents' shared_parameters() may be empty
    toy, ref = make_toy(), plain_sum_grads(make_toy)
    W.build(name, 3).backward(toy.losses()[0], [])
    for p, q in zip(toy.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad)
    with pytest.raises(ValueError, match="GradNorm needs"):
        W.build("gradnorm", 3).backward(toy.losses()[0], [])


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_non_finite_gradients_reach_grad_as_nan_without_a_solver(make_toy, name):
    # UPGrad's solver used to raise scipy's "must not contain infs or NaNs", MGDA returned NaN
    # weights and Nash-MTL zeros: now every aggregator writes NaN for the caller to check
    toy = make_toy()
    method = W.build(name, 3)
    state = {k: v.clone() for k, v in method.state_dict().items() if isinstance(v, torch.Tensor)}
    losses, _ = toy.losses()
    losses = losses * torch.tensor([1.0, float("nan"), 1.0])
    w = method.backward(losses, toy.shared())
    assert w.shape == (3,) and torch.isnan(w).all()
    assert all(torch.isnan(p.grad).all() for p in toy.shared())
    for k, v in state.items():  # a solver's state did not learn from the bad step
        assert torch.equal(method.state_dict()[k], v), k


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float64_models_and_list_losses(make_toy, name):
    toy = make_toy().double()
    toy.x, toy.y = toy.x.double(), toy.y.double()
    method = W.build(name, 3, **CONFIGS[name]).double()
    losses, feats = toy.losses()
    # a list of scalars works too
    w = method.backward(list(losses.unbind()), toy.shared(), **_features(method, feats))
    assert w.shape == (3,) and torch.isfinite(w).all()
    assert all(p.grad.dtype == torch.float64 for p in toy.parameters())


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_registered_methods_apply_their_pure_functions_direction(make_toy, name):
    # the tests above compare a module only with its own weights; this pins the direction to the
    # pure aggregator, which is checked by hand and against torchjd (test_weighting_aggregators)
    pure = {
        "pcgrad": lambda g: W.pcgrad(g, torch.Generator().manual_seed(0)),  # module seed 0
        "mgda": W.mgda,
        "cagrad": W.cagrad,
        "imtl_g": W.imtl_g,
        "nash_mtl": W.nash_mtl,
        "upgrad": W.upgrad,
    }[name]
    toy = make_toy()
    losses, _ = toy.losses()
    grads = W.task_gradients(losses, toy.shared()).double()
    W.build(name, 3).backward(losses, toy.shared())
    got = torch.cat([p.grad.reshape(-1) for p in toy.shared()]).double()
    expected = pure(grads)
    assert not torch.allclose(expected, grads.mean(0), atol=1e-4)  # the toy's gradients conflict
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("scale", [1e-30, 1e20, 1e30])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_float32_losses_at_extreme_scales_give_the_scaled_direction(make_toy, name, scale):
    # float32 per-task gradients of norm ~1e20 squared to inf in G G^T (NaN in .grad, or scipy's
    # LinAlgError for UPGrad) and ~1e-30 to 0 (zero weights): the step was lost although the
    # losses and gradients were finite. The direction scales as the paper's method does.
    power = 0 if name == "nash_mtl" else 1  # Nash-MTL's update has norm sqrt(T) at any scale
    ref = make_toy()
    W.build(name, 3).backward(ref.losses()[0], ref.shared())
    toy = make_toy()
    w = W.build(name, 3).backward(toy.losses()[0] * scale, toy.shared())
    assert torch.isfinite(w).all()
    for p, q in zip(toy.shared(), ref.shared(), strict=True):
        assert torch.isfinite(p.grad).all()
        torch.testing.assert_close(p.grad / scale**power, q.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_backward_returns_the_weights_in_the_gradients_dtype(make_toy, name):
    # the solvers' weights are float64; backward hands them back in the model's dtype
    toy = make_toy()
    w = W.build(name, 3).backward(toy.losses()[0], toy.shared())
    assert w.dtype == torch.float32 and torch.isfinite(w).all()


def test_backward_combines_a_weight_out_of_float32s_range_on_scaled_rows():
    # g2 is subnormal in float32 (1e-40): PCGrad projects g1 on it with a coefficient ~1e40,
    # inf in float32; the sum is taken on rows scaled by powers of two, in backward as in
    # aggregate: g1' = (0.5, 0.5), g2' = g2 + 1e-40 g1 = (0, 1e-40)
    theta = torch.zeros(2, requires_grad=True)
    g = torch.tensor([[1.0, 0.0], [-1e-40, 1e-40]])
    w = W.PCGrad(2).backward([g[0] @ theta, g[1] @ theta], [theta])
    torch.testing.assert_close(theta.grad, torch.tensor([0.5, 0.5]))
    assert w.dtype == torch.float32 and w[0] == 1.0 and w[1] == math.inf  # as documented


def test_gradient_reversal_with_losses_that_need_no_gradient():
    # constant losses (e.g. an evaluation pass): the trunk weights, and no backward to raise
    theta = torch.zeros(2, requires_grad=True)
    method = W.build("gradient_reversal", 2, adversarial=[1], lambda_=0.5)
    w = method.backward(torch.tensor([1.0, 2.0]), [theta])
    assert torch.equal(w, torch.tensor([1.0, -0.5])) and theta.grad is None


def test_task_gradient_provider_computes_them_inside_only(toy):
    """Inside the context the provider computes task_gradients (its own calls take the usual
    path); outside, and with None, the usual path."""
    from mtrl.weighting.grads import task_gradient_provider, task_gradients

    losses, _ = toy.losses()
    shared = toy.shared()
    ref = task_gradients(losses, shared)
    calls = []

    def doubled(given, inputs):
        calls.append((given, inputs))
        return 2 * task_gradients(given, inputs)  # the usual path, not this provider again

    with task_gradient_provider(doubled):
        torch.testing.assert_close(task_gradients(losses, shared), 2 * ref)
        with task_gradient_provider(None):
            torch.testing.assert_close(task_gradients(losses, shared), ref)
    torch.testing.assert_close(task_gradients(losses, shared), ref)
    assert len(calls) == 1 and calls[0][0] is losses
    assert all(a is b for a, b in zip(calls[0][1], shared, strict=True))
    with task_gradient_provider(doubled):
        W.build("mgda", 3).backward(losses, shared)  # an aggregator asks the provider
    assert len(calls) == 2
