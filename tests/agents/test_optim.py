"""FusedRMSprop against torch.optim.RMSprop; clipping folded into its step; the OpenMP helper."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.guards import clip_and_check
from agents.optim import FusedRMSprop

ROOT = Path(__file__).resolve().parents[2]


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    # (300, 37): long enough for the kernel's vectorised and multi-threaded paths, odd-sized tail
    shapes = [(3, 4), (5,), (2, 2, 3), (300, 37)]
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]


def _steps(opt, params, grads_per_step, clip: float = 0.0) -> None:
    """One ``opt.step()`` per list of gradients (clipped to ``clip`` first if > 0)."""
    for grads in grads_per_step:
        opt.zero_grad()
        for p, g in zip(params, grads):
            p.grad = g.clone()
        if clip:
            clip_and_check([opt], clip)
        opt.step()


def _run(opt_cls, grads_per_step, clip: float = 0.0, **kw):
    params = _params()
    opt = opt_cls(params, lr=0.01, alpha=0.9, eps=1e-5, **kw)
    _steps(opt, params, grads_per_step, clip)
    return params, opt


def _grads(steps: int = 4) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=g) for p in _params()] for _ in range(steps)]


def test_matches_torch_rmsprop_and_its_state():
    grads = _grads()
    ours, opt = _run(FusedRMSprop, grads)
    ref, ref_opt = _run(torch.optim.RMSprop, grads)
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)
    for p, r in zip(ours, ref):
        torch.testing.assert_close(opt.state[p]["square_avg"], ref_opt.state[r]["square_avg"])
        assert float(opt.state[p]["step"]) == float(ref_opt.state[r]["step"]) == 4


def test_exact_when_gradient_scale_changes_by_orders_of_magnitude():
    """Each step's first moment is that step's gradient alone: no earlier gradient leaks in."""
    grads = [[g * scale for g in step] for step, scale in zip(_grads(), [1e6, 1e-3, 1e4, 1e-6])]
    ours, _ = _run(FusedRMSprop, grads)
    ref, _ = _run(torch.optim.RMSprop, grads)
    for p, r in zip(ours, ref):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)


def test_hand_computed_first_step():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = FusedRMSprop([p], lr=0.1, alpha=0.5, eps=0.0)
    p.grad = torch.tensor([2.0, -4.0])
    opt.step()
    # v = 0.5 * g^2 = [2, 8]; p -= 0.1 * g / sqrt(v) = 0.1 * sqrt(2) * sign(g)
    step = 0.1 * 2**0.5
    torch.testing.assert_close(p.detach(), torch.tensor([1.0 - step, -2.0 + step]))


def test_hand_computed_first_step_from_a_unit_mean_square():
    """TF-like start (v0 = 1): the first step is ~lr * g, not ~lr * sign(g) / sqrt(1 - alpha)."""
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = FusedRMSprop([p], lr=0.1, alpha=0.5, eps=0.0, initial_square_avg=1.0)
    p.grad = torch.tensor([2.0, -4.0])
    opt.step()
    # v = 0.5 * 1 + 0.5 * g^2 = [2.5, 8.5]; p -= 0.1 * g / sqrt(v)
    v = torch.tensor([2.5, 8.5])
    expected = torch.tensor([1.0, -2.0]) - 0.1 * torch.tensor([2.0, -4.0]) / v.sqrt()
    torch.testing.assert_close(p.detach(), expected)
    torch.testing.assert_close(opt.state[p]["square_avg"], v)


def test_unit_start_matches_torch_rmsprop_given_the_same_state():
    """From step 1 on it is torch's RMSprop whose mean square happened to start at 1."""
    grads = _grads()
    ours, _ = _run(FusedRMSprop, grads, initial_square_avg=1.0)
    params = _params()
    ref = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=1e-5)
    for p in params:
        ref.state[p] = {"step": torch.tensor(0.0), "square_avg": torch.ones_like(p)}
    _steps(ref, params, grads)
    for p, r in zip(ours, params):
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-7)


def test_fallback_without_fused_kernel_is_the_same_update(monkeypatch):
    grads = _grads()
    fused, _ = _run(FusedRMSprop, grads, clip=0.5)
    monkeypatch.delattr(torch, "_fused_adam_")
    plain, _ = _run(FusedRMSprop, grads, clip=0.5)
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_resumes_from_a_torch_rmsprop_checkpoint():
    """An older run's torch.optim.RMSprop state continues exactly under FusedRMSprop."""
    grads = _grads()
    ref, ref_opt = _run(torch.optim.RMSprop, grads[:2])
    params = [torch.nn.Parameter(p.detach().clone()) for p in ref]
    opt = FusedRMSprop(params, lr=0.01, alpha=0.9, eps=1e-5)
    opt.load_state_dict(ref_opt.state_dict())
    _steps(opt, params, grads[2:])
    full, _ = _run(torch.optim.RMSprop, grads)
    for a, b in zip(params, full):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert set(opt.state_dict()["state"][0]) == {"step", "square_avg"}


def test_clipping_folded_into_the_step_equals_clip_grad_norm():
    grads = _grads()
    ours, _ = _run(FusedRMSprop, grads, clip=0.5)
    params = _params()
    ref = torch.optim.RMSprop(params, lr=0.01, alpha=0.9, eps=1e-5)
    for step in grads:
        ref.zero_grad()
        for p, g in zip(params, step):
            p.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        ref.step()
    for a, b in zip(ours, params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_clipped_step_leaves_the_clipped_gradient_in_grad():
    """The kernel writes its first moment (0 * g + g/divisor) into p.grad itself."""
    params = _params()
    opt = FusedRMSprop(params, lr=0.01, alpha=0.9, eps=1e-5)
    grads = _grads(1)[0]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    norm = float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
    clip_and_check([opt], 0.5)
    opt.step()
    for p, g in zip(params, grads):
        torch.testing.assert_close(p.grad, g * (0.5 / norm), rtol=1e-5, atol=1e-7)
    assert all(set(state) == {"step", "square_avg"} for state in opt.state.values())


def test_skipped_step_does_not_carry_its_clipping_into_the_next():
    params = _params()
    opt = FusedRMSprop(params, lr=0.01)
    for p in params:
        p.grad = torch.full_like(p, 100.0)
    clip_and_check([opt], 0.5)  # divisor pending; the runner then skips the step
    opt.zero_grad()
    assert opt._divisor is None


def test_bad_alpha_or_initial_mean_square_is_refused():
    with pytest.raises(ValueError, match="alpha"):
        FusedRMSprop(_params(), lr=0.01, alpha=1.0)
    with pytest.raises(ValueError, match="initial_square_avg"):
        FusedRMSprop(_params(), lr=0.01, initial_square_avg=-1.0)


def _run_python(env: dict[str, str], code: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**full, **env}, cwd=ROOT, capture_output=True, text=True
    )
    return out.stdout.strip()


def test_openmp_spin_limit_set_before_torch_and_never_over_the_user():
    code = (
        "import os; from agents.omp import limit_openmp_spinning as f; "
        "print(f(), os.environ.get('GOMP_SPINCOUNT'))"
    )
    assert _run_python({}, code) == "True 30000"
    assert _run_python({"GOMP_SPINCOUNT": "7"}, code) == "False 7"
    assert _run_python({"OMP_WAIT_POLICY": "PASSIVE"}, code) == "False None"
    late = "import torch; " + code  # too late: the OpenMP runtime already read its settings
    assert _run_python({}, late) == "False None"


@pytest.mark.parametrize("init", [0.0, 1.0])
def test_agent_rmsprop_init_reaches_every_optimiser(tmp_path, init):
    """``agent.rmsprop_init`` starts the mean square of pi0's and the task columns' optimisers:
    after one update v = alpha * init + (1 - alpha) * g^2 in every element."""
    import train
    from agents.config import load_config

    cfg = load_config(
        ROOT / "configs" / "gridworld_distral.yaml",
        ["agent.name=distral_klent_2col", "agent.optimizer=rmsprop", "agent.rmsprop_alpha=0.99",
         f"agent.rmsprop_init={init}", "progress=false", "eval.episodes=0", "total_steps=1"],
    )  # fmt: skip
    runner = train.build(cfg, tmp_path / "run")
    try:
        runner.run()
    finally:
        runner.env.close()
    assert len(runner.optimizers) == 2  # pi0 and the task columns
    for opt in runner.optimizers:
        for group in opt.param_groups:
            for p in group["params"]:
                v = opt.state[p]["square_avg"]
                floor = 0.99 * init
                assert float(v.min()) >= floor and float(v.min()) < floor + 0.01 * 2.0


def _grad_params(*grads: list[float]) -> list[torch.nn.Parameter]:
    params = [torch.nn.Parameter(torch.zeros(len(g))) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g)
    return params


def test_clip_and_check_clips_each_optimiser_separately_and_reports_the_joint_norm():
    """pi0 and the task columns are clipped each to max_norm; the norm is sqrt(3^2 + 4^2)."""
    a, b = _grad_params([3.0, 0.0]), _grad_params([0.0, 4.0])
    opts = [FusedRMSprop(a, lr=0.1), torch.optim.SGD(b, lr=0.1)]
    total, finite = clip_and_check(opts, 1.0)
    assert finite and float(total) == pytest.approx(5.0)
    opts[0].step()  # the fused optimiser clips inside its step (p.grad afterwards)
    torch.testing.assert_close(a[0].grad, torch.tensor([1.0, 0.0]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b[0].grad, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-7)


def test_per_task_and_pooled_gradients_by_hand():
    """per_task: each task's block (dim 0 in K = 2) clipped on its own norm; pooled: divided by
    K, then clipped; the reported norm is over what they hold after the 1/K, before clipping."""
    from agents.guards import PER_TASK, POOLED

    task = torch.nn.Parameter(torch.zeros(2, 2))
    task.grad = torch.tensor([[3.0, 4.0], [0.3, 0.4]])  # task 0: norm 5; task 1: norm 0.5
    bias = torch.nn.Parameter(torch.zeros(2))
    bias.grad = torch.tensor([0.0, 0.0])
    shared = torch.nn.Parameter(torch.zeros(2))
    shared.grad = torch.tensor([6.0, 8.0])  # sum over 2 tasks: the mean has norm 5
    opts = [torch.optim.SGD([task, bias], lr=0.1), torch.optim.SGD([shared], lr=0.1)]
    total, finite = clip_and_check(opts, 1.0, [PER_TASK, POOLED], num_tasks=2)
    assert finite and total == pytest.approx((25 + 0.25 + 25) ** 0.5)
    c = 1 / (5 + 1e-6)
    torch.testing.assert_close(task.grad, torch.tensor([[3 * c, 4 * c], [0.3, 0.4]]))
    torch.testing.assert_close(shared.grad, torch.tensor([3 * c, 4 * c]))
    total, _ = clip_and_check(opts, 0.0, [PER_TASK, POOLED], num_tasks=2)  # no clip; still 1/K
    torch.testing.assert_close(shared.grad, torch.tensor([1.5 * c, 2 * c]))


def test_max_grad_norm_zero_means_no_clipping():
    p = _grad_params([3.0, -4.0])
    opt = FusedRMSprop(p, lr=0.1, alpha=0.5, eps=0.0)
    total, finite = clip_and_check([opt], 0.0)
    assert finite and float(total) == pytest.approx(5.0)
    opt.step()
    # unclipped first step: v = 0.5 g^2, p -= 0.1 * g / sqrt(v) = 0.1 * sqrt(2) * sign(g)
    step = 0.1 * 2**0.5
    torch.testing.assert_close(p[0].detach(), torch.tensor([-step, step]))
    q = _grad_params([3.0, -4.0])
    clip_and_check([torch.optim.SGD(q, lr=0.1)], 0.0)
    torch.testing.assert_close(q[0].grad, torch.tensor([3.0, -4.0]))


def test_non_finite_gradients_and_parameters_are_reported(tmp_path):
    from agents.guards import check_divergence, check_parameters
    from agents.signals import DivergenceError

    p = _grad_params([float("nan"), 1.0])
    assert clip_and_check([torch.optim.SGD(p, lr=0.1)], 1.0)[1] is False
    good, bad = torch.ones(2), torch.tensor([1.0, float("inf")])
    check_parameters([good, good], 1, tmp_path)
    with pytest.raises(DivergenceError, match="non-finite"):
        check_parameters([good, bad], 1, tmp_path)
    last = tmp_path / "checkpoints" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(b"")
    with pytest.raises(DivergenceError) as e:
        check_parameters([good, bad], 7, tmp_path)
    assert str(e.value) == (
        "training diverged: parameters became non-finite by step 7 (lower agent.lr or "
        f"agent.max_grad_norm); last good checkpoint kept at {last}"
    )
    check_divergence(2, 3, 1, tmp_path)
    check_divergence(5, 0, 1, tmp_path)  # 0 = never stop
    with pytest.raises(DivergenceError, match="3 non-finite updates"):
        check_divergence(3, 3, 1, tmp_path)


def test_a_clipped_step_does_not_clip_the_next_one():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = FusedRMSprop([p], lr=0.1, alpha=0.5, eps=0.0)
    p.grad = torch.tensor([4.0])
    opt.divide_grads(torch.tensor(4.0))
    opt.step()  # g = 1: v = 0.5, p = -0.1 / sqrt(0.5)
    p.grad = torch.tensor([4.0])
    opt.step()  # g = 4 (no divisor): v = 0.25 + 8
    expected = -0.1 / 0.5**0.5 - 0.1 * 4.0 / 8.25**0.5
    assert p.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_make_optimizer_takes_its_settings_from_the_config(optimizer):
    from agents.base import make_optimizer
    from agents.config_schema import AgentConfig

    cfg = AgentConfig(optimizer=optimizer, lr=3e-3, eps=1e-3, rmsprop_alpha=0.9)
    opt = make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))])
    group = opt.param_groups[0]
    assert (group["lr"], group["eps"]) == (3e-3, 1e-3)
    if optimizer == "rmsprop":
        assert group["alpha"] == 0.9
    assert make_optimizer(cfg, [torch.nn.Parameter(torch.zeros(2))], lr=1e-4).param_groups[0][
        "lr"
    ] == pytest.approx(1e-4)


def test_clip_and_check_reads_the_norms_to_the_host_in_one_copy(device_traffic):
    # one .cpu() per optimiser (Distral has two) was one more CUDA sync each
    opts = [torch.optim.SGD(_grad_params(g), lr=0.1) for g in ([3.0, 0.0], [0.0, 4.0], [1.0])]
    with device_traffic() as traffic:
        total, finite = clip_and_check(opts, 1.0)
    assert finite and float(total) == pytest.approx(26**0.5)
    assert traffic.reads == {"tolist": 1}  # one read of all the norms


def test_a_fused_optimisers_divisor_is_made_on_the_gradients_device():
    # a host tensor was copied to the GPU inside the fused step: a blocking copy, a CUDA sync
    # per update (the traffic counter above does not see 0-dim copies; "meta" stands in for cuda)
    from agents.guards import _divide

    class Fused:
        def divide_grads(self, divisor):
            self.divisor = divisor

    opt = Fused()
    _divide(opt, [torch.zeros(2, device="meta")], 4.0)  # type: ignore[arg-type]
    assert opt.divisor.device.type == "meta" and opt.divisor.dtype == torch.float32


def test_check_parameters_reads_the_host_once_per_device(tmp_path, device_traffic):
    from agents.guards import check_parameters
    from agents.signals import DivergenceError

    params = [torch.ones(3), torch.zeros(2, 2), torch.ones(())]
    with device_traffic() as traffic:
        check_parameters(params, 1, tmp_path)  # a bool() per tensor was a CUDA sync each
    assert traffic.total_reads == 1
    with pytest.raises(DivergenceError, match="non-finite"):
        check_parameters([*params, torch.tensor([0.0, float("nan")])], 1, tmp_path)
