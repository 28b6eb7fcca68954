"""Bad input to the bench scripts: one ``error:`` line on stderr naming the problem, exit code 2,
nothing written (the rule train.py follows)."""

import subprocess
import sys
from pathlib import Path

import pytest

import bench.learning as bl
from bench import mtl

ROOT = Path(__file__).resolve().parents[2]


def one_error_line(err: str) -> str:
    """The single stderr line, which must start with ``error: ``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def exit_code(main, argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize(
    "argv, message",
    [
        (["profile_update.py", "--agent", "nope"], "argument --agent: invalid choice: 'nope'"),
        (["profile_update.py", "foo=1"], "unknown config key 'foo'"),  # a ConfigError
        (["profile_update.py", "--updates", "0"], "argument --updates: must be an integer >= 1"),
        (["throughput.py", "--games", "Pongg"], "unknown Atari game 'Pongg'"),  # an EnvError
        (["throughput.py", "--agents", "nope"], "argument --agents: invalid choice: 'nope'"),
        (["throughput.py", "--env-steps", "-1"], "argument --env-steps: must be an integer >= 1"),
        (["learning_report.py", "--help"], "is a module used by bench/learning.py"),
        (["learning_plot.py"], "is a module used by bench/learning.py"),
        (["mtl_toy2d.py", "--scale", "0"], "--scale must be > 0, got 0.0"),
        (["mtl_toy2d.py", "--methods", "gradnorm"], "argument --methods: invalid choice"),
        (["mtl_toy2d.py", "--png", "README.md/t.png"], "README.md is a file"),
        (["mtl_toy2d.py", "--json", "docs"], "--json docs: is a directory"),
        (["mtl_speed.py", "--help"], "takes METHOD MODE T STEPS [TRUNK BATCH]"),
        (["mtl_speed.py", "pcgrad", "nope", "2", "3"], "takes METHOD MODE T STEPS"),
        (["mtl_speed.py", "equal", "params", "two", "3"], "takes METHOD MODE T STEPS"),
    ],
)
def test_scripts_refuse_bad_input_in_one_line(argv, message):
    """Run as scripts (they set process-wide torch modes on import, so not imported here)."""
    script, *args = argv
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    assert message in one_error_line(proc.stderr)
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--map", "nomap"], "unknown map 'nomap'"),  # found before any run starts
        (["--gridworld-steps", "-5"], "argument --gridworld-steps: must be an integer >= 1"),
        (["--suites", "minatar", "--seeds", "0"], "argument --seeds: must be an integer >= 1"),
        (["--suites", "minatar", "--seeds", "-1"], "argument --seeds: must be an integer >= 1"),
        (["--gridworld-seeds", "0"], "argument --gridworld-seeds: must be an integer >= 1"),
        (["--minatar-steps", "0"], "argument --minatar-steps: must be an integer >= 1"),
        (["--workers", "0"], "argument --workers: must be an integer >= 1"),
        (["--from-json", "{tmp}/nonexist.json"], "nonexist.json: No such file or directory"),
        (["--from-json", "{tmp}/other.json"], "other.json is not results of bench/learning.py"),
        (["--from-json", "{tmp}/runs.json"], "runs.json is not results of bench/learning.py"),
        (["--from-json", "{tmp}/text.json"], "text.json is not JSON"),
    ],
)
def test_learning_refuses_bad_input_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "other.json").write_text('{"a": 1}')
    (tmp_path / "runs.json").write_text('{"runs": [{"suite": "gridworld"}]}')  # malformed run
    (tmp_path / "text.json").write_text("not json")
    out, cache = tmp_path / "docs", tmp_path / "cache"
    argv = [a.format(tmp=tmp_path) for a in argv] + ["--out", str(out), "--cache", str(cache)]
    argv += ["--suites", "gridworld", "--agents", "a2c_independent"] * ("--suites" not in argv)
    assert exit_code(bl.main, argv) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["quality", "--seeds", "0"], "argument --seeds: must be an integer >= 1"),
        (["speed", "--tasks", "2", "0"], "argument --tasks: must be an integer >= 1"),
        (["speed", "--rounds", "0"], "argument --rounds: must be an integer >= 1"),
        (["speed", "--batch", "-1"], "argument --batch: must be an integer >= 1"),
        (["speed", "--trunk", "64"], "--trunk takes the input size and at least one hidden"),
        (["speed", "--only", "nope"], "argument --only: invalid choice: 'nope'"),
        (["quality", "--only", "equal"], "--only selects rows of (b), the speed table"),
        (["quality", "--reuse", "{tmp}/none.json"], "none.json: No such file or directory"),
        (["quality", "--reuse", "{tmp}/speed.json"], "speed.json holds no quality results"),
    ],
)
def test_mtl_refuses_bad_input(tmp_path, capsys, argv, message):
    (tmp_path / "speed.json").write_text('{"speed": {}}')
    assert exit_code(mtl.main, [a.format(tmp=tmp_path) for a in argv]) == 2
    assert message in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "module", ["learning_runs", "learning_metrics", "learning_report", "learning_plot"]
)
def test_the_learning_helper_modules_say_they_are_not_scripts(module):
    # run directly, the new modules died on `from bench...` with a ModuleNotFoundError traceback
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / f"{module}.py")], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: bench/{module}.py is a module used by bench/learning.py, not a script; "
        "run `python bench/learning.py --help`"
    )


def test_sigint_raises_even_when_sigint_was_inherited_ignored():
    """A shell's background job starts with SIGINT ignored; inside ``sigint_raises`` a `kill -INT`
    still raises KeyboardInterrupt (the benches catch it: 'interrupted', exit 130)."""
    import signal

    code = (
        "import os, signal, time\n"
        "from bench._cli import sigint_raises\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "try:\n"
        "    with sigint_raises():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        time.sleep(5)\n"
        "except KeyboardInterrupt:\n"
        "    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # restored\n"
        "    raise SystemExit(130)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.returncode == 130, proc.stderr


def test_mtl_bench_interrupted_prints_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def interrupted(seeds):
        raise KeyboardInterrupt

    monkeypatch.setattr(mtl, "quality", interrupted)
    dump = tmp_path / "q.json"
    assert mtl.main(["quality", "--seeds", "1", "--json", str(dump)]) == 130
    assert capsys.readouterr().err == "interrupted\n"
    assert not dump.exists()
