"""The run's figure (agents/report.py): rolling return curves by hand, what each panel draws,
and a run whose figure fails still finishing with its summary."""

import json
from pathlib import Path

import numpy as np

import train
from agents.config import load_config
from agents.report import MAX_POINTS, return_curves, returns_figure, write_returns_plot

ROOT = Path(__file__).resolve().parents[2]
# (global_step, task, return, length) in the order the episodes ended
LOG = [(10, 0, 1.0, 3), (12, 1, -2.0, 4), (20, 0, 3.0, 5), (40, 0, 5.0, 2), (41, 1, 4.0, 9)]


def test_return_curves_are_the_mean_of_each_tasks_last_episodes():
    (s0, m0), (s1, m1), (s2, m2) = return_curves(LOG, num_tasks=3, window=2)
    assert s0.tolist() == [10, 20, 40] and m0.tolist() == [1.0, 2.0, 4.0]  # (1), (1+3)/2, (3+5)/2
    assert s1.tolist() == [12, 41] and m1.tolist() == [-2.0, 1.0]
    assert s2.size == 0 and m2.size == 0  # no finished episode
    (_, whole), _, _ = return_curves(LOG, num_tasks=3, window=100)
    assert whole.tolist() == [1.0, 2.0, 3.0]  # fewer than the window: the mean so far


def test_each_panel_draws_its_curve_and_the_final_evaluations():
    summary = {
        "agent": "distral_kl_2col",
        "total_steps": 50,
        "tasks": {"a": {"mean_return": 4.5}, "b": {"mean_return": None}},
        "pi0_tasks": {"a": {"mean_return": 0.5}, "b": {"mean_return": 1.5}},
    }
    fig = returns_figure(["a", "b"], LOG, summary, window=2)
    a, b = fig.axes[:2]
    assert [ax.get_title() for ax in (a, b)] == ["a", "b"]
    curve, task_eval, pi0_eval = a.get_lines()
    assert curve.get_xdata().tolist() == [10, 20, 40]
    assert curve.get_ydata().tolist() == [1.0, 2.0, 4.0]
    assert (task_eval.get_xdata().tolist(), task_eval.get_ydata().tolist()) == ([50], [4.5])
    assert (pi0_eval.get_xdata().tolist(), pi0_eval.get_ydata().tolist()) == ([50], [0.5])
    assert [line.get_label() for line in b.get_lines()] == [
        "training (last 2 episodes)",
        "eval: pi0",  # the task policy finished no evaluation episode: no point
    ]
    assert all(not ax.axison for ax in fig.axes[2:])  # the unused cell of the 2-column grid


def test_a_long_run_draws_at_most_max_points_including_the_last():
    log = [(i, 0, float(i), 1) for i in range(3 * MAX_POINTS + 7)]
    (curve,) = returns_figure(["t"], log, {"total_steps": len(log)}).axes[0].get_lines()
    xs = curve.get_xdata()
    assert len(xs) == MAX_POINTS and xs[0] == 0 and xs[-1] == len(log) - 1
    assert np.all(np.diff(xs) > 0)


def test_the_png_is_written_whole(tmp_path):
    path = write_returns_plot(tmp_path / "returns.png", ["a", "b"], LOG, {"total_steps": 50})
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["returns.png"]  # no temporary file left


def _tiny_run(tmp_path: Path):
    cfg = load_config(
        str(ROOT / "configs" / "gridworld_a2c.yaml"),
        ["total_steps=400", "env.num_envs_per_task=1", "eval.episodes=1", "progress=false"],
    )
    return train.build(cfg, tmp_path / "run")


def test_a_run_ends_with_its_figure(tmp_path):
    runner = _tiny_run(tmp_path)
    summary = runner.run(handle_signals=False)
    png = (tmp_path / "run" / "returns.png").read_bytes()
    assert png.startswith(b"\x89PNG") and summary["total_steps"] >= 400


def test_a_figure_that_fails_is_a_warning_not_a_failed_run(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr("agents.report.returns_figure", broken)
    runner = _tiny_run(tmp_path)
    summary = runner.run(handle_signals=False)
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert not (run_dir / "returns.png").exists()
    assert "warning: returns.png not written: no display\n" in capsys.readouterr().err
