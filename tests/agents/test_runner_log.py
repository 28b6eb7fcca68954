"""agents.runner: the TensorBoard scalars of a log interval (means over its pending updates)."""

from types import SimpleNamespace

from agents.runner import Runner


class _Writer:
    def __init__(self):
        self.scalars = []

    def add_scalar(self, key, value, step):
        self.scalars.append((key, value, step))


def test_log_writes_the_means_of_the_pending_updates_at_the_global_step():
    writer = _Writer()
    runner = SimpleNamespace(
        writer=writer, global_step=400, update=4, nonfinite_total=2, env=SimpleNamespace(restarts=1)
    )
    pending = [{"losses/a": 1.0, "losses/b": 10.0}, {"losses/a": 3.0, "losses/b": 20.0}]
    Runner._log(runner, pending, 2.0)
    assert writer.scalars == [
        ("losses/a", 2.0, 400),
        ("losses/b", 15.0, 400),
        ("charts/sps", 200.0, 400),  # environment steps (not updates) per second
        ("charts/nonfinite_updates", 2, 400),
        ("charts/env_restarts", 1, 400),
    ]


def test_log_without_pending_updates_or_writer_writes_nothing():
    writer = _Writer()
    runner = SimpleNamespace(writer=writer, global_step=1, update=1, nonfinite_total=0, env=None)
    Runner._log(runner, [], 1.0)
    assert writer.scalars == []
    Runner._log(SimpleNamespace(writer=None), [{"x": 1.0}], 1.0)  # no TensorBoard: no error


def test_log_means_leave_out_skipped_non_finite_updates():
    # one skipped update (NaN losses and weights) used to turn the whole interval's mean into NaN
    writer = _Writer()
    runner = SimpleNamespace(
        writer=writer, global_step=300, update=3, nonfinite_total=1, env=SimpleNamespace()
    )
    nan, inf = float("nan"), float("inf")
    pending = [
        {"losses/a": 1.0, "weights/t": 1.0},
        {"losses/a": nan, "weights/t": inf},
        {"losses/a": 5.0, "weights/t": nan},
    ]
    Runner._log(runner, pending, 1.0)
    assert writer.scalars[:2] == [("losses/a", 3.0, 300), ("weights/t", 1.0, 300)]
    writer.scalars.clear()
    Runner._log(runner, [{"losses/a": nan}], 1.0)  # nothing finite: NaN, not an error
    key, value, _ = writer.scalars[0]
    assert key == "losses/a" and value != value
