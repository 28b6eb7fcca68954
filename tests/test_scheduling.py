"""Task schedulers: uniform, proportional and performance-driven (Sharma et al. 2017)."""

import math

import pytest
import torch

from mtrl.registry import UnknownNameError
from mtrl.scheduling import (
    SCHEDULERS,
    PerformanceScheduler,
    ProportionalScheduler,
    UniformScheduler,
)


def test_registry_names_and_unknown():
    assert {"uniform", "proportional", "performance"} <= set(SCHEDULERS.names())
    assert isinstance(SCHEDULERS.build("uniform", num_tasks=3), UniformScheduler)
    with pytest.raises(UnknownNameError, match="valid"):
        SCHEDULERS.get("unifrom")


def test_uniform_frequencies():
    s = UniformScheduler(4, seed=1)
    ids = s.sample(40_000)
    assert ids.dtype == torch.long and ids.shape == (40_000,)
    freq = torch.bincount(ids, minlength=4).double() / ids.numel()
    torch.testing.assert_close(freq, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01, rtol=0)


def test_proportional_frequencies():
    s = ProportionalScheduler([100, 300, 600], seed=2)
    torch.testing.assert_close(s.probabilities(), torch.tensor([0.1, 0.3, 0.6]))
    freq = torch.bincount(s.sample(50_000), minlength=3).double() / 50_000
    torch.testing.assert_close(
        freq, torch.tensor([0.1, 0.3, 0.6], dtype=torch.float64), atol=0.01, rtol=0
    )
    with pytest.raises(ValueError, match="sizes"):
        ProportionalScheduler([0, 0])


def test_seeded_determinism_and_state_dict_resume():
    a, b = UniformScheduler(5, seed=7), UniformScheduler(5, seed=7)
    assert torch.equal(a.sample(100), b.sample(100))
    state = a.state_dict()
    expected = a.sample(50)
    c = UniformScheduler(5, seed=123)
    c.load_state_dict(state)
    assert torch.equal(c.sample(50), expected)


def test_generator_state_loads_from_a_checkpoint_mapped_to_a_gpu(on_gpu):
    # torch.load(f, map_location="cuda") puts the generator state on the GPU; a CPU generator
    # takes CPU states only ("RNG state must be a torch.ByteTensor"). Meta stands in for CUDA.
    a = UniformScheduler(5, seed=7)
    state = a.state_dict()
    state["_extra_state"] = {"generator": on_gpu(state["_extra_state"]["generator"])}
    c = UniformScheduler(5, seed=123)
    c.load_state_dict(state)
    assert torch.equal(c.sample(50), a.sample(50))


def test_performance_scheduler_by_hand_and_favours_lagging_task():
    s = PerformanceScheduler(targets=[10.0, 10.0, 20.0], tau=0.5, seed=0)
    torch.testing.assert_close(s.probabilities(), torch.full((3,), 1 / 3))  # before any report
    s.update([10.0, 5.0, 20.0])  # task 1 is halfway to its target, others at target
    gaps = torch.tensor([0.0, 0.5, 0.0])
    torch.testing.assert_close(s.gaps(), gaps)
    torch.testing.assert_close(s.probabilities(), torch.softmax(gaps / 0.5, 0))
    p = s.probabilities()
    assert p[1] > p[0] and p[1] > p[2]
    ids = s.sample(20_000)
    freq = torch.bincount(ids, minlength=3).double() / ids.numel()
    assert freq[1] == pytest.approx(math.e / (math.e + 2), abs=0.015)


def test_performance_scheduler_losses_and_momentum():
    s = PerformanceScheduler(targets=[1.0, 1.0], tau=1.0, higher_is_better=False, momentum=0.5)
    s.update([1.0, 3.0])  # task 1 loss is 3x its reference: it lags
    torch.testing.assert_close(s.gaps(), torch.tensor([0.0, 2.0]))
    s.update([1.0, 1.0])  # EMA: 0.5 * 3 + 0.5 * 1 = 2
    torch.testing.assert_close(s.scores, torch.tensor([1.0, 2.0]))
    assert s.probabilities()[1] > 0.5
    state = s.state_dict()
    t = PerformanceScheduler(targets=[1.0, 1.0], tau=1.0, higher_is_better=False, momentum=0.5)
    t.load_state_dict(state)
    torch.testing.assert_close(t.probabilities(), s.probabilities())


def test_performance_scheduler_validation():
    with pytest.raises(ValueError, match="tau"):
        PerformanceScheduler([1.0], tau=0.0)
    with pytest.raises(ValueError, match="expected 2"):
        PerformanceScheduler([1.0, 2.0]).update([1.0])


def test_performance_scheduler_negative_targets_use_the_absolute_scale():
    # m_i = (b_i - a_i) / |b_i|: a negative target (e.g. a game scored below zero) keeps the sign
    s = PerformanceScheduler(targets=[-10.0, 20.0], tau=1.0)
    s.update([-15.0, 10.0])  # both lag: 5 below -10 and 10 below 20
    torch.testing.assert_close(s.gaps(), torch.tensor([0.5, 0.5]))


def test_performance_scheduler_momentum_keeps_that_share_of_the_old_score():
    s = PerformanceScheduler(targets=[1.0, 1.0], higher_is_better=False, momentum=0.75)
    s.update([1.0, 3.0])
    s.update([1.0, 1.0])  # 0.75 * 3 + 0.25 * 1
    torch.testing.assert_close(s.scores, torch.tensor([1.0, 2.5]))


def test_sample_zero_is_empty_and_negative_is_refused():
    ids = UniformScheduler(3).sample(0)  # was: torch's "cannot sample n_sample <= 0 samples"
    assert ids.dtype == torch.long and ids.shape == (0,)
    with pytest.raises(ValueError, match="n=-1 must be an integer >= 0"):
        UniformScheduler(3).sample(-1)


def test_non_finite_sizes_targets_and_metrics_are_refused():
    # sizes [inf, 1] gave probabilities [nan, 0]; a NaN metric stayed in the scores and every
    # later sample() failed with "invalid multinomial distribution"
    with pytest.raises(ValueError, match="must be finite"):
        ProportionalScheduler([math.inf, 1.0])
    with pytest.raises(ValueError, match="must be finite"):
        PerformanceScheduler([1.0, math.nan])
    sched = PerformanceScheduler([1.0, 1.0])
    with pytest.raises(ValueError, match=r"metrics=\[nan, 0.5\] must be finite"):
        sched.update([math.nan, 0.5])
    assert not bool(sched.seen)  # the bad report left nothing behind
    assert sched.probabilities().tolist() == [0.5, 0.5]
