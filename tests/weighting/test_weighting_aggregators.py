"""Known answers for the pure aggregation functions on hand-sized gradient matrices (T, P)."""

import importlib
import itertools
import math

import numpy as np
import pytest
import torch

import mtrl.weighting as W


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def v(*xs):
    return torch.tensor(xs, dtype=torch.float64)


# --- PCGrad (Yu 2020) ---------------------------------------------------------------------------


def test_pcgrad_opposing_by_hand():
    g = t([1.0, 0.0], [-1.0, 1.0])
    # g1.g2 = -1: g1' = g1 - (-1/2) g2 = (0.5, 0.5); g2' = g2 - (-1/1) g1 = (0, 1)
    assert torch.allclose(W.pcgrad(g), torch.tensor([0.5, 1.5], dtype=torch.float64))
    # as coefficients of the original gradients: (1, 0.5) + (1, 1)
    assert torch.allclose(W.pcgrad_weights(g @ g.T), v(2.0, 1.5))


def test_pcgrad_no_change_when_agreeing():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert torch.allclose(W.pcgrad(g), g.sum(0))


def test_pcgrad_seeded_order_is_deterministic():
    g = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    a = W.PCGrad(5, seed=3).aggregate(g)
    b = W.PCGrad(5, seed=3).aggregate(g)
    assert torch.equal(a, b)
    mean = W.PCGrad(5, seed=3, reduction="mean").aggregate(g)
    assert torch.allclose(mean * 5, a)


# --- MGDA (Sener 2018) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("g", "expected"),
    [
        (t([1.0, 0.0], [0.0, 1.0]), [0.5, 0.5]),
        # gamma = (|g2|^2 - g1.g2) / |g1 - g2|^2 = 1/5: point (0.4, 0.8), orthogonal to g1 - g2
        (t([2.0, 0.0], [0.0, 1.0]), [0.4, 0.8]),
        (t([1.0, 0.0], [3.0, 0.0]), [1.0, 0.0]),  # g1 is the hull's min-norm point
    ],
)
def test_mgda_two_tasks_by_hand(g, expected):
    assert torch.allclose(W.mgda(g), torch.tensor(expected, dtype=torch.float64))


def _brute_min_norm(gram: np.ndarray, steps: int = 400) -> float:
    best = np.inf
    for i, j in itertools.product(range(steps + 1), repeat=2):
        if i + j <= steps:
            a = np.array([i, j, steps - i - j]) / steps
            best = min(best, a @ gram @ a)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_mgda_frank_wolfe_matches_closed_form_and_grid(seed):
    gen = torch.Generator().manual_seed(seed)
    g2 = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    k2 = (g2 @ g2.T).numpy()
    gamma = np.clip((k2[1, 1] - k2[0, 1]) / (k2[0, 0] + k2[1, 1] - 2 * k2[0, 1]), 0, 1)
    assert torch.allclose(W.min_norm_weights(g2 @ g2.T), torch.tensor([gamma, 1 - gamma]).double())

    g3 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    w = W.min_norm_weights(g3 @ g3.T)
    assert w.min() >= 0 and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    value = float(w @ g3 @ g3.T @ w)
    grid = _brute_min_norm((g3 @ g3.T).numpy())
    assert value <= grid + 1e-9
    assert value >= grid - 1e-2 * max(grid, 1e-3)


@pytest.mark.parametrize("refine", [True, False])
@pytest.mark.parametrize("seed", range(3))
def test_mgda_frank_wolfe_fallback_reaches_the_min_norm_point(monkeypatch, seed, refine):
    # Wolfe's exact algorithm finishes on every input above, so the Frank-Wolfe loop it falls
    # back on was never run; here it must run (and, without the final corrections, reach the
    # minimum on its own within its duality-gap tolerance)
    mgda = importlib.import_module("mtrl.weighting.mgda")  # the package exports a function mgda
    monkeypatch.setattr(mgda, "_optimal", lambda *args: False)
    if not refine:
        monkeypatch.setattr(mgda, "_refine", lambda k, alpha, max_rounds: alpha.copy())
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    gram = g @ g.T
    w = W.min_norm_weights(gram, max_iter=5000, tol=1e-9)
    assert w.min() >= 0 and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    value, grid = float(w @ gram @ w), _brute_min_norm(gram.numpy())
    scale = float(gram.diagonal().max())
    assert grid - 1e-2 * max(grid, 1e-3) <= value <= grid + 1e-6 * scale
    # the origin inside the hull: g1 + g2 + g3 = 0, the min-norm point 0 at equal weights
    h = t([1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]).double()
    w = W.min_norm_weights(h @ h.T, max_iter=5000, tol=1e-9)
    assert float(w @ h @ h.T @ w) <= 1e-6
    assert torch.allclose(w, torch.full((3,), 1 / 3, dtype=torch.float64), atol=1e-3)


def test_mgda_normalization_applies_weights_to_original_gradients():
    g = t([2.0, 0.0], [0.0, 1.0])
    w = W.MGDA(2, normalization="l2").weights(g)
    assert torch.allclose(w, v(0.5, 0.5))  # unit gradients -> equal weights
    w_loss = W.MGDA(2, normalization="loss").weights(g, v(2.0, 1.0))
    assert torch.allclose(w_loss, v(0.5, 0.5))


# --- CAGrad (Liu 2021) --------------------------------------------------------------------------


def test_cagrad_c0_is_mean():
    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(W.cagrad(g, c=0.0), g.mean(0))


@pytest.mark.parametrize("seed", range(3))
def test_cagrad_maximises_worst_improvement_in_ball(seed):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    c = 0.5
    d = W.cagrad(g, c=c)
    g0 = g.mean(0)
    radius = c * g0.norm()
    assert (d - g0).norm() <= radius * (1 + 1e-6)
    # No point of the ball improves the worst task more (sampled on the sphere and inside).
    u = torch.randn(4000, 5, generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True) * torch.rand(4000, 1, generator=gen, dtype=torch.float64)
    cand = g0 + radius * u
    assert (g @ d).min() >= (cand @ g.T).min(dim=1).values.max() - 1e-6


def test_cagrad_rescale():
    g = torch.randn(3, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose(W.cagrad(g, 0.5, rescale=True) * 1.25, W.cagrad(g, 0.5))


# --- IMTL-G (Liu 2021) --------------------------------------------------------------------------


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_imtl_g_equal_projections(num_tasks):
    g = torch.randn(num_tasks, 8, generator=torch.Generator().manual_seed(num_tasks)).double()
    w = W.imtl_g_weights(g @ g.T)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    d = w @ g
    proj = (g / g.norm(dim=1, keepdim=True)) @ d
    assert torch.allclose(proj, proj[0].expand_as(proj), atol=1e-10)


def test_imtl_g_with_parallel_gradients_takes_the_papers_difference_form():
    # two gradients in one direction make the correlations singular (cond ~1e16), so the
    # closed form's least-squares branch answers; it had never run in a test
    g = t([1.0, 0.0], [2.0, 0.0], [0.0, 1.0])
    w = W.imtl_g_weights(g @ g.T)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    proj = (g / g.norm(dim=1, keepdim=True)) @ (w @ g)
    assert torch.allclose(proj, torch.full((3,), 0.4, dtype=torch.float64), atol=1e-12)
    # by hand: g = (a1 + 2 a2, a3), g.u1 = g.u3 -> a1 + 2 a2 = a3, with a1 = 1 - a2 - a3:
    # 2 a3 - a2 = 1, whose least-squares (minimum-norm) (a2, a3) is (-1, 2) / 5; a1 = 0.8
    assert torch.allclose(w, v(0.8, -0.2, 0.4), atol=1e-12)


# --- Nash-MTL (Navon 2022) ----------------------------------------------------------------------


@pytest.mark.parametrize(("num_tasks", "dim"), [(2, 3), (3, 10), (5, 20), (4, 4)])
def test_nash_kkt(num_tasks, dim):
    g = torch.randn(num_tasks, dim, generator=torch.Generator().manual_seed(dim)).double()
    k = g @ g.T
    alpha = W.nash_weights(k)
    assert (alpha > 0).all()
    assert torch.allclose(alpha * (k @ alpha), torch.ones(num_tasks, dtype=torch.float64))
    assert torch.isclose(W.nash_mtl(g).norm() ** 2, torch.tensor(float(num_tasks)).double())
    # the authors' normalised Gram gives the same direction, scaled by sqrt(|K|_F)
    scaled = W.nash_weights(k, normalize=True)
    assert torch.allclose(scaled, alpha * k.norm().sqrt())


def test_nash_scale_invariance_and_orthogonal_case():
    g = t([2.0, 0.0], [0.0, 0.5])
    # orthogonal: alpha_i^2 |g_i|^2 = 1 -> alpha_i = 1 / |g_i|: d = sum of unit vectors
    assert torch.allclose(W.nash_weights(g @ g.T), v(0.5, 2.0))
    assert torch.allclose(W.nash_mtl(g), v(1.0, 1.0))


def test_nash_solves_the_equation_whatever_the_tasks_gradient_scales():
    # g1 = s (1, 0), g2 = (0.6, 0.8) (unit): with b = s alpha_1, the equations are symmetric in
    # (b, alpha_2), so b = alpha_2 = 1 / sqrt(1 + 0.6). The ridge was relative to the mean squared
    # norm, which swamped the small task (alpha_2 0.816 instead of 1 at norms 1e4 : 1).
    b = 1 / np.sqrt(1.6)
    for s in (1e2, 1e4):
        g = t([s, 0.0], [0.6, 0.8])
        assert torch.allclose(W.nash_weights(g @ g.T), v(b / s, b), rtol=1e-6, atol=0)
    g = t([1e4, 0.0], [0.0, 1.0])  # orthogonal: alpha_i = 1 / |g_i|
    assert torch.allclose(W.nash_weights(g @ g.T), v(1e-4, 1.0), rtol=1e-6, atol=0)


def test_nash_two_tasks_in_closed_form_is_the_newton_solution():
    # C = [[1, c], [c, 1]] (+ ridge): a1 = a2 = 1 / sqrt(1 + ridge + c); Newton's answer too
    nash = importlib.import_module("mtrl.weighting.nash_mtl")
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        g = torch.randn(2, 5, generator=gen, dtype=torch.float64)
        g = g * torch.tensor([[10.0], [0.01]], dtype=torch.float64)  # unequal scales
        k = g @ g.T
        alpha = W.nash_weights(k)
        norms = k.diagonal().sqrt()
        c = float(k[0, 1] / (norms[0] * norms[1]))
        assert torch.allclose(alpha * norms, torch.full((2,), (1 + 1e-8 + c) ** -0.5).double())
        newton = nash._newton(
            (k / torch.outer(norms, norms)).numpy() + 1e-8 * np.eye(2), 100, 1e-12
        )
        assert np.allclose(alpha.numpy() * norms.numpy(), newton, rtol=1e-9, atol=0)


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_nash_on_a_gram_rounded_to_slightly_indefinite_is_the_dependent_case(num_tasks):
    # float32 products round the Gram of dependent gradients (g2 = -g1; g1 + g2 + g3 = 0) to a
    # slightly indefinite one; Newton then diverged and returned where max_iter stopped it
    # (T = 2: 3270, T = 3: 2138 or 1533 by max_iter). With the spectrum shifted to the ridge,
    # the answer is the exactly dependent case's: C a = ridge a, so a_i = 1 / sqrt(ridge).
    cos = -1.0 if num_tasks == 2 else -0.5
    k = torch.full((num_tasks, num_tasks), cos, dtype=torch.float64).fill_diagonal_(1.0)
    rounded = k - 1e-7  # pushes the zero eigenvalue (direction 1, ..., 1) to -T * 1e-7
    assert torch.linalg.eigvalsh(rounded)[0] < 0
    want = torch.full((num_tasks,), 1e4, dtype=torch.float64)
    for gram in (k, rounded):
        for max_iter in (100, 200):
            assert torch.allclose(W.nash_weights(gram, max_iter=max_iter), want, rtol=1e-6)


# --- batched per-task gradients -------------------------------------------------------------------


def test_batched_task_gradients_match_loop(toy):
    losses, _ = toy.losses()
    loop = W.task_gradients(losses, toy.shared())
    batched = W.task_gradients(losses, toy.shared(), batched=True)
    assert loop.shape == (3, sum(p.numel() for p in toy.shared()))
    assert torch.allclose(loop, batched, atol=1e-6)


# --- UPGrad (Quinton and Rey 2024) ----------------------------------------------------------------


def test_upgrad_by_hand():
    g = t([1.0, 0.0], [-1.0, 1.0])
    # dual cone {x: x1 >= 0, x2 >= x1}: proj(g1) = (0.5, 0.5), proj(g2) = (0, 1); mean of the two
    assert torch.allclose(W.upgrad(g), v(0.25, 0.75))


def test_upgrad_is_mean_without_conflict():
    g = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(W.upgrad(g), g.mean(0))


@pytest.mark.parametrize(("seed", "num_tasks", "dim"), [(0, 3, 5), (1, 5, 8), (2, 6, 3)])
def test_upgrad_non_conflicting_and_kkt(seed, num_tasks, dim):
    from mtrl.weighting.upgrad import dual_cone_weights

    g = torch.randn(num_tasks, dim, generator=torch.Generator().manual_seed(seed)).double()
    k = g @ g.T
    assert (g @ W.upgrad(g) >= -1e-9).all()
    vmat = dual_cone_weights(k)
    eye = torch.eye(num_tasks, dtype=torch.float64)
    kv = vmat @ k  # row i: K v_i (K symmetric)
    assert (vmat >= eye - 1e-12).all()  # feasibility v_i >= e_i
    assert (kv >= -1e-9).all()  # dual feasibility
    assert ((vmat - eye) * kv).abs().max() < 1e-8  # complementary slackness


@pytest.mark.parametrize("fn", [W.imtl_g_weights, W.nash_weights])
def test_zero_gradient_task_gets_zero_weight(fn):
    g = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g[1] = 0.0
    w = fn(g @ g.T)
    assert w[1] == 0 and (w[[0, 2]] > 0).all()
    rest = fn(g[[0, 2]] @ g[[0, 2]].T)
    assert torch.allclose(w[[0, 2]], rest)
    assert torch.equal(fn(torch.zeros(3, 3, dtype=torch.float64)), torch.zeros(3).double())


@pytest.mark.parametrize("scale", [1e-4, 1e4])
@pytest.mark.parametrize(
    ("fn", "power"),
    [
        (lambda g: W.pcgrad(g, torch.Generator().manual_seed(0)), 1),
        (W.mgda, 1),
        (W.cagrad, 1),
        (W.imtl_g, 1),
        (W.upgrad, 1),
        (W.nash_mtl, 0),
    ],
)
def test_aggregators_are_scale_equivariant(fn, power, scale):
    # the solvers must not depend on the gradients' magnitude (Nash-MTL's update has norm sqrt(T))
    g = torch.randn(5, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(fn(scale * g), scale**power * fn(g), rtol=1e-4, atol=1e-12)


def test_pcgrad_projects_the_running_gradient_in_a_random_order():
    # g0 = (1, 0), g1 = (-1, 1), g2 = (0, -1). Task 0: g1 first gives (0.5, 0.5), which then
    # conflicts with g2 (dot -0.5) -> (0.5, 0); g2 first (dot 0, no change) then g1 -> (0.5, 0.5).
    # Task 1: (0, 0) in both orders. Task 2: g0 (no conflict) then g1 -> (-0.5, -0.5); g1 first
    # gives (-0.5, -0.5), which conflicts with g0 -> (0, -0.5).
    g = t([1.0, 0.0], [-1.0, 1.0], [0.0, -1.0])
    sums = {tuple(W.pcgrad(g, torch.Generator().manual_seed(s)).tolist()) for s in range(24)}
    assert sums == {(0.0, 0.0), (0.5, 0.0), (0.0, -0.5), (0.5, -0.5)}


def test_mgda_loss_normalization_by_hand():
    # g / L = (1, 0) and (-1, 2): gamma = (5 + 1) / (1 + 5 + 2) = 3/4; the weights are applied to
    # the original gradients
    g = t([2.0, 0.0], [-1.0, 2.0])
    w = W.MGDA(2, normalization="loss").weights(g, v(2.0, 1.0))
    assert torch.allclose(w, v(0.75, 0.25))


def test_mgda_identical_gradients_get_equal_weights():
    g = t([1.0, 2.0], [1.0, 2.0])
    assert torch.allclose(W.min_norm_weights(g @ g.T), v(0.5, 0.5))


@pytest.mark.parametrize(("num_tasks", "dim"), [(3, 10), (5, 20)])
def test_nash_solves_the_equation_to_high_precision(num_tasks, dim):
    # K alpha = 1 / alpha to 1e-6 (the relative ridge of 1e-8 bounds what is reachable)
    gen = torch.Generator().manual_seed(dim)
    g = torch.randn(num_tasks, dim, generator=gen, dtype=torch.float64)
    k = g @ g.T
    alpha = W.nash_weights(k)
    assert (alpha * (k @ alpha) - 1).abs().max() < 1e-6


# --- degenerate inputs: extreme and mixed scales ---------------------------------------------------

PURE = {
    "pcgrad": (lambda g: W.pcgrad(g, torch.Generator().manual_seed(0)), 1),
    "mgda": (W.mgda, 1),
    "cagrad": (W.cagrad, 1),
    "imtl_g": (W.imtl_g, 1),
    "upgrad": (W.upgrad, 1),
    "nash_mtl": (W.nash_mtl, 0),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-30, 1e-20, 1e-10, 1e20, 1e30])
@pytest.mark.parametrize("name", sorted(PURE))
def test_aggregators_at_extreme_scales(name, scale, dtype):
    # float32 squares overflow above ~1e19 and underflow below ~1e-19: the Gram matrix was inf
    # (NaN, zero weights or LinAlgError) or 0; CAGrad (|g_w| > 1e-12) and IMTL-G (squared norms
    # floored at 1e-12) had absolute thresholds that changed the answer under norm ~1e-6
    fn, power = PURE[name]
    g = torch.randn(4, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = (scale * g).to(dtype)
    ref = fn(g.double() / scale)  # the same gradients, unscaled, in float64
    out = fn(g)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.double() / scale**power, ref, rtol=1e-4, atol=0)


def test_nash_and_imtl_g_keep_tasks_whose_gradients_are_1e8_times_smaller():
    # Both are invariant to a task's gradient scale; a task under 1e-6 of the largest norm was
    # taken for a zero gradient and dropped (orthogonal 1e8 : 1 : 1e-8 gave d = (1, 0, 0))
    g = torch.diag(v(1e8, 1.0, 1e-8))
    assert torch.allclose(W.nash_mtl(g), v(1.0, 1.0, 1.0), rtol=1e-6, atol=0)
    # IMTL-G: K alpha = lambda |g|, i.e. alpha ~ 1 / |g_i| here: d = (1, 1, 1) / sum(1 / |g_i|)
    expected = torch.ones(3, dtype=torch.float64) / (1e-8 + 1.0 + 1e8)
    assert torch.allclose(W.imtl_g(g), expected, rtol=1e-12, atol=0)
    # non-orthogonal: the defining equations, per task
    r = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = r * v(1e8, 1.0, 1e-8)[:, None]
    k = g @ g.T
    alpha = W.nash_weights(k)
    assert (alpha * (k @ alpha) - 1).abs().max() < 1e-6
    w = W.imtl_g_weights(k)
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    proj = (g / g.norm(dim=1, keepdim=True)) @ (w @ g)  # equal projections on unit gradients
    assert torch.allclose(proj, proj[0].expand(3), rtol=1e-9, atol=0)


@pytest.mark.parametrize("spread", [1e2, 1e4, 1e8])
def test_mgda_is_a_common_descent_direction_at_mixed_scales(spread):
    # KKT of the min-norm point: g_j . d >= |d|^2 for every task. A tolerance relative to the
    # largest Gram entry accepted g_2 . d = -2e-5 with |d|^2 = 1.5e-9 at norms 1e4 : 1 : 1e-4
    # (task 2's loss increased); the weights then match the exact ones (enumerated supports)
    r = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = r * v(spread, 1.0, 1 / spread)[:, None]
    w = W.min_norm_weights(g @ g.T)
    d = w @ g
    assert w.min() >= 0 and torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert ((g @ d) >= (d @ d) * (1 - 1e-6) - 1e-12 * g.norm(dim=1) * (w @ g.norm(dim=1))).all()


@pytest.mark.parametrize("spread", [1.0, 1e2, 1e3])
def test_cagrad_is_optimal_at_mixed_scales(spread):
    # Weak duality: for d in the ball and any simplex w, min_i g_i . d <= F(w) = g_w . g0 +
    # c |g0| |g_w|; CAGrad's d and its dual w close the gap. The paper's +1e-8 under the square
    # root (of the normalised problem) hid tasks with squared norm under 1e-8 of the mean: at
    # norms 1e2 : 1 : 1e-2 the worst-task improvement was 2% short of the optimum, 39% at 1e3
    c = 0.5
    r = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    g = r * v(spread, 1.0, 1 / spread)[:, None]
    coef = W.cagrad_weights(g @ g.T, c)
    d = coef @ g
    g0 = g.mean(0)
    assert (d - g0).norm() <= c * g0.norm() * (1 + 1e-9)
    dual = coef - 1 / 3  # (c |g0| / |g_w|) w
    w = dual / dual.sum()
    gw = w @ g
    bound = gw @ g0 + c * g0.norm() * gw.norm()
    assert (g @ d).min() >= bound - 1e-5 * abs(float(bound))  # was 2.5% short at 1e2


def test_pcgrad_projects_on_a_subnormal_float32_gradient():
    # g1 = (1, 0), g2 = (-1, 1) e-40 (subnormal in float32): g1 conflicts with g2, so
    # g1' = (0.5, 0.5); g2' = g2 + 1e-40 g1 = (0, 1e-40). The float32 Gram's |g2|^2 underflowed
    # to 0, so the projection was skipped (sum (1, 0)); its coefficient, ~1e40, is out of
    # float32's range, so the sum is taken on rows scaled by powers of two
    g = torch.tensor([[1.0, 0.0], [-1e-40, 1e-40]], dtype=torch.float32)
    expected = torch.tensor([0.5, 0.5], dtype=torch.float32)
    torch.testing.assert_close(W.pcgrad(g, torch.Generator().manual_seed(0)), expected)
    torch.testing.assert_close(W.PCGrad(2).aggregate(g), expected)


def test_combine_takes_host_weights_for_gradients_on_another_device():
    # CAGrad passes its numpy-born (CPU) weights with the gradients, which may be on a GPU (the
    # meta device stands in): the range checks read the host copy, the product runs on the device
    from mtrl.weighting.numerics import combine

    grads = torch.empty(2, 3, device="meta")
    out = combine(torch.tensor([0.5, 0.5], dtype=torch.float64), grads)
    assert out.device.type == "meta" and out.shape == (3,) and out.dtype == torch.float32


def test_gram_matrix_is_exact_where_float32_products_are_subnormal():
    # Squared norms of 1e-34 are normal floats, but a product of entries 1e-21 (1e-42) is
    # subnormal and keeps ~10 bits; the Gram is recomputed on scaled rows below tiny / eps
    from mtrl.weighting.numerics import gram_matrix

    g = torch.tensor([[1e-17, 0.0, 1e-21], [0.0, 1e-17, 1e-21]], dtype=torch.float32)
    exact = g.double() @ g.double().T
    torch.testing.assert_close(gram_matrix(g), exact, rtol=1e-6, atol=0)


def test_combine_keeps_weights_out_of_float32s_range_in_both_directions():
    from mtrl.weighting.numerics import combine

    # a weight under float32's smallest normal on a gradient near its largest: 1e-50 * 1e38
    # flushed to 0 in float32, the term is 1e-12
    big = torch.tensor([[1e38, -2e38]], dtype=torch.float32)
    out = combine(torch.tensor([1e-50], dtype=torch.float64), big)
    torch.testing.assert_close(out, torch.tensor([1e-12, -2e-12]), rtol=1e-6, atol=0)
    # and a huge weight on gradients without entries: an empty direction (amax of nothing)
    empty = combine(torch.tensor([1e40], dtype=torch.float64), torch.zeros(1, 0))
    assert empty.shape == (0,) and empty.dtype == torch.float32


@pytest.mark.parametrize("f", [1.5, 1.3, 0.7])
def test_cagrad_gives_the_mean_where_zero_is_in_the_hull_in_float32(f):
    # g1, -f g1, (f - 1) g1 and g3 orthogonal to g1: the mean is g3 / 4 and g_w* = 0, so d = g0.
    # The float32 Gram's |g_w|^2 is rounding noise there: read from it, or held to the Gram's
    # 1e-12 once recomputed from g_w itself, it gave coefficients of 300 to 3e6 and a wrong d
    g1 = v(0.1, 0.7, 0.3)
    g = torch.stack([g1, -f * g1, v(0.3, 0.0, -0.1), (f - 1) * g1]).float()
    g0 = g.double().mean(0).float()
    torch.testing.assert_close(W.cagrad(g), g0, rtol=1e-6, atol=1e-7)
    weights = W.CAGrad(4).weights(g)
    torch.testing.assert_close(weights, torch.full((4,), 0.25, dtype=torch.float64))


def test_cagrad_at_a_tiny_float32_scale_with_zero_in_the_hull():
    # |g_w| recomputed from g_w (under 3% of the norms) must not underflow: the plain float32
    # norm of a 1e-25-scale g_w is 0 or loses its bits, which changed the direction (scaled by
    # a power of two, the float32 answer is the unit-scale one scaled exactly)
    r = torch.randn(2, 6, generator=torch.Generator().manual_seed(0))
    g = torch.stack([r[0], -r[0], r[1]])
    scale = 2.0**-83  # ~1e-25
    torch.testing.assert_close(W.cagrad(g * scale) / scale, W.cagrad(g), rtol=1e-6, atol=0)


def test_mgda_full_support_in_one_solve_and_a_vertex_outside_it(monkeypatch):
    # orthogonal gradients of norms 1, 2, 4: the min-norm point weights them by 1/|g_i|^2,
    # (16, 4, 1) / 21, all positive: one affine solve, no Wolfe cycles
    mgda = importlib.import_module("mtrl.weighting.mgda")
    calls = []
    refine = mgda._refine
    monkeypatch.setattr(mgda, "_refine", lambda *a, **kw: calls.append(1) or refine(*a, **kw))
    g = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(W.min_norm_weights(g @ g.T), v(16.0, 4.0, 1.0).double() / 21)
    assert calls == []
    # (3, 3) far from the others: on the affine hull of all three the min-norm point (the
    # origin) has weight -1/5 on it, so Wolfe's cycles from the best pair give (0.5, 0.5, 0)
    h = t([1.0, 0.0], [0.0, 1.0], [3.0, 3.0]).double()
    torch.testing.assert_close(W.min_norm_weights(h @ h.T), v(0.5, 0.5, 0.0).double())
    assert calls == [1]


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_mgda_with_every_gradient_zero_gives_finite_simplex_weights(num_tasks):
    # every task solved (or a batch without signal): the line search's 0 / 0 gave NaN weights
    # (T = 2) or a crash in the affine step (T = 3); any simplex point is the min-norm point
    w = W.min_norm_weights(torch.zeros(num_tasks, num_tasks, dtype=torch.float64))
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert torch.isclose(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(W.mgda(torch.zeros(num_tasks, 4)), torch.zeros(4))


def test_mgda_puts_all_weight_on_a_zero_gradient():
    # a zero gradient is the hull's min-norm point (every other point has a positive norm)
    g = t([1.0, 0.0], [0.0, 0.0], [0.0, 1.0])
    assert torch.equal(W.min_norm_weights(g @ g.T), v(0.0, 1.0, 0.0))


def test_mgda_l2_normalization_of_huge_float32_gradients():
    # the normalisers come from the (range-safe) Gram's diagonal: grads.norm() of float32
    # gradients of norm 1e20 overflowed to inf and every weight collapsed
    g = torch.randn(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = g * v(1.0, 2.0, 0.5)[:, None]
    method = W.MGDA(3, normalization="l2")
    ref = method.weights(g)
    torch.testing.assert_close(method.weights((g * 1e20).float()), ref, rtol=1e-5, atol=1e-7)


def test_nash_weights_of_a_non_finite_gram_are_zero():
    # no direction from a Gram with NaN or inf entries (the solver's NaN would reach the
    # caller's weights); an inf norm zeroes the tolerance of the zero-gradient test as well
    for k in (t([1.0, math.nan], [math.nan, 1.0]), t([math.inf, 0.0], [0.0, 1.0])):
        assert torch.equal(W.nash_weights(k), torch.zeros(2, dtype=torch.float64))


def test_all_finite_by_the_sum_and_by_entries():
    """The sum decides when it is finite; NaN and inf entries, and finite entries whose sum
    overflows float32, go to the entrywise test."""
    from mtrl.weighting.numerics import all_finite

    assert all_finite(torch.randn(3, 5)) and all_finite(torch.zeros(0, 4))
    for bad in (math.nan, math.inf, -math.inf):
        g = torch.ones(2, 3)
        g[1, 2] = bad
        assert not all_finite(g)
    big = torch.full((2, 2), 3e38)  # finite, but the sum is inf
    assert not torch.isfinite(big.sum()) and all_finite(big)
    opposite = torch.tensor([math.inf, -math.inf])  # a NaN sum, not finite entries
    assert not all_finite(opposite)
