"""bench/atari_learning.py's report: binned returns and the table, by hand on a tiny event log."""

import math
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from bench.atari_learning import binned, main, read_run, table


def test_binned_means_close_the_last_bin():
    pts = np.array([[0, 1.0], [4, 3.0], [5, 10.0], [9, 2.0], [10, 4.0]])
    means = binned(pts, np.array([0.0, 5.0, 10.0]))
    np.testing.assert_allclose(means, [2.0, 16.0 / 3.0])  # step 10 joins the last bin
    assert math.isnan(binned(pts[:2], np.array([0.0, 5.0, 10.0]))[1])  # an empty bin is NaN
    # points past the edges are in no bin (not lumped into the last one)
    np.testing.assert_allclose(binned(pts, np.array([0.0, 5.0])), [14.0 / 3.0])  # 0, 4, 5


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
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    # an interrupted save leaves the previous figure whole (it was written in place)
    import matplotlib.figure

    def torn(fig, path, **kw):
        Path(path).write_bytes(b"half a png")
        raise KeyboardInterrupt

    before = png.read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(matplotlib.figure.Figure, "savefig", torn)
        with pytest.raises(KeyboardInterrupt):
            main(["--from-run", str(tmp_path), "--bins", "2", "--png", str(png)])
    assert png.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


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


def write_run(run_dir, suite=None, games=("pong",)):
    """A finished run's event log (two returns per game) and, given ``suite``, its config.yaml."""
    writer = SummaryWriter(str(run_dir))
    for game in games:
        writer.add_scalar(f"task/{game}/return", -20.0, 100)
        writer.add_scalar(f"task/{game}/return", -14.0, 1000)
    writer.close()
    if suite is not None:
        (run_dir / "config.yaml").write_text(f"seed: 0\nenv:\n  suite: {suite}\n")


def test_bad_numbers_are_one_error_line_and_no_figure(tmp_path, capsys):
    write_run(tmp_path)
    png = tmp_path / "x.png"
    for flag in ("--bins", "--steps"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--from-run", str(tmp_path), flag, "0", "--png", str(png)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: argument {flag}: must be an integer")
    # --from-run trains nothing: overrides would be silently ignored, so they are refused
    with pytest.raises(SystemExit):
        main(["--from-run", str(tmp_path), "--png", str(png), "seed=1"])
    assert "drop --config" in capsys.readouterr().err
    assert not png.exists()


def test_the_default_figure_and_run_dir_follow_the_config(tmp_path, monkeypatch):
    """configs/atari_a2c.yaml trains into runs/atari_a2c and draws docs/atari_a2c.png, not the
    default job's docs/atari_default.png; --from-run takes the name of the run directory."""
    import bench.atari_learning as al
    import train

    monkeypatch.setattr(al, "ROOT", tmp_path)
    trained = []

    def fake_train(argv):
        run_dir = Path(next(a for a in argv if a.startswith("run_dir=")).split("=", 1)[1])
        run_dir.mkdir(parents=True)
        write_run(run_dir, "atari")
        trained.append((run_dir, argv[:2]))
        return 0

    monkeypatch.setattr(train, "main", fake_train)
    docs, runs = tmp_path / "docs", tmp_path / "runs"
    assert main(["--config", "configs/atari_a2c.yaml", "--bins", "1"]) == 0
    assert trained[-1] == (runs / "atari_a2c", ["--config", "configs/atari_a2c.yaml"])
    assert sorted(p.name for p in docs.iterdir()) == ["atari_a2c.png"]
    assert main(["--bins", "1"]) == 0  # configs/default.yaml
    assert trained[-1][0] == runs / "atari_default"
    assert sorted(p.name for p in docs.iterdir()) == ["atari_a2c.png", "atari_default.png"]

    for png in docs.iterdir():
        png.unlink()
    assert main(["--from-run", str(runs / "atari_a2c"), "--bins", "1"]) == 0
    assert [p.name for p in docs.iterdir()] == ["atari_a2c.png"]
    (runs / "mine").mkdir()
    write_run(runs / "mine")
    assert main(["--from-run", str(runs / "mine"), "--bins", "1"]) == 0
    assert (docs / "atari_mine.png").is_file()
    assert len(trained) == 2


def test_no_atari_references_for_a_minatar_run(tmp_path, capsys):
    """MinAtar games share names with Atari ROMs (asterix, seaquest...): its run's config.yaml
    says minatar, so the reference and human-normalised columns say n/a."""
    games = ("asterix", "seaquest")
    for suite in ("minatar", "atari"):
        run = tmp_path / suite
        run.mkdir()
        write_run(run, suite, games)
        assert main(["--from-run", str(run), "--bins", "1", "--png", str(tmp_path / "x.png")]) == 0
        out = capsys.readouterr().out.splitlines()
        rows = [r.split(" | ") for r in out if r.startswith(("| asterix", "| seaquest"))]
        assert len(rows) == 2
        if suite == "minatar":
            assert all(r[1:3] == ["n/a", "n/a"] and r[5] == "n/a" for r in rows)
        else:  # Asterix: random 210, human 8503.3
            assert rows[0][1:3] == ["210", "8503.3"] and rows[0][5] != "n/a"


def test_report_reads_every_policy_curve_and_heads_the_table_with_bin_widths(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    writer.add_scalar("task/pong/return", -20.0, 100)
    writer.add_scalar("task/pong/return", -10.0, 1000)
    for tag, value in [("losses/kl", 0.01), ("losses/entropy_pi0", 1.5), ("losses/entropy", 2.5)]:
        writer.add_scalar(tag, value, 400)
    writer.add_scalar("losses/value", 9.0, 400)  # not a policy curve
    writer.close()
    games, curves = read_run(tmp_path)
    assert list(curves) == ["losses/entropy", "losses/entropy_pi0", "losses/kl"]
    np.testing.assert_allclose(curves["losses/entropy_pi0"], [[400.0, 1.5]])
    np.testing.assert_allclose(curves["losses/kl"], [[400.0, 0.01]], rtol=1e-6)
    text = table(games, bins=4)[0]
    assert text.splitlines()[0] == (
        "| game | random | human | first 250 steps | last 250 steps | last, human-normalised "
        "| episodes |"
    )


def test_a_run_without_config_yaml_is_atari(tmp_path):
    from bench.atari_learning import run_suite

    assert run_suite(tmp_path) == "atari"
    (tmp_path / "config.yaml").write_text("env:\n  suite: minatar\n")
    assert run_suite(tmp_path) == "minatar"
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match=r"cannot read env\.suite"):
        run_suite(tmp_path)


def test_figure_draws_binned_returns_the_random_score_and_every_curve(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from bench.atari_learning import plot

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    edges = np.array([0.0, 1e6, 2e6])
    means = {"pong": np.array([-20.0, -14.0]), "mygame": np.array([1.0, 2.0])}
    curves = {
        "losses/entropy": np.array([[5e5, 2.5], [2e6, 2.0]]),
        "losses/entropy_pi0": np.array([[5e5, 1.5]]),
        "losses/kl": np.array([[5e5, 0.1]]),
    }
    plot(edges, means, curves, tmp_path / "f.png")
    (fig,) = figures
    pong, mine, terms = fig.axes
    np.testing.assert_allclose(pong.lines[0].get_xydata(), [[0.5, -20.0], [1.5, -14.0]])
    assert [line.get_ydata()[0] for line in pong.lines[1:]] == [-20.7]  # Pong's random score
    assert len(mine.lines) == 1  # no reference for an unknown game
    assert [line.get_label() for line in terms.lines] == ["entropy", "entropy_pi0", "kl"]
    np.testing.assert_allclose(terms.lines[0].get_xydata(), [[0.5, 2.5], [2.0, 2.0]])
    plt.close(fig)
