"""mtrl.io: atomic writes keep the umask's file mode; automatic directories are claimed once."""

from __future__ import annotations

import os
import stat

import train
from mtrl.io import TEMP_SUFFIX, _umask, atomic_write, claim_dir


def test_atomic_write_content_and_mode_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    _umask.cache_clear()  # read once per process; make this test's umask the one read
    try:
        atomic_write(tmp_path / "a.bin", b"abc")
    finally:
        os.umask(old)
        _umask.cache_clear()
    path = tmp_path / "a.bin"
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # mkstemp alone gives 0600
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))


def test_claim_dir_never_hands_out_a_directory_twice(tmp_path):
    got = [claim_dir(tmp_path / "runs" / "x") for _ in range(3)]
    assert [p.name for p in got] == ["x", "x-2", "x-3"] and all(p.is_dir() for p in got)


def test_ctrl_c_while_starting_up_is_one_line(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_main", interrupted)
    assert train.main([]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["interrupted"]


def test_automatic_rl_run_directory_is_removed_when_the_build_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = os.path.join(os.path.dirname(train.__file__), "configs", "atari_a2c.yaml")
    assert train.main(["--config", cfg, "env.tasks=[NotAGame]"]) == 2
    assert "unknown Atari game" in capsys.readouterr().err
    assert not any((tmp_path / "runs").glob("*"))  # the claimed directory was removed


def test_two_automatic_rl_runs_in_the_same_second_get_two_directories(tmp_path, monkeypatch):
    from agents.config import load_config
    from agents.resume import new_run_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("time.strftime", lambda fmt: "20260101-000000")
    cfg = load_config(
        os.path.join(os.path.dirname(train.__file__), "configs", "gridworld_a2c.yaml")
    )
    first, second = new_run_dir(cfg), new_run_dir(cfg)
    assert first != second and first.is_dir() and second.is_dir()


def test_atomic_write_mode_follows_another_umask_and_a_failed_write_leaves_no_trace(tmp_path):
    import pytest

    old = os.umask(0o027)
    _umask.cache_clear()
    try:
        atomic_write(tmp_path / "a.bin", b"abc")
    finally:
        os.umask(old)
        _umask.cache_clear()
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o640
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "a.bin", "not bytes")  # fails mid-write
    assert (tmp_path / "a.bin").read_bytes() == b"abc"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # its temp file removed


def test_check_writable_names_the_directory(tmp_path):
    import pytest

    from mtrl.io import check_writable

    check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []  # its probe file is gone
    missing = tmp_path / "missing"
    with pytest.raises(OSError) as info:
        check_writable(missing)
    assert info.value.filename == str(missing)
