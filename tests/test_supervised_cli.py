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
    # toy2d ignores the architecture; its summary named the schema's default all the same
    assert summary["architecture"] == (None if name == "toy2d" else "hard_sharing")
    saved = load_supervised(run_dir / "config.yaml")
    assert saved.benchmark.name == name
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "weighting"} <= set(state)
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    assert (run_dir / "training.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert "warning" not in proc.stderr


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("supervised.lr=-1", "supervised.lr=-1.0 is out of range"),
        ("supervised.lr=inf", "supervised.lr=inf is out of range; it must be a finite number"),
        ("supervised.benchmark.name=mnist", "choose one of: gradnorm_toy, two_digits, toy2d"),
        ("supervised.weighting.name=nope", "supervised.weighting.name='nope' is not valid"),
        ("supervised.architecture.name=nope", "supervised.architecture.name='nope'"),
        ("supervised.epochs=abc", "supervised.epochs"),
        ("supervised.checkpoint_every=0", "supervised.checkpoint_every=0 is out of range"),
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
        (
            "supervised.weighting.name=great",  # its classifier's input size has no default
            "error: supervised.weighting: weighting 'great' needs feature_dim=... (no default); "
            "set supervised.weighting.kwargs.feature_dim=<value>",
        ),
        (
            "supervised.weighting.kwargs.alhpa=1",
            "weighting 'gradnorm' has no option 'alhpa'; its options: alpha, lr,",
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


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            ["supervised.weighting.kwargs.feature_dim=7"],
            "supervised.weighting.kwargs.feature_dim=7 is not the width of the shared "
            "representation of hard_sharing, 64; set supervised.weighting.kwargs.feature_dim=64",
        ),
        (  # MMoE's z is every expert's output side by side: num_experts * hidden[-1]
            ["supervised.architecture.name=mmoe", "supervised.weighting.kwargs.feature_dim=64"],
            "supervised.weighting.kwargs.feature_dim=256",
        ),
        (
            ["supervised.weighting.name=famo", "supervised.weighting.kwargs.min_losses=[1.0]"],
            "supervised.weighting: min_losses needs one bound per task (2), got 1",
        ),
        (
            ["supervised.architecture.name=mmoe", "supervised.architecture.kwargs.num_experts=0"],
            "supervised.architecture: num_experts must be >= 1, got 0",
        ),
        (
            [
                "supervised.architecture.name=sluice",
                "supervised.architecture.hidden=[16,16]",
                "supervised.architecture.kwargs.num_subspaces=3",
            ],
            "supervised.architecture: hidden width 16 is not divisible by num_subspaces 3",
        ),
        (
            [
                "supervised.architecture.name=sluice",
                "supervised.architecture.hidden=[16,16]",
                "supervised.architecture.kwargs.num_subspaces=0",
            ],
            "supervised.architecture: num_subspaces must be >= 1, got 0",
        ),
        (  # no shared representation to measure: the Trainer's refusal, not a crash in features()
            ["supervised.architecture.name=soft_sharing"],
            "error: supervised.representation: GREAT needs the shared representation: use a model "
            "with one (hard_sharing, mmoe; SoftSharing has none)",
        ),
    ],
)
def test_options_that_failed_mid_run_exit_2(tmp_path, overrides, needle, capsys):
    # each used to start training and end in a traceback (exit 1) at the first step, or to fail
    # inside torch while building
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "two_digits.yaml"), f"supervised.run_dir={run_dir}"]
    if not any(o.startswith("supervised.weighting.") for o in overrides):
        overrides = [*overrides, "supervised.weighting.kwargs.feature_dim=64"]
    if not any(o.startswith("supervised.weighting.name=") for o in overrides):
        overrides = ["supervised.weighting.name=great", *overrides]
    args += [*TINY["two_digits"], *overrides]
    assert train.main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines
    assert not run_dir.exists()


@pytest.mark.parametrize("start", range(5))
def test_famo_runs_on_toy2d_from_every_start(tmp_path, start):
    # the toy's losses go below 0, FAMO's default lower bound: a ValueError traceback mid-run
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    args += ["supervised.weighting.name=famo", f"supervised.benchmark.start={start}"]
    assert train.main([*args, "supervised.epochs=20", "supervised.progress=false"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert all(torch.isfinite(torch.tensor(summary["losses"])))


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
    from agents.supervised_run import claim_run_dir as _claim_run_dir

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
    for key in ("model", "weighting", "history"):  # the history: the figure's whole run
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            if isinstance(a[key][name], torch.Tensor):
                assert torch.equal(a[key][name], b[key][name]), (key, name)
            elif key == "history":
                for part, value in a[key][name].items():
                    assert torch.equal(torch.as_tensor(value), torch.as_tensor(b[key][name][part]))
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


def _stop_in_epoch(monkeypatch, signum: int, at_epoch: int, times: int = 1) -> None:
    """Make the Trainer send itself ``signum`` (``times`` times) during epoch ``at_epoch``."""
    import os

    from mtrl.trainer import Trainer

    real = Trainer.train_epoch

    def train_epoch(self, bar=None):
        if self.epoch == at_epoch:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(self, bar)

    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_finishes_the_epoch_checkpoints_and_resumes(
    tmp_path, monkeypatch, capsys, signame, code
):
    import signal

    signum = getattr(signal, signame)
    _stop_in_epoch(monkeypatch, signum, at_epoch=1)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    before = signal.getsignal(signum)
    assert train.main([*args, "supervised.epochs=5", "supervised.progress=false"]) == code
    assert signal.getsignal(signum) is before  # the previous handler is back
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"{signame}: finishing the current epoch and writing its checkpoint (send it again to "
        "exit at once)",
        f"interrupted by {signame} at step 2; checkpoint written; continue with: "
        f"python train.py --resume {run_dir}",
    ]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2
    assert not (run_dir / "summary.json").exists()  # the run is not finished
    monkeypatch.undo()
    assert train.main(["--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == 5


@pytest.mark.parametrize("every", [1, 100])
def test_second_signal_stops_at_once(tmp_path, monkeypatch, capsys, every):
    import signal

    _stop_in_epoch(monkeypatch, signal.SIGTERM, at_epoch=2, times=2)
    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    args += [f"supervised.checkpoint_every={every}", "supervised.progress=false"]
    assert train.main([*args, "supervised.epochs=5"]) == 143
    err = capsys.readouterr().err.strip().splitlines()
    if every == 100:  # epochs 1 and 2 finished, neither was due a checkpoint
        assert (
            err[-1] == "interrupted by SIGTERM at step 2, before any checkpoint was written; "
            "start again"
        )
        assert not (run_dir / "checkpoints" / "last.pt").exists()
        return
    assert err[-1] == (
        "interrupted by SIGTERM at step 2; continue from the last checkpoint "
        f"with: python train.py --resume {run_dir}"
    )
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 2


def test_signal_before_training_leaves_nothing(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import agents.supervised as sup

    real = sup.build_trainer

    def build(cfg, run_dir):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(cfg, run_dir)

    monkeypatch.setattr(sup, "build_trainer", build)
    run_dir = tmp_path / "new" / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    assert train.main(args) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["interrupted by SIGTERM before training started; nothing was written"]
    assert list(tmp_path.iterdir()) == []  # the directories it had created are gone


@pytest.mark.parametrize(("signame", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_background_run_stops_on_kill(tmp_path, signame, code):
    # A shell script's background job inherits SIGINT ignored; Python then installs no handler
    # of its own, and `kill -INT` used to be ignored (the run went on to the end).
    import signal
    import time

    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "--config",
        str(CONFIGS / "gradnorm_toy.yaml"),
        f"supervised.run_dir={run_dir}",
        "supervised.epochs=100000",
        "supervised.progress=false",
        *TINY["gradnorm_toy"],
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.poll()
            time.sleep(0.1)
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted by {signame} at step ")
    assert last.endswith(f"checkpoint written; continue with: python train.py --resume {run_dir}")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == int(last.split(" at step ")[1].split(";")[0])
    epochs = state["epoch"] + 1
    assert train.main(["--resume", str(run_dir), f"supervised.epochs={epochs}"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["epochs"] == epochs


@pytest.fixture
def immutable_dir(tmp_path):
    """An empty directory even root cannot write in (chattr +i); skipped where unsupported."""
    import shutil

    d = tmp_path / "ro"
    d.mkdir()
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(d)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    yield d
    subprocess.run([chattr, "-i", str(d)], check=True)


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_impossible_run_dir_exits_2(tmp_path, capsys, where):
    # used to end in a traceback (exit 1): NotADirectoryError / FileNotFoundError
    (tmp_path / "afile").write_text("x")
    run_dir = {
        "file": tmp_path / "afile",
        "under_file": tmp_path / "afile" / "x",
        "proc": Path("/proc/nope/x"),
    }[where]
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    assert train.main(args) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: supervised.run_dir={str(run_dir)!r} ")
    assert "choose a" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert (tmp_path / "afile").read_text() == "x"


def test_unwritable_run_dir_exits_2_and_creates_nothing(immutable_dir, capsys):
    for run_dir in (immutable_dir / "x", immutable_dir / "x" / "y", immutable_dir):
        args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
        assert train.main(args) == 2
        line = _one_error_line(capsys)
        problem = "is not writable" if run_dir == immutable_dir else "cannot be created"
        assert line.startswith(f"error: supervised.run_dir={str(run_dir)!r} {problem}: ")
        assert line.endswith("; choose a writable directory")
        assert list(immutable_dir.iterdir()) == []


def test_run_that_fails_to_start_removes_the_directories_it_created(tmp_path, capsys):
    run_dir = tmp_path / "a" / "b" / "run"
    args = [
        "--config",
        str(CONFIGS / "gradnorm_toy.yaml"),
        f"supervised.run_dir={run_dir}",
        "supervised.weighting.kwargs.alpha=abc",  # found while building, after the mkdir
    ]
    assert train.main(args) == 2
    assert "alpha='abc'" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    empty = tmp_path / "empty"  # a directory that was there before is kept
    empty.mkdir()
    args[2] = f"supervised.run_dir={empty}"
    assert train.main(args) == 2
    assert empty.is_dir() and list(empty.iterdir()) == []


def _tiny_run(run_dir: Path, *extra: str) -> None:
    args = ["--config", str(CONFIGS / "gradnorm_toy.yaml"), f"supervised.run_dir={run_dir}"]
    small = [*TINY["gradnorm_toy"], "supervised.progress=false", "supervised.epochs=1"]
    assert train.main([*args, *small, *extra]) == 0


def test_resume_refuses_a_config_that_differs_from_the_checkpoint(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _tiny_run(a)
    _tiny_run(b, "supervised.lr=0.01")
    state = torch.load(a / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["lr"] == 0.001 and state["config"]["benchmark"]["n_train"] == 200
    capsys.readouterr()
    # another run's checkpoint (same benchmark, other lr) copied in: used to resume silently
    (a / "checkpoints" / "last.pt").write_bytes((b / "checkpoints" / "last.pt").read_bytes())
    files = {p: p.read_bytes() for p in a.rglob("*") if p.is_file()}
    assert train.main(["--resume", str(a), "supervised.epochs=2"]) == 2
    line = _one_error_line(capsys)
    assert line == (
        f"error: config.yaml in {str(a)!r} differs from its checkpoint in supervised.lr; the "
        "checkpoint is from another run or config.yaml was edited (to change them, start a new run)"
    )
    assert {p: p.read_bytes() for p in a.rglob("*") if p.is_file()} == files  # nothing changed
    # config.yaml edited by hand
    text = (b / "config.yaml").read_text()
    assert "lr: 0.01\n" in text
    (b / "config.yaml").write_text(text.replace("lr: 0.01\n", "lr: 0.05\n"))
    assert train.main(["--resume", str(b), "supervised.epochs=2"]) == 2
    assert "differs from its checkpoint in supervised.lr;" in _one_error_line(capsys)
    # what a resume may change (here epochs, by hand) is not a mismatch
    (b / "config.yaml").write_text(text.replace("epochs: 1\n", "epochs: 2\n"))
    assert train.main(["--resume", str(b)]) == 0
    assert json.loads((b / "summary.json").read_text())["epochs"] == 2


def test_resume_of_a_checkpoint_without_a_saved_config(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    ckpt = run_dir / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["config"]  # as written before configs were saved in checkpoints
    torch.save(state, ckpt)
    capsys.readouterr()
    assert train.main(["--resume", str(run_dir), "supervised.epochs=2"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("note: ") and "predates saved configs" in err[0]
    assert torch.load(ckpt, weights_only=True)["config"]["epochs"] == 2


def test_a_run_first_says_what_it_trains_and_where(tmp_path, capsys):
    # RL runs did; a supervised run printed nothing until its results
    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    what = f"gradnorm on gradnorm_toy (sigma1, sigma100) for 1 epoch in {run_dir}"
    assert capsys.readouterr().out.splitlines()[0] == (
        f"training: {what}; Ctrl-C stops after the current epoch"
    )
    assert train.main(["--resume", str(run_dir), "supervised.epochs=3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        f"resuming at epoch 1: {what.replace('1 epoch', '3 epochs')}; Ctrl-C stops after the "
        "current epoch"
    )


def test_resume_with_nothing_left_reports_no_speed(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _tiny_run(run_dir, "supervised.epochs=2")
    assert "steps/s)" in capsys.readouterr().out
    assert train.main(["--resume", str(run_dir)]) == 0  # used to print e.g. 608592 steps/s
    first, written = capsys.readouterr().out.splitlines()[:2]
    assert first == (
        f"already finished at epoch 2: evaluating gradnorm on gradnorm_toy (sigma1, sigma100) in "
        f"{run_dir}"
    )
    assert written == f"run written to {run_dir} (steps/s n/a: nothing was left to train)"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps_per_s"] is None and summary["session_steps"] == 0
    assert summary["steps"] == 4 and summary["epochs"] == 2
    assert train.main(["--resume", str(run_dir), "supervised.epochs=3"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["session_steps"] == 2 and summary["steps"] == 6
    assert summary["steps_per_s"] == pytest.approx(2 / summary["seconds"])
    capsys.readouterr()
    # fewer epochs than the checkpoint has: config.yaml would misstate the run
    assert train.main(["--resume", str(run_dir), "supervised.epochs=1"]) == 2
    assert "supervised.epochs=1 is below the 3 epochs" in _one_error_line(capsys)


def test_unwritable_run_dir_on_resume_exits_2(tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    capsys.readouterr()
    chattr = shutil.which("chattr")
    if (
        chattr is None
        or subprocess.run([chattr, "+i", str(run_dir)], capture_output=True).returncode
    ):
        pytest.skip("chattr +i is not available here")
    try:
        assert train.main(["--resume", str(run_dir), "supervised.epochs=2"]) == 2
    finally:
        subprocess.run([chattr, "-i", str(run_dir)], check=True)
    assert "cannot be written to: Operation not permitted" in _one_error_line(capsys)


# ------------------------------------------------------------- every field reaches the Trainer
def _build(config: str, *overrides: str):
    from agents.supervised import build_trainer

    cfg = load_supervised(CONFIGS / config, ["supervised.progress=false", *overrides])
    return build_trainer(cfg, None)


def test_optimisation_fields_reach_the_trainer():
    threads = torch.get_num_threads()
    try:
        t = _build(
            "two_digits.yaml",
            "supervised.benchmark.n_train=32",
            "supervised.benchmark.n_test=8",
            "supervised.optimizer=sgd",
            "supervised.lr=0.05",
            "supervised.weight_decay=0.01",
            "supervised.grad_clip=2.5",
            "supervised.log_every=7",
            "supervised.batch_size=9",
            "supervised.epochs=3",
            "supervised.representation=off",
            "supervised.weighting.name=famo",
            "supervised.famo_update=next_batch",
            "supervised.torch_threads=2",
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert type(t.optimizer) is torch.optim.SGD
    assert t.optimizer.param_groups[0]["lr"] == 0.05
    assert t.optimizer.param_groups[0]["weight_decay"] == 0.01
    assert (t.grad_clip, t.log_every, t.batch_size, t.epochs) == (2.5, 7, 9, 3)
    assert t.use_features is False and t.famo_update == "next_batch"
    on = _build(
        "two_digits.yaml", "supervised.benchmark.n_train=32", "supervised.representation=on"
    )
    assert type(on.optimizer) is torch.optim.Adam and on.use_features is True
    assert on.optimizer.param_groups[0]["weight_decay"] == 0.0


def test_famo_on_toy2d_gets_the_lower_bounds_of_the_scaled_losses():
    # toy2d's losses go below FAMO's default bound 0; L1's bound scales with benchmark.scale
    famo = ["supervised.weighting.name=famo"]
    t = _build("toy2d.yaml", *famo, "supervised.benchmark.scale=3")
    assert t.weighting.min_losses.tolist() == [-60.0, -20.0]
    given = _build("toy2d.yaml", *famo, "supervised.weighting.kwargs.min_losses=[-5,-6]")
    assert given.weighting.min_losses.tolist() == [-5.0, -6.0]


def test_a_warning_while_building_the_trainer_is_passed_on(monkeypatch):
    # the build records warnings to turn the no-shared-parameters one into a note line: any
    # other warning must still reach the user, not be swallowed with the record
    import warnings

    from mtrl import trainer

    init = trainer.Trainer.__init__

    def warning_init(self, *args, **kwargs):
        warnings.warn("a warning from the build", UserWarning, stacklevel=2)
        init(self, *args, **kwargs)

    monkeypatch.setattr(trainer.Trainer, "__init__", warning_init)
    with pytest.warns(UserWarning, match="a warning from the build"):
        _build("toy2d.yaml")


def test_benchmark_fields_reach_the_data_and_the_model():
    from mtrl.data import STARTING_POINTS, make_gradnorm_toy, make_two_digits

    t = _build(
        "two_digits.yaml",
        "supervised.benchmark.n_train=32",
        "supervised.benchmark.n_test=8",
        "supervised.benchmark.shift=3",
        "supervised.benchmark.data_seed=5",
    )
    d = make_two_digits(32, 8, seed=5, shift=3)
    assert torch.equal(t.train_data[0], d["x_train"].flatten(1))
    assert torch.equal(t.test_data[1], d["y_test"])
    g = _build(
        "gradnorm_toy.yaml", "supervised.benchmark.n_train=16", "supervised.benchmark.data_seed=4"
    )
    assert torch.equal(
        g.train_data[1], make_gradnorm_toy(2, n_train=16, n_test=500, seed=4)["y_train"]
    )
    toy = _build("toy2d.yaml", "supervised.benchmark.start=3", "supervised.benchmark.scale=0.5")
    assert toy.model.scale == 0.5 and torch.equal(toy.model.point.data, STARTING_POINTS[3].float())
    assert toy.batch_size == 1  # one dummy sample, whatever batch_size says


def test_seed_sets_the_initial_model():
    def params(seed):
        t = _build(
            "gradnorm_toy.yaml", "supervised.benchmark.n_train=16", f"supervised.seed={seed}"
        )
        return torch.cat([p.detach().flatten() for p in t.model.parameters()])

    assert torch.equal(params(3), params(3)) and not torch.equal(params(3), params(4))


def _bare(tmp_path: Path, text: str = "supervised: {}\n") -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("override", "ok"),
    [
        ("benchmark.shift=0", False),
        ("benchmark.shift=1", True),
        ("benchmark.shift=8", True),
        ("benchmark.shift=9", False),
        ("benchmark.start=0", True),
        ("benchmark.start=4", True),
        ("benchmark.start=5", False),  # STARTING_POINTS has five entries
        ("benchmark.start=-1", False),
        ("architecture.hidden=[]", False),
        ("architecture.hidden=[1]", True),
        ("architecture.hidden=[4,0]", False),
        ("seed=0", True),
        (f"seed={2**31 - 2**20 - 1}", True),
        (f"seed={2**31 - 2**20}", False),
        ("seed=-1", False),
        ("weight_decay=0", True),
        ("weight_decay=-0.1", False),
        ("max_nonfinite_steps=0", True),  # 0 = never stop
        ("max_nonfinite_steps=-1", False),
    ],
)
def test_supervised_range_edges(tmp_path, override, ok):
    # a hand-written table: the edges of the accepted ranges, one value either side
    path = _bare(tmp_path)
    if ok:
        load_supervised(path, [f"supervised.{override}"])
    else:
        with pytest.raises(ConfigError, match=r"is out of range"):
            load_supervised(path, [f"supervised.{override}"])


def test_supervised_defaults_are_the_documented_ones(tmp_path):
    cfg = load_supervised(_bare(tmp_path))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.optimizer) == (10, 64, 1e-3, "adam")
    assert cfg.max_nonfinite_steps == 10
    assert (cfg.benchmark.name, cfg.weighting.name, cfg.architecture.name) == (
        "two_digits",
        "equal",
        "hard_sharing",
    )


def test_switching_architecture_drops_the_files_architecture_kwargs(tmp_path):
    text = "supervised:\n  architecture:\n    name: mmoe\n    kwargs: {num_experts: 3}\n"
    path = _bare(tmp_path, text)
    assert load_supervised(path).architecture.kwargs == {"num_experts": 3}
    cfg = load_supervised(path, ["supervised.architecture.name=hard_sharing"])
    assert cfg.architecture.name == "hard_sharing" and cfg.architecture.kwargs == {}


def test_malformed_yaml_is_not_taken_for_a_supervised_file(tmp_path):
    path = _bare(tmp_path, "supervised: [unclosed\n")
    assert not is_supervised_file(path)
    assert not is_supervised_file(_bare(tmp_path, "- a list\n"))
    assert is_supervised_file(_bare(tmp_path))


def _files(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_resume_refuses_one_epoch_fewer_than_the_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _tiny_run(run_dir, "supervised.epochs=2")
    capsys.readouterr()
    files = _files(run_dir)
    assert train.main(["--resume", str(run_dir), "supervised.epochs=1"]) == 2
    assert _one_error_line(capsys) == (
        "error: supervised.epochs=1 is below the 2 epochs the checkpoint has finished; "
        "pass supervised.epochs=2 or more"
    )
    assert _files(run_dir) == files


def test_resume_with_an_unwritable_checkpoints_directory_exits_2(tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    capsys.readouterr()
    ckpts = run_dir / "checkpoints"
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(ckpts)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        files = _files(run_dir)
        assert train.main(["--resume", str(run_dir), "supervised.epochs=2"]) == 2
        assert _files(run_dir) == files  # refused before training: nothing half-written
    finally:
        subprocess.run([chattr, "-i", str(ckpts)], check=True)
    assert "cannot be written to: Operation not permitted" in _one_error_line(capsys)


def test_toy2d_summary_losses_use_the_benchmark_scale(tmp_path):
    from mtrl.data import toy_losses

    run_dir = tmp_path / "run"
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={run_dir}"]
    extra = ["supervised.epochs=2", "supervised.benchmark.scale=0.1", "supervised.progress=false"]
    assert train.main([*args, *extra]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    point = torch.tensor(summary["point"], dtype=torch.float64)
    assert summary["losses"] == pytest.approx(toy_losses(point, 0.1).tolist())
    assert summary["losses"] != pytest.approx(toy_losses(point, 1.0).tolist())


def test_resume_may_change_how_a_run_runs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    capsys.readouterr()
    safe = ["supervised.progress=true", "supervised.log_every=3", "supervised.device=cpu"]
    safe.append("supervised.checkpoint_every=4")
    assert train.main(["--resume", str(run_dir), "supervised.epochs=2", *safe]) == 0
    saved = load_supervised(run_dir / "config.yaml")
    assert (saved.epochs, saved.progress, saved.log_every, saved.device) == (2, True, 3, "cpu")
    assert saved.checkpoint_every == 4


def test_run_dir_that_is_a_file_is_named_as_such(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    args = ["--config", str(CONFIGS / "toy2d.yaml"), f"supervised.run_dir={tmp_path / 'afile'}"]
    assert train.main(args) == 2
    assert _one_error_line(capsys) == (
        f"error: supervised.run_dir={str(tmp_path / 'afile')!r} exists and is not a directory; "
        "choose a new run_dir"
    )


def test_run_dir_that_cannot_be_written_removes_the_directories_it_created(tmp_path, monkeypatch):
    import agents.supervised_run as sr

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sr, "check_writable", refuse)
    run_dir = tmp_path / "a" / "b" / "run"
    with pytest.raises(ConfigError, match=r"cannot be created: Permission denied; choose a writ"):
        sr.make_run_dir(run_dir)
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_config_is_refused_for_supervised_runs_too(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _tiny_run(run_dir)
    capsys.readouterr()
    files = _files(run_dir)
    new = tmp_path / "new"
    for config in (CONFIGS / "toy2d.yaml", ROOT / "configs" / "gridworld_a2c.yaml"):
        args = ["--resume", str(run_dir), "--config", str(config), "supervised.epochs=2"]
        assert train.main([*args, f"supervised.run_dir={new}", "supervised.progress=false"]) == 2
        line = _one_error_line(capsys)
        assert line == "error: --resume takes the config from the checkpoint; drop --config"
    assert _files(run_dir) == files and not new.exists()


def test_a_diverging_run_exits_3_with_one_warning_and_one_error(tmp_path, capsys):
    # used to train on NaN to the end and exit 0 with "loss nan" for every task
    run_dir = tmp_path / "run"
    args = [
        "--config",
        str(CONFIGS / "gradnorm_toy.yaml"),
        f"supervised.run_dir={run_dir}",
        "supervised.optimizer=sgd",
        "supervised.lr=1e4",
        "supervised.max_nonfinite_steps=4",
        "supervised.progress=false",
    ]
    assert train.main(args) == 3
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("warning: non-finite loss or gradient at step ")
    assert lines[1].startswith("error: training diverged: 4 steps in a row had a non-finite")
    assert captured.out.startswith("training: gradnorm on gradnorm_toy (sigma1, sigma100) for ")
    assert captured.out.count("\n") == 1  # the start line only: no results
    assert not (run_dir / "summary.json").exists()


def test_an_automatic_run_directory_is_recorded_in_its_config(tmp_path, monkeypatch, capsys):
    # config.yaml and the checkpoint's config said run_dir: '' for an automatically named run
    monkeypatch.chdir(tmp_path)
    args = [
        "--config",
        str(CONFIGS / "toy2d.yaml"),
        "supervised.epochs=3",
        "supervised.progress=false",
    ]
    assert train.main(args) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    expected = str(Path("runs") / run_dir.name)
    assert load_supervised(run_dir / "config.yaml").run_dir == expected
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["config"]["run_dir"] == expected
    assert train.main(["--resume", str(run_dir), "supervised.epochs=4"]) == 0  # still resumes


def test_automatic_run_that_fails_to_start_leaves_no_runs_directory(tmp_path, monkeypatch, capsys):
    # the automatic run directory was removed, but the runs/ it had created stayed behind
    monkeypatch.chdir(tmp_path)
    args = [
        "--config",
        str(CONFIGS / "gradnorm_toy.yaml"),
        "supervised.weighting.kwargs.alpha=abc",  # found while building, after the mkdir
    ]
    assert train.main(args) == 2
    assert "alpha='abc'" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "runs").mkdir()  # a runs/ that was there before is kept
    assert train.main(args) == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "runs"]
    assert list((tmp_path / "runs").iterdir()) == []


def test_soft_sharing_with_gradnorm_exits_2_and_with_mgda_notes_equal_weighting(tmp_path):
    base = ["--config", str(CONFIGS / "two_digits.yaml"), *TINY["two_digits"]]
    base += ["supervised.architecture.name=soft_sharing", "supervised.epochs=1"]
    proc = _run(*base, "supervised.weighting.name=gradnorm", f"supervised.run_dir={tmp_path / 'g'}")
    assert proc.returncode == 2 and not (tmp_path / "g").exists()
    assert proc.stderr.strip().splitlines() == [
        "error: supervised.weighting: GradNorm balances gradient norms on a shared layer and "
        "SoftSharing shares no parameters; use an architecture with shared parameters or a loss "
        "weighting"
    ]
    proc = _run(*base, "supervised.weighting.name=mgda", "supervised.progress=false",
                f"supervised.run_dir={tmp_path / 'm'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[0] == (
        "note: supervised.weighting.name='mgda': MGDA combines the tasks' gradients on shared "
        "parameters; SoftSharing shares none, so every task keeps its own plain gradient, as with "
        "equal weighting"
    )


def test_help_lists_the_supervised_fields_with_their_defaults():
    # `train.py --help` listed only the RL fields; the supervised defaults were written nowhere
    from agents.config_schema import help_text
    from agents.supervised_config import SupervisedConfig

    rows = {
        line.split()[0]: line.split()
        for line in help_text(SupervisedConfig, "supervised.").splitlines()
    }
    assert rows["supervised.epochs"][1:3] == ["int", "10"]
    assert rows["supervised.benchmark.n_train"][1:3] == ["int", "2000"]
    assert rows["supervised.architecture.hidden"][1:4] == ["list[int]", "[64,", "64]"]
    assert "supervised.benchmark" not in rows  # sections are expanded, not listed
    assert help_text(SupervisedConfig, "supervised.") in train._parser().format_help()
