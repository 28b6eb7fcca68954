"""Cross-check our aggregators against torchjd's on random Jacobians (T, P).

torchjd's CAGrad / NashMTL need cvxpy (+ ecos), UPGrad quadprog + qpsolvers: each is skipped when
its extra is unavailable (all are in ``.[dev]``).
Conventions: torchjd's PCGrad sums the projected gradients (= ours, reduction='sum'); its MGDA is
a plain Frank-Wolfe with a stopping tolerance, so it is compared on the hull-norm it reaches.
"""

import pytest
import torch

import mtrl.weighting as W

agg = pytest.importorskip("torchjd.aggregation")


def jacobian(seed: int, t: int, p: int) -> torch.Tensor:
    return torch.randn(t, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _call_or_skip(make, g):
    try:
        return make()(g)
    except ImportError as err:  # missing solver extras
        pytest.skip(f"torchjd extra unavailable: {err}")


@pytest.mark.parametrize("seed", range(5))
def test_pcgrad_matches_torchjd_two_tasks(seed):
    g = jacobian(seed, 2, 7)  # with two tasks the order is irrelevant
    assert torch.allclose(W.pcgrad(g), agg.PCGrad()(g), atol=1e-10)


@pytest.mark.parametrize(("seed", "t", "p"), [(0, 2, 5), (1, 3, 10), (2, 5, 20), (3, 4, 3)])
def test_imtl_g_matches_torchjd(seed, t, p):
    g = jacobian(seed, t, p)
    if t > p:
        pytest.skip("Gram matrix singular")
    assert torch.allclose(W.imtl_g(g), agg.IMTLG()(g), atol=1e-8)


@pytest.mark.parametrize(("seed", "t", "p"), [(0, 2, 5), (1, 3, 10), (2, 5, 20), (3, 6, 4)])
def test_mgda_matches_torchjd(seed, t, p):
    g = jacobian(seed, t, p)
    ours = W.mgda(g)
    theirs = agg.MGDA(epsilon=1e-12, max_iters=5000)(g)
    # ours is made exact (Wolfe corrections), theirs is plain FW: never worse, and close
    assert ours.norm() <= theirs.norm() + 1e-9
    assert ours.norm() >= theirs.norm() - 1e-2 * theirs.norm()
    if t <= p:  # unique minimiser
        assert torch.allclose(ours, theirs, atol=2e-2)


@pytest.mark.parametrize("seed", range(3))
def test_cagrad_matches_torchjd(seed):
    g = jacobian(seed, 3, 8)
    theirs = _call_or_skip(lambda: agg.CAGrad(c=0.5), g)
    # torchjd builds on the sum of gradients, we on the mean (paper): compare directions.
    ours = W.cagrad(g, 0.5)
    assert torch.allclose(ours / ours.norm(), theirs / theirs.norm(), atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_nash_mtl_matches_torchjd(seed):
    g = jacobian(seed, 3, 8)
    theirs = _call_or_skip(lambda: agg.NashMTL(n_tasks=3), g)
    ours = W.nash_mtl(g)  # torchjd follows the authors' code (normalised Gram, norm clipping)
    assert torch.allclose(ours / ours.norm(), theirs / theirs.norm(), atol=1e-3)


@pytest.mark.parametrize("seed", range(3))
def test_upgrad_matches_torchjd(seed):
    g = jacobian(seed, 4, 6)
    # torchjd's default projector normalises the Gram matrix and adds reg_eps=1e-4 to its
    # diagonal (a slightly different problem); without the regulariser the answers coincide.
    linalg = pytest.importorskip("torchjd.linalg")
    exact = _call_or_skip(
        lambda: agg.UPGrad(projector=linalg.QuadprogProjector(norm_eps=0.0, reg_eps=0.0)), g
    )
    assert torch.allclose(W.upgrad(g), exact, atol=1e-10)
    default = _call_or_skip(agg.UPGrad, g)
    assert torch.allclose(W.upgrad(g), default, atol=2e-3)
