"""Gradient cosine and TAG lookahead affinity (Fifty et al. 2021) on hand-made models."""

import pytest
import torch
from torch import nn

from mtrl.relations import AffinityTracker, gradient_cosine, lookahead_affinity


class TwoTaskQuadratic(nn.Module):
    """Shared w (3,), task head scale c; L_i = c * ||w - target_i||^2."""

    def __init__(self, targets: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, dtype=torch.float64))
        self.c = nn.Parameter(torch.ones((), dtype=torch.float64))
        self.register_buffer("targets", targets)

    def shared_parameters(self):
        return [self.w]

    def losses(self) -> torch.Tensor:
        return self.c * ((self.w - self.targets) ** 2).sum(dim=1)


A = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)


def test_lookahead_identical_tasks_positive_by_hand():
    model = TwoTaskQuadratic(torch.stack([A, A]))
    z = lookahead_affinity(model, None, lambda m: m.losses(), lr=0.1)
    # grad at w=0 is -2a; w' = 0.2a; L(w') = 0.64 ||a||^2 -> Z = 0.36 everywhere.
    torch.testing.assert_close(z, torch.full((2, 2), 0.36, dtype=torch.float64))


def test_lookahead_opposing_tasks_negative_by_hand():
    model = TwoTaskQuadratic(torch.stack([A, -A]))
    z = lookahead_affinity(model, model.shared_parameters(), lambda m: m.losses(), lr=0.1)
    # Step on task 0 moves w to 0.2a: L_1 = ||1.2a||^2 -> Z[0,1] = 1 - 1.44 = -0.44.
    expected = torch.tensor([[0.36, -0.44], [-0.44, 0.36]], dtype=torch.float64)
    torch.testing.assert_close(z, expected)


def test_lookahead_restores_parameters_exactly_and_leaves_grads():
    torch.manual_seed(0)
    trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8))
    heads = nn.ModuleList([nn.Linear(8, 1) for _ in range(3)])
    model = nn.ModuleDict({"trunk": trunk, "heads": heads})
    x, y = torch.randn(16, 4), torch.randn(16, 3)

    def fn(m):
        h = m["trunk"](x)
        return torch.stack(
            [((m["heads"][t](h).squeeze(-1) - y[:, t]) ** 2).mean() for t in range(3)]
        )

    before = {k: v.clone() for k, v in model.state_dict().items()}
    z = lookahead_affinity(model, trunk.parameters(), fn, lr=0.5)
    assert z.shape == (3, 3)
    assert torch.isfinite(z).all()
    assert (z.diagonal() > 0).all()  # a small step on a task's own loss lowers it
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_lookahead_restores_batchnorm_statistics_in_train_mode():
    torch.manual_seed(0)
    model = nn.ModuleDict({"trunk": nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))})
    heads = [nn.Linear(8, 1) for _ in range(2)]
    x, y = torch.randn(16, 4), torch.randn(16, 2)

    def fn(m):
        h = m["trunk"](x)  # train mode: every pass updates the running statistics
        return torch.stack([((heads[t](h).squeeze(-1) - y[:, t]) ** 2).mean() for t in range(2)])

    before = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead_affinity(model, model["trunk"].parameters(), fn, lr=0.1)
    for k, v in model.state_dict().items():  # running_mean/var and num_batches_tracked too
        assert torch.equal(v, before[k]), k


def test_gradient_cosine_known_directions():
    w = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    losses = torch.stack([w @ a, -(w @ a), w @ b])
    cos = gradient_cosine([w], losses)
    expected = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(cos, expected)
    # tiny gradients keep their angles (the norms' product used to be clamped at eps: 1e-14
    # here, so every entry came out near 0.01); a zero gradient has cosine 0 with everything
    losses = torch.stack([1e-7 * (w @ a), 1e-7 * (w @ (a + b / 3)), 0 * (w @ b)])
    expected = torch.tensor([[1.0, 0.5**0.5, 0.0], [0.5**0.5, 1.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(gradient_cosine([w], losses), expected)


def test_affinity_tracker_mean_and_state():
    tr = AffinityTracker(2)
    with pytest.raises(ValueError, match="before any update"):
        tr.mean()
    tr.update(torch.tensor([[1.0, 0.0], [2.0, 1.0]]))
    tr.update(torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    torch.testing.assert_close(
        tr.mean(), torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    )
    other = AffinityTracker(2)
    other.load_state_dict(tr.state_dict())
    torch.testing.assert_close(other.mean(), tr.mean())
    model = TwoTaskQuadratic(torch.stack([A, A]))
    tr.reset()
    tr.step(model, None, lambda m: m.losses(), lr=0.1)
    assert tr.count == 1
    # the step's lookahead affinity (0.36 everywhere, by hand above) is what it accumulated
    torch.testing.assert_close(tr.mean(), torch.full((2, 2), 0.36, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected"):
        tr.update(torch.zeros(3, 3))


def test_lookahead_refuses_a_zero_loss_before_the_step():
    # Z = 1 - L'/L was NaN for that task and poisoned an AffinityTracker's running mean
    model = TwoTaskQuadratic(torch.stack([A, torch.zeros(3, dtype=torch.float64)]))
    with pytest.raises(ValueError, match=r"tasks \[1\] have loss 0"):
        lookahead_affinity(model, None, lambda m: m.losses(), lr=0.1)


def test_gradient_cosine_of_a_constant_loss_is_zero():
    # a loss that does not require grad (e.g. a task absent from the batch) was a RuntimeError
    w = nn.Parameter(torch.tensor([1.0, 0.0], dtype=torch.float64))
    losses = [(w * torch.tensor([2.0, 0.0], dtype=torch.float64)).sum(), torch.tensor(0.0)]
    cos = gradient_cosine([w], losses)
    assert cos.tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_lookahead_takes_losses_of_any_shape_flattened():
    # a task_losses_fn returning (T, 1) (e.g. per-task means kept 2-D) is flattened to (T,)
    model = TwoTaskQuadratic(torch.stack([A, -A]))
    z = lookahead_affinity(model, None, lambda m: m.losses()[:, None], lr=0.1)
    expected = torch.tensor([[0.36, -0.44], [-0.44, 0.36]], dtype=torch.float64)
    torch.testing.assert_close(z, expected)
