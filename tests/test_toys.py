"""Known behaviours on the built-in toys (the claims of the method papers, at small budgets).

* 2-D toy (CAGrad, Liu et al. 2021; Nash-MTL, Navon et al. 2022): MGDA and Nash-MTL reach a
  Pareto-stationary point from all five standard starting points; equal weighting, under the same
  budget and optimiser as Nash-MTL, stalls on some (here: all) of them.
* GradNorm toy (Chen et al. 2018): GradNorm keeps the tasks' loss ratios L_i(t) / L_i(0) closer
  together than equal weighting.

Optimisers: MGDA's direction shrinks to 0 at the front, so plain gradient descent with a constant
step converges; Nash-MTL's direction always has norm sqrt(T), so it needs a decaying step (Adam,
lr 0.2 -> 1e-3 exponentially, like the papers' Adam runs but shorter). The five points are
optimised together (batched), each with its own direction.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mtrl.weighting as W
from mtrl.architectures import build_mlp
from mtrl.data import STARTING_POINTS, is_pareto_stationary, make_gradnorm_toy, toy_losses
from mtrl.data.toy2d import pareto_stationarity
from mtrl.trainer import Trainer


def descend(aggregate, protocol: str) -> torch.Tensor:
    """Optimise the five starting points (5, 2) at once, each with its own direction
    ``aggregate(G)`` from its per-task gradients G (2 tasks, 2); returns the final points (5, 2)."""
    x = torch.nn.Parameter(STARTING_POINTS.clone().double())
    if protocol == "gd":  # constant-step gradient descent
        steps, opt, sched = 1500, torch.optim.SGD([x], lr=0.5), None
    else:  # "adam": Adam with the step decaying exponentially from 0.2 to 1e-3
        steps = 700
        opt = torch.optim.Adam([x], lr=0.2)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.005 ** (1 / steps))
    for _ in range(steps):
        losses = toy_losses(x)  # (5, 2): the points are independent, so one grad per task
        jac = torch.stack(
            [torch.autograd.grad(losses[:, i].sum(), x, retain_graph=i == 0)[0] for i in (0, 1)],
            dim=1,
        )  # (5, 2 tasks, 2)
        x.grad = torch.stack([aggregate(g) for g in jac])
        opt.step()
        if sched is not None:
            sched.step()
    return x.detach()


def equal(g: torch.Tensor) -> torch.Tensor:
    """Equal weighting's direction: the sum of the task gradients (T, P) -> (P,)."""
    return g.sum(0)


@pytest.fixture
def one_thread():
    """Small MLPs: one intra-op thread is fastest (and robust to a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("method", "protocol"), [("mgda", "gd"), ("nash_mtl", "adam")])
def test_reaches_pareto_front_from_all_starting_points(method, protocol, one_thread):
    aggregate = {"mgda": W.mgda, "nash_mtl": W.nash_mtl}[method]
    for start, x in zip(STARTING_POINTS, descend(aggregate, protocol)):
        assert is_pareto_stationary(x), (method, start.tolist(), x.tolist(), pareto_stationarity(x))
        # on the front itself (x2 near -8.4), not on the numerically flat plateau far up
        assert -9.0 < x[1] < -8.0 and -7.5 < x[0] < 7.5, (method, start.tolist(), x.tolist())


def test_equal_weighting_stalls_under_the_same_budget(one_thread):
    final = descend(equal, "adam")  # Nash-MTL's protocol
    stalled = [s.tolist() for s, x in zip(STARTING_POINTS, final) if not is_pareto_stationary(x)]
    # all five end short of the front (x2 between -7.8 and -6.4 here, the front is at -8.4)
    assert len(stalled) == 5, final
    assert (final[:, 1] > -8.0).all(), final


def test_weighting_objects_match_the_pure_functions_on_the_toy():
    # the loops above use the pure aggregators; the modules give the same gradient via backward()
    for method, fn in (("mgda", W.mgda), ("nash_mtl", W.nash_mtl)):
        x = torch.nn.Parameter(STARTING_POINTS[0].clone().double())
        W.build(method, 2).backward(toy_losses(x), [x])
        losses = toy_losses(x)
        g = torch.stack([torch.autograd.grad(losses[i], x, retain_graph=True)[0] for i in (0, 1)])
        torch.testing.assert_close(x.grad, fn(g))


def _loss_ratio_spread(weighting: str, **kw: float) -> float:
    """Coefficient of variation of L_i(end) / L_i(0) (training set) after 200 steps."""
    data = make_gradnorm_toy(num_tasks=2, n_train=1000, n_test=10, seed=0)
    torch.manual_seed(0)
    model = build_mlp("hard_sharing", 250, [100, 100, 100, 100], [100, 100])
    trainer = Trainer(
        model,
        W.build(weighting, 2, **kw),
        torch.optim.Adam(model.parameters(), lr=1e-3),
        [F.mse_loss, F.mse_loss],
        train_data=(data["x_train"], data["y_train"]),
        epochs=20,
        batch_size=100,
        progress=False,
    )
    split = (data["x_train"], data["y_train"])
    before = torch.tensor([s["loss"] for s in trainer.evaluate(split).values()])
    trainer.fit()
    after = torch.tensor([s["loss"] for s in trainer.evaluate(split).values()])
    ratios = after / before
    return float(ratios.std() / ratios.mean())


def test_gradnorm_equalises_loss_ratios(one_thread):
    equal = _loss_ratio_spread("equal")
    gradnorm = _loss_ratio_spread("gradnorm", alpha=0.12)  # the paper's asymmetry for the toy
    assert gradnorm < 0.75 * equal, (gradnorm, equal)
