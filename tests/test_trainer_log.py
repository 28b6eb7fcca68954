"""The Trainer's in-memory history (mtrl/trainer_log.py): thinning of a long series by hand,
what is recorded per logged step and per epoch, and the history's trip through a checkpoint."""

import itertools
import math

import pytest
import torch

from mtrl.trainer_log import Series, TrainerLog


def test_a_series_keeps_every_stride_th_point_and_halves_itself_past_its_limit():
    series = Series(max_points=4)
    for step in range(11):
        series.add(step, step / 2)
    # 0..4 kept (5 > 4): 0, 2, 4 stay, stride 2; 6 kept; 8 kept (5 again): 0, 4, 8, stride 4
    assert series.steps == [0, 4, 8] and series.values == [0.0, 2.0, 4.0]
    assert (series.stride, series.offered) == (4, 11)
    series.add(11, 5.5)
    series.add(12, 6.0)  # the 13th value offered: on the stride of 4
    assert series.steps == [0, 4, 8, 12]


def test_a_long_series_stays_evenly_spaced_and_bounded():
    series = Series(max_points=100)
    for step in range(10_000):
        series.add(step, float(step))
    steps = series.steps
    assert 50 <= len(steps) <= 100 and steps[0] == 0
    assert len({b - a for a, b in itertools.pairwise(steps)}) == 1  # one spacing throughout
    assert steps[-1] > 10_000 - 2 * series.stride  # it reaches the end of the run


def test_a_series_survives_its_state_exactly():
    series = Series(max_points=3)
    for step, value in enumerate([1.5, float("nan"), -2.0, 1e300, 0.1]):
        series.add(step * 10, value)
    state = series.state()
    assert state["steps"].dtype == torch.int64 and state["values"].dtype == torch.float64
    back = Series.from_state(state, max_points=3)
    assert (back.steps, back.stride, back.offered) == (series.steps, 2, 5)
    assert back.values[0] == 1.5 and back.values[1:] == [-2.0, 0.1]
    back.add(50, 7.0)  # it goes on where the original would: the 6th value is off the stride
    series.add(50, 7.0)
    assert back.steps == series.steps
    empty = Series.from_state(Series().state())
    assert empty.steps == [] and empty.values == []


def test_the_history_holds_the_logged_scalars_without_a_log_dir():
    log = TrainerLog(None, ["a", "b"])
    log.step(10, torch.tensor([1.0, 3.0]), torch.tensor([0.25, float("nan")]), 5.0, 1)
    log.metrics(16, {"a": {"loss": 0.5, "mse": 0.5}, "b": {"loss": 2.0}}, "")
    log.metrics(16, {"a": {"loss": 4.0, "mse": 4.0}}, "test_")
    got = {key: (s.steps, s.values) for key, s in log.history.items()}
    nan = got.pop("weights/b")
    assert nan[0] == [10] and math.isnan(nan[1][0])  # a skipped step's weights: kept as NaN
    assert got == {
        "task/a/loss": ([10], [1.0]),
        "weights/a": ([10], [0.25]),
        "task/b/loss": ([10], [3.0]),
        "task/a/epoch_loss": ([16], [0.5]),  # the epoch's mean training loss
        "task/a/mse": ([16], [0.5]),
        "task/b/epoch_loss": ([16], [2.0]),
        "task/a/test_loss": ([16], [4.0]),
        "task/a/test_mse": ([16], [4.0]),
    }
    assert log.writer is None  # and still no TensorBoard


@pytest.mark.parametrize("weighting", ["gradnorm", "mgda"])
def test_a_resumed_trainer_has_the_uninterrupted_runs_history(tmp_path, weighting):
    from tests.test_trainer import make_trainer

    straight = make_trainer(weighting, epochs=2, log_every=3)
    straight.fit()
    first = make_trainer(weighting, tmp_path, epochs=1, log_every=3)
    first.fit()
    resumed = make_trainer(weighting, epochs=2, seed=7, log_every=3)
    resumed.load(tmp_path / "last.pt")
    resumed.fit()
    want = {k: (s.steps, s.values) for k, s in straight.log.history.items()}
    assert {k: (s.steps, s.values) for k, s in resumed.log.history.items()} == want
    steps_per_epoch = straight.step // 2
    assert want["task/small/test_loss"][0] == [steps_per_epoch, 2 * steps_per_epoch]
    assert want["weights/big"][0] == list(range(3, straight.step + 1, 3))
    # an older checkpoint without a history: the resumed run keeps what it logs from then on
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    del state["history"]
    older = make_trainer(weighting, epochs=2, log_every=3)
    older.load_state_dict(state)
    older.fit()
    assert older.log.history["task/small/test_loss"].steps == [2 * steps_per_epoch]
