"""bench/atari_learning.py's report: binned returns and the table, by hand on a tiny event log."""

import math

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from bench.atari_learning import binned, main, read_run, table


def test_binned_means_close_the_last_bin():
    pts = np.array([[0, 1.0], [4, 3.0], [5, 10.0], [9, 2.0], [10, 4.0]])
    means = binned(pts, np.array([0.0, 5.0, 10.0]))
    np.testing.assert_allclose(means, [2.0, 16.0 / 3.0])  # step 10 joins the last bin
    assert math.isnan(binned(pts[:2], np.array([0.0, 5.0, 10.0]))[1])  # an empty bin is NaN


def test_report_from_a_run_log(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    for step, ret in [(100, -21.0), (200, -19.0), (900, -15.0), (1000, -13.0)]:
        writer.add_scalar("task/pong/return", ret, step)
    writer.add_scalar("task/breakout/return", 2.0, 300)
    writer.add_scalar("task/breakout/return", 31.7, 1000)
    for step in (500, 1000):
        writer.add_scalar("losses/entropy", 2.5, step)
    writer.close()
    games, curves = read_run(tmp_path)
    assert sorted(games) == ["breakout", "pong"] and list(curves) == ["losses/entropy"]
    text, edges, means = table(games, bins=2)
    np.testing.assert_allclose(edges, [0.0, 500.0, 1000.0])
    np.testing.assert_allclose(means["pong"], [-20.0, -14.0])
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines()[2:]}
    # Pong: random -20.7, human 14.6: (-14 + 20.7) / 35.3; Breakout: (31.7 - 1.7) / 28.8
    assert rows["pong"].endswith(f"| -20.0 | -14.0 | {6.7 / 35.3:.3f} | 4 |")
    assert rows["breakout"].endswith(f"| 2.0 | 31.7 | {30.0 / 28.8:.3f} | 2 |")
    png = tmp_path / "out.png"
    assert main(["--from-run", str(tmp_path), "--bins", "2", "--png", str(png)]) == 0
    assert png.stat().st_size > 0


def test_a_directory_without_returns_is_one_error_line(tmp_path, capsys):
    png = tmp_path / "x.png"
    for run, message in [(tmp_path / "nothing", "not found"), (tmp_path, "no task/<game>/return")]:
        assert main(["--from-run", str(run), "--png", str(png)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
        assert not png.exists()


def test_trains_the_given_config_then_reports_it(tmp_path, capsys):
    """``--config`` trains that preset (not the default Atari job) and the report reads its log."""
    run, png = tmp_path / "run", tmp_path / "out.png"
    argv = ["--config", "configs/gridworld_a2c.yaml", "--steps", "4000", "--run-dir", str(run)]
    assert main([*argv, "--bins", "2", "--png", str(png), "eval.episodes=0"]) == 0
    assert "name: a2c_multitask" in (run / "config.yaml").read_text()
    out = capsys.readouterr().out.splitlines()
    rows = out[out.index("|---|---:|---:|---:|---:|---:|---:|") + 1 : -1]
    assert sorted(r.split(" | ")[0] for r in rows) == ["| 0", "| 1", "| 2", "| 3"]  # 4 goals
    assert all(r.split(" | ")[1:3] == ["n/a", "n/a"] for r in rows)  # no Atari references
    assert png.stat().st_size > 0
