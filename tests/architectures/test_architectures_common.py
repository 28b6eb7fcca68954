"""Properties every registered architecture must have: shapes, parameter partition, gradient
isolation between tasks, and the ``task_ids`` form equal to the full-list form per sample."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mtrl.architectures as A
from mtrl.registry import UnknownNameError

IN, HIDDEN, OUTS = 5, [8, 8], [3, 3, 3]

# Non-identity mixing so that columns really interact in cross-stitch / sluice.
OPTIONS: dict[str, dict[str, object]] = {
    "cross_stitch": {"alpha_self": 0.9, "alpha_other": 0.1},
    "sluice": {"alpha_self": 0.9, "alpha_other": 0.1, "beta_init": "uniform", "ortho_weight": 0.1},
    "soft_sharing": {"penalty_type": "trace"},
}


def make(name: str) -> A.MultiTaskModel:
    torch.manual_seed(0)
    return A.build_mlp(name, IN, HIDDEN, OUTS, **OPTIONS.get(name, {}))


def test_registry_names_and_unknown() -> None:
    assert A.names() == sorted(
        ["adashare", "cross_stitch", "hard_sharing", "mmoe", "mtan", "sluice", "soft_sharing"]
    )
    with pytest.raises(UnknownNameError, match="valid: adashare"):
        A.build("hard_shared")


@pytest.mark.parametrize("name", A.names())
def test_shapes_and_parameter_partition(name: str) -> None:
    model = make(name)
    outs = model(torch.randn(4, IN))
    assert [tuple(o.shape) for o in outs] == [(4, o) for o in OUTS]
    every = {id(p) for p in model.parameters()}
    sets = [{id(p) for p in model.shared_parameters()}]
    sets += [{id(p) for p in model.task_parameters(t)} for t in range(len(OUTS))]
    assert set().union(*sets) == every
    assert sum(len(s) for s in sets) == len(every)  # pairwise disjoint
    assert all(len(s) > 0 for s in sets[1:])


@pytest.mark.parametrize("name", A.names())
@pytest.mark.parametrize("t", [0, 2])
def test_task_loss_reaches_only_shared_and_own_parameters(name: str, t: int) -> None:
    model = make(name)
    model(torch.randn(6, IN))[t].square().sum().backward()
    own = model.task_parameters(t)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own)
    shared = model.shared_parameters()
    if shared:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in shared)
    for s in range(len(OUTS)):
        if s != t:
            for p in model.task_parameters(s):
                assert p.grad is None or torch.all(p.grad == 0), (name, s)


@pytest.mark.parametrize("name", A.names())
def test_task_ids_form_equals_full_list_per_sample(name: str) -> None:
    model = make(name).eval()
    x = torch.randn(9, IN)
    ids = torch.tensor([2, 0, 0, 1, 2, 2, 0, 1, 1])
    full = torch.stack(model(x))  # (T, B, out)
    torch.testing.assert_close(model(x, ids), full[ids, torch.arange(9)])
    # one task only present, and task gradients stay in that task
    model.train()
    only = torch.full((9,), 1)
    model(x, only).sum().backward()
    for s in (0, 2):
        for p in model.task_parameters(s):
            assert p.grad is None or torch.all(p.grad == 0)


@pytest.mark.parametrize("name", A.names())
def test_penalty_is_a_scalar_with_gradient_or_zero(name: str) -> None:
    model = make(name)
    model(torch.randn(4, IN))
    pen = model.penalty()
    assert pen.shape == ()
    assert torch.isfinite(pen)
    if name in ("soft_sharing", "sluice", "adashare"):
        assert pen.requires_grad
    else:  # no regulariser: exactly zero, so adding it changes nothing
        assert pen.item() == 0.0


@pytest.mark.parametrize("name", A.names())
def test_return_features(name: str) -> None:
    model = make(name)
    x = torch.randn(4, IN)
    if not model.supports_features:
        with pytest.raises(NotImplementedError):
            model(x, return_features=True)
        return
    outs, z = model(x, return_features=True)
    assert z.shape[0] == 4 and z.dim() == 2
    for o, ref in zip(outs, model(x), strict=True):
        torch.testing.assert_close(o, ref)
    # representation-gradient mode: grads through z reproduce the direct shared gradients
    loss = sum(o.sum() for o in outs)
    (gz,) = torch.autograd.grad(loss, z, retain_graph=True)
    z.backward(gz)
    via_z = [p.grad.clone() for p in model.shared_parameters()]
    model.zero_grad()
    sum(o.sum() for o in model(x)).backward()
    for g, p in zip(via_z, model.shared_parameters(), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_build_from_modules() -> None:
    model = A.build("hard_sharing", nn.Linear(4, 6), [nn.Linear(6, 1), nn.Linear(6, 2)])
    assert isinstance(model, A.HardSharing)
    assert [tuple(o.shape) for o in model(torch.randn(3, 4))] == [(3, 1), (3, 2)]


def test_a_user_architecture_missing_a_part_says_which(monkeypatch) -> None:
    monkeypatch.setattr(A.ARCHITECTURES, "_entries", dict(A.ARCHITECTURES._entries))

    @A.ARCHITECTURES.register("no_mlp")
    class NoMlp(A.MultiTaskModel):
        def __init__(self, trunk: nn.Module, heads: list[nn.Module]) -> None:
            super().__init__()
            self.trunk, self.heads, self.num_tasks = trunk, nn.ModuleList(heads), len(heads)

    # build_mlp raised AttributeError "type object 'NoMlp' has no attribute 'mlp'" (a traceback
    # in a supervised run, which reports TypeError and ValueError as one error line)
    with pytest.raises(TypeError, match=r"'no_mlp' \(NoMlp\) has no mlp\(in_dim, hidden"):
        A.build_mlp("no_mlp", IN, HIDDEN, OUTS)
    model = A.build("no_mlp", nn.Linear(IN, 4), [nn.Linear(4, 1)] * 2)
    # both were a bare NotImplementedError
    with pytest.raises(NotImplementedError, match=r"NoMlp must implement task_parameters\(t\)"):
        model.shared_parameters()
    with pytest.raises(NotImplementedError, match=r"NoMlp must implement forward_all\(x\)"):
        model(torch.randn(2, IN))


@pytest.mark.parametrize("name", A.names())
@pytest.mark.parametrize(
    ("ids", "needle"),
    [
        (torch.tensor([0, 1, -1, 0]), r"must lie in \[0, 3\), got -1"),  # cross-stitch, sluice:
        # silently the last task's output; the others: torch's bincount error
        (torch.tensor([0, 1, 3, 0]), r"must lie in \[0, 3\), got 3"),
        (torch.tensor([0.0, 1.0, 2.0, 0.0]), "must be an integer tensor"),  # 1.7 became 1
        (torch.tensor([0, 1, 2, 0], dtype=torch.complex64), "must be an integer tensor"),
        (torch.tensor([0, 1]), r"must have shape \(B,\) = \(4,\)"),
    ],
)
def test_bad_task_ids_raise_one_clear_error(name, ids, needle):
    model = make(name)
    with pytest.raises(ValueError, match=needle):
        model(torch.randn(4, IN), ids)
    if model.supports_features:
        with pytest.raises(ValueError, match=needle):
            model(torch.randn(4, IN), ids, return_features=True)


@pytest.mark.parametrize("name", A.names())
def test_empty_batch(name):
    # MMoE's full form and every grouped task_ids form used to fail on B = 0
    model = make(name)
    x = torch.randn(0, IN)
    assert [tuple(o.shape) for o in model(x)] == [(0, o) for o in OUTS]
    assert tuple(model(x, torch.zeros(0, dtype=torch.long)).shape) == (0, 3)


@pytest.mark.parametrize("name", ["cross_stitch", "mmoe", "mtan"])
def test_no_hidden_layer_is_named_as_the_problem(name):
    with pytest.raises(ValueError, match="needs at least one hidden layer"):  # was: IndexError
        A.build_mlp(name, IN, [], OUTS)
