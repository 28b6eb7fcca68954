"""``train.py --config configs/supervised/<name>.yaml``: smoke runs and bad input -> exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from agents.config import ConfigError
from agents.supervised_config import is_supervised_file, load_supervised

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "supervised"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


TINY = {
    "gradnorm_toy": ["supervised.benchmark.n_train=200", "supervised.benchmark.n_test=50"],
    "two_digits": ["supervised.benchmark.n_train=256", "supervised.benchmark.n_test=64"],
    "toy2d": ["supervised.epochs=20"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_smoke_run_writes_the_run_directory(tmp_path, name):
    run_dir = tmp_path / "run"
    extra = [] if name == "toy2d" else ["supervised.epochs=2"]
    proc = _run(
        "--config",
        str(CONFIGS / f"{name}.yaml"),
        f"supervised.run_dir={run_dir}",
        "supervised.progress=false",
        "supervised.log_every=1",
        *TINY[name],
        *extra,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["benchmark"] == name and summary["steps"] > 0
    assert summary["tasks"] and all("loss" in s for s in summary["tasks"].values())
    if name == "two_digits":
        assert all(0.0 <= s["accuracy"] <= 1.0 for s in summary["tasks"].values())
    if name == "toy2d":
        assert len(summary["point"]) == 2 and summary["pareto_stationarity"] >= 0
    saved = load_supervised(run_dir / "config.yaml")
    assert saved.benchmark.name == name
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "weighting"} <= set(state)
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("supervised.lr=-1", "supervised.lr=-1.0 is out of range"),
        ("supervised.lr=inf", "supervised.lr=inf is out of range; it must be a finite number"),
        ("supervised.benchmark.name=mnist", "choose one of: gradnorm_toy, two_digits, toy2d"),
        ("supervised.weighting.name=nope", "supervised.weighting.name='nope' is not valid"),
        ("supervised.architecture.name=nope", "supervised.architecture.name='nope'"),
        ("supervised.epochs=abc", "supervised.epochs"),
        ("supervised.nokey=1", "unknown config key 'supervised.nokey'"),
        ("supervised.weighting.kwargs.bogus=1", "supervised.weighting:"),
    ],
)
def test_bad_value_exits_2_with_one_line(tmp_path, override, needle, capsys):
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}", override]
    assert train.main(args) == 2  # in-process: the subprocess path is checked once below
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert needle in lines[0]
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("supervised.weighting.kwargs.alpha=abc", "GradNorm: alpha='abc' is str, expected float"),
        (
            "supervised.architecture.kwargs.activation=3",
            "activation=3 is int, expected a Module class",
        ),
    ],
)
def test_option_of_the_wrong_type_exits_2(tmp_path, override, needle, capsys):
    # used to start training and end in a traceback (exit 1) at the first GradNorm step
    run_dir = tmp_path / "run"
    args = [
        "--config",
        str(CONFIGS / "gradnorm_toy.yaml"),
        f"supervised.run_dir={run_dir}",
        override,
    ]
    assert train.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert not run_dir.exists()


def test_bad_value_subprocess_exits_2(tmp_path):
    run_dir = tmp_path / "run"
    proc = _run(
        "--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}", "supervised.lr=0"
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: supervised.lr=0.0 is out of range; it must be > 0"
    ]
    assert not run_dir.exists()


def test_marker_detection_and_loader(tmp_path):
    assert is_supervised_file(CONFIGS / "two_digits.yaml")
    assert not is_supervised_file(ROOT / "configs" / "gridworld_a2c.yaml")
    assert not is_supervised_file(tmp_path / "missing.yaml")
    cfg = load_supervised(CONFIGS / "gradnorm_toy.yaml", ["supervised.weighting.name=dwa"])
    assert cfg.weighting.name == "dwa" and cfg.architecture.hidden == [100, 100, 100, 100]
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_supervised(CONFIGS / "toy2d.yaml", ["epochs"])


def test_existing_run_dir_is_refused(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert (
        train.main(["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={tmp_path}"]) == 2
    )
    assert "already exists" in capsys.readouterr().err


def test_switching_method_on_the_command_line_drops_the_files_kwargs():
    # gradnorm_toy.yaml gives gradnorm kwargs {alpha: 0.12}; they do not apply to equal
    cfg = load_supervised(CONFIGS / "gradnorm_toy.yaml", ["supervised.weighting.name=equal"])
    assert cfg.weighting.name == "equal" and cfg.weighting.kwargs == {}
    kept = load_supervised(CONFIGS / "gradnorm_toy.yaml", [])
    assert kept.weighting.kwargs == {"alpha": 0.12}
    new = load_supervised(
        CONFIGS / "gradnorm_toy.yaml",
        ["supervised.weighting.name=dwa", "supervised.weighting.kwargs.temp=3.0"],
    )
    assert new.weighting.kwargs == {"alpha": 0.12, "temp": 3.0}  # kwargs overridden: kept as given


@pytest.mark.parametrize(("value", "expected"), [("on", "on"), ("off", "off"), ("auto", "auto")])
def test_representation_accepts_yaml_on_off(value, expected):
    cfg = load_supervised(CONFIGS / "toy2d.yaml", [f"supervised.representation={value}"])
    assert cfg.representation == expected


def test_automatic_run_directories_are_never_shared(tmp_path):
    from agents.supervised import _claim_run_dir

    first = _claim_run_dir(tmp_path / "runs" / "x")
    second = _claim_run_dir(tmp_path / "runs" / "x")
    assert first.name == "x" and second.name == "x-2" and first.is_dir() and second.is_dir()


def test_resume_continues_a_supervised_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    base = ["--config", str(CONFIGS / "gradnorm_toy.yaml"), f"supervised.run_dir={run_dir}"]
    small = [*TINY["gradnorm_toy"], "supervised.progress=false"]
    assert train.main([*base, *small, "supervised.epochs=1"]) == 0
    assert train.main(["--resume", str(run_dir), "supervised.epochs=2"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2
    # exactly a straight two-epoch run: model, optimiser, weighting and RNG all came back
    straight = tmp_path / "straight"
    args = ["--config", str(CONFIGS / "gradnorm_toy.yaml"), f"supervised.run_dir={straight}"]
    assert train.main([*args, *small, "supervised.epochs=2"]) == 0
    a = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    for key in ("model", "weighting"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            if isinstance(a[key][name], torch.Tensor):
                assert torch.equal(a[key][name], b[key][name]), (key, name)
    capsys.readouterr()
    # what the checkpoint learned under cannot change (supervised.lr=5 used to be accepted)
    before = (run_dir / "config.yaml").read_text()
    assert train.main(["--resume", str(run_dir), "supervised.lr=5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot change supervised.lr when resuming" in err[0]
    assert (run_dir / "config.yaml").read_text() == before
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert train.main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be loaded" in err[0]


def test_sigterm_stops_with_a_resume_hint(tmp_path, monkeypatch, capsys):
    import os
    import signal
    import time

    import agents.supervised as sup

    def killed(trainer, cfg, run_dir):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(sup, "_execute", killed)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    before = signal.getsignal(signal.SIGTERM)
    assert train.main(args) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"interrupted; continue from the last finished epoch with: python train.py --resume {run_dir}"
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # the previous handler is back
