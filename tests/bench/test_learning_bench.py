"""End-to-end smoke test of the learning benchmark on a tiny gridworld budget (keeps it from rotting)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bench.learning as bl
from bench.learning import main, run_benchmark
from bench.learning_report import NOTES_BEGIN, NOTES_END, mean_ci, write_outputs

AGENTS = ["a2c_independent", "distral_klent_2col"]


def test_learning_bench_end_to_end(tmp_path):
    steps = 3000
    results = run_benchmark(
        ["gridworld"], AGENTS, {"gridworld": [0]}, {"gridworld": steps}, tmp_path / "cache", 1
    )
    assert [r["agent"] for r in results["runs"]] == AGENTS
    run = results["runs"][0]
    assert run["steps"] >= steps and len(run["grid"]) == len(run["curves"]["success"][0])
    assert len(run["optimal_length"]) == len(run["tasks"]) == 4

    docs = tmp_path / "docs"
    docs.mkdir()
    other = "# Benchmarks\n\n## Throughput\n\nkeep me\n"
    (docs / "benchmarks.md").write_text(other)
    written = write_outputs(results, docs)
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    assert (docs / "learning_gridworld.png").is_file()
    doc = (docs / "benchmarks.md").read_text()
    assert doc.startswith(other.rstrip()) and "## Learning" in doc
    for agent in AGENTS:
        assert f"| `{agent}` |" in doc

    # Hand-written notes survive a re-render from the JSON, and the tables are unchanged.
    doc = doc.replace(NOTES_BEGIN + "\n", NOTES_BEGIN + "\nmy notes\n")
    (docs / "benchmarks.md").write_text(doc)
    assert main(["--from-json", str(docs / "learning_results.json"), "--out", str(docs)]) == 0
    again = (docs / "benchmarks.md").read_text()
    assert again == doc and again.count("## Learning") == 1 and NOTES_END in again
    assert json.loads((docs / "learning_results.json").read_text())["runs"][1]["agent"] == AGENTS[1]


def test_mean_ci_matches_t_interval():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert math.isclose(half, 4.302652729911275 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1])


def test_censored_steps_to_threshold_are_shown_as_bounds():
    from bench.learning_report import _stt_cell, stt_ratio

    inf = float("inf")
    ms = {"a": [{"stt": 50.0}, {"stt": inf}], "ref": [{"stt": 100.0}, {"stt": 100.0}]}
    # a's unreached seed counts at the budget (200): its mean is a lower bound, so is the ratio
    # with the 95% bootstrap interval over seeds: a's resampled means are 50, 125 or 200
    assert stt_ratio(ms, "a", "ref", 200) == "≥ 1.25 (95% bootstrap 0.50-2.00)"
    assert stt_ratio(ms, "ref", "a", 200).startswith("≤ 0.80 (95% bootstrap 0.50-2.00")
    assert stt_ratio({"a": ms["a"], "b": ms["a"]}, "a", "b", 200).startswith("~ 1.00 (")
    assert stt_ratio(ms, "ref", "ref", 200) == "1.00 (95% bootstrap 1.00-1.00)"
    assert stt_ratio({"a": ms["a"][:1], "ref": ms["ref"]}, "a", "ref", 200) == "0.50"  # 1 seed
    assert _stt_cell(ms["a"], 200_000) == "≥ 100k (1/2)"  # no CI around a censored mean
    assert _stt_cell([{"stt": 1000.0}, {"stt": 3000.0}], 9000).startswith("2 ± ")


def test_runs_on_different_grids_are_refused():
    from bench.learning_report import suite_metrics

    run = {"suite": "gridworld", "agent": "x", "grid": [1, 2]}
    with pytest.raises(ValueError, match="different step grids"):
        suite_metrics([run, {**run, "grid": [1, 2, 3]}])


def test_a_seed_without_a_value_does_not_blank_the_cell():
    from bench.learning_report import _cell

    # one seed with no finished episode (NaN) used to turn the whole cell into "n/a"
    assert _cell([1.0, float("nan"), 3.0], 1).startswith("2.0 ± ")
    assert _cell([1.0, float("nan"), 3.0], 1).endswith("(2/3 seeds)")
    assert _cell([float("nan")] * 2) == "n/a"
    assert _cell([0.5, 0.5]) == "0.50 ± 0.00"


def test_overrides_reach_every_run_and_are_cached_apart(tmp_path, capsys):
    cache, seeds, steps = tmp_path / "cache", {"gridworld": [0]}, {"gridworld": 1000}
    plain = run_benchmark(["gridworld"], AGENTS[:1], seeds, steps, cache, 1)
    ablation = run_benchmark(
        ["gridworld"], AGENTS[:1], seeds, steps, cache, 1, overrides=["eval.episodes=3"]
    )
    assert len(list(cache.iterdir())) == 2  # not served the preset's cached run
    # applied after the bench's own settings (32 greedy episodes per gridworld task)
    assert {t["episodes"] for t in plain["runs"][0]["greedy_eval"].values()} == {32}
    assert {t["episodes"] for t in ablation["runs"][0]["greedy_eval"].values()} == {3}
    assert ablation["meta"]["overrides"] == ["eval.episodes=3"]
    docs = tmp_path / "docs"
    docs.mkdir()
    write_outputs(ablation, docs)
    doc = (docs / "benchmarks.md").read_text()
    assert "after its preset: `eval.episodes=3`" in doc and "evaluation, 3 episodes per" in doc

    assert main(["--suites", "gridworld", "--set", "agent.lr=fast", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --set: agent.lr") and "gridworld" in err[0]
    assert not (tmp_path / "benchmarks.md").exists()


def test_a_cached_run_is_reused_only_while_its_preset_is_unchanged(tmp_path, monkeypatch):
    import bench.learning as bl

    preset = tmp_path / "preset.yaml"
    preset.write_text(bl.ROOT.joinpath("configs/gridworld_a2c_independent.yaml").read_text())
    configs = {"gridworld": {**bl.AGENT_CONFIGS["gridworld"], AGENTS[0]: str(preset)}}
    monkeypatch.setattr(bl, "AGENT_CONFIGS", configs)
    cache, seeds, steps = tmp_path / "cache", {"gridworld": [0]}, {"gridworld": 500}
    first = run_benchmark(["gridworld"], AGENTS[:1], seeds, steps, cache, 1)
    again = run_benchmark(["gridworld"], AGENTS[:1], seeds, steps, cache, 1)
    assert again["runs"] == first["runs"] and len(list(cache.iterdir())) == 1  # reused
    preset.write_text(preset.read_text().replace("lr: 0.001", "lr: 0.002"))
    run_benchmark(["gridworld"], AGENTS[:1], seeds, steps, cache, 1)
    assert len(list(cache.iterdir())) == 2  # trained anew under the edited preset


def test_the_cache_key_covers_code_curve_settings_and_map_files(tmp_path, monkeypatch):
    # keyed by the config alone, cached runs survived edits to agents/ and to the curve settings
    import bench.learning as bl

    spec = {"suite": "gridworld", "agent": AGENTS[0], "seed": 0, "steps": 500, "map": "far_room"}
    key = bl.config_key(spec, "code-a")
    assert bl.config_key(spec, "code-a") == key
    assert bl.config_key(spec, "code-b") != key  # another checkout of agents/, envs/, mtrl/
    monkeypatch.setattr(bl, "WINDOW", bl.WINDOW + 1)
    assert bl.config_key(spec, "code-a") != key
    monkeypatch.undo()
    map_file = tmp_path / "m.txt"
    map_file.write_text((bl.ROOT / "envs/maps/far_room.txt").read_text())
    custom = {**spec, "map": str(map_file)}
    before = bl.config_key(custom, "code-a")
    map_file.write_text(map_file.read_text().replace(".", "#", 1))  # same path, new contents
    assert bl.config_key(custom, "code-a") != before
    assert bl.code_hash() == bl.code_hash() and len(bl.code_hash()) == 40


def test_the_random_baseline_plays_the_runs_env(monkeypatch):
    import bench.learning as bl

    calls = []

    class Env:  # records the settings it was built with, plays nothing
        def __init__(self, games, n, **kw):
            calls.append(kw)

        def close(self):
            pass

    monkeypatch.setattr("envs.minatar.MinAtarVecEnv", Env)
    monkeypatch.setattr(
        "agents.evaluate.evaluate", lambda *a, **k: {"breakout": {"mean_return": 1.0}}
    )
    bl.random_returns(1, overrides=["env.minatar.sticky_action_prob=0.0"])
    assert calls[0]["sticky_action_prob"] == 0.0  # it used to build the env with defaults


def _children(pid: int) -> dict[int, str]:
    """Command line of each live (not zombie) child of ``pid``: psutil when installed, else /proc."""
    try:
        import psutil
    except ImportError:
        kids = {}
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and _alive(int(entry.name)):
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    if ppid == pid:
                        kids[int(entry.name)] = (entry / "cmdline").read_text().replace("\0", " ")
            except OSError:  # ended meanwhile
                continue
        return kids
    try:
        children = psutil.Process(pid).children()
        return {c.pid: " ".join(c.cmdline()) for c in children if _alive(c.pid)}
    except psutil.NoSuchProcess:
        return {}


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    "signum, to_group, line",
    [
        (signal.SIGTERM, False, "terminated (SIGTERM)"),
        (signal.SIGINT, True, "interrupted (SIGINT)"),
    ],
)
def test_a_signal_stops_the_worker_processes(tmp_path, signum, to_group, line):
    """SIGTERM to the parent (or Ctrl-C, SIGINT to the terminal's process group) while two workers
    train: the parent exits 128 + signum with one line and no process it started survives."""
    out, cache = tmp_path / "docs", tmp_path / "cache"
    cmd = [sys.executable, str(bl.ROOT / "bench" / "learning.py"), "--suites", "gridworld"]
    cmd += ["--agents", *AGENTS, "--gridworld-seeds", "2", "--gridworld-steps", "200000"]
    cmd += ["--workers", "2", "--out", str(out), "--cache", str(cache)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    kids: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 60
        while sum("spawn_main" in cmd for cmd in kids.values()) < 2:  # both workers started
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
            kids = _children(proc.pid)
        time.sleep(2.0)  # into their first runs
        kids = _children(proc.pid)  # the workers and multiprocessing's resource tracker
        (os.killpg if to_group else os.kill)(proc.pid, signum)  # a terminal's Ctrl-C: the group
        _, err = proc.communicate(timeout=30)
        deadline = time.monotonic() + 10  # the resource tracker exits once its pipe closes
        while any(_alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [k for k in kids if _alive(k)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for k in kids:
            if _alive(k):
                os.kill(k, signal.SIGKILL)
    assert proc.returncode == 128 + signum
    assert err.splitlines() == [f"{line}; finished runs stay cached in {cache} for next time"]
    assert survivors == []
    assert not out.exists()
    assert all(p.suffix == ".json" for p in cache.iterdir())  # finished runs only, whole


def _training(pid: int) -> bool:
    """Whether process ``pid`` has a run's ``losses.jsonl`` open (its update loop has begun)."""
    try:
        return any(
            os.readlink(f).endswith("losses.jsonl") for f in Path(f"/proc/{pid}/fd").iterdir()
        )
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_sigterm_with_one_worker_stops_the_run_in_process(tmp_path):
    """``--workers 1`` trains in the bench's own process: SIGTERM stops it mid-run with the bench's
    one line (the Runner's "finishing the update, writing a checkpoint" would be for a run
    directory that is thrown away) and exit 143."""
    out, cache = tmp_path / "docs", tmp_path / "cache"
    cmd = [sys.executable, str(bl.ROOT / "bench" / "learning.py"), "--suites", "gridworld"]
    cmd += ["--agents", "a2c_independent", "--gridworld-seeds", "1", "--gridworld-steps", "2000000"]
    cmd += ["--workers", "1", "--out", str(out), "--cache", str(cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _training(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143
    assert err.splitlines() == [
        f"terminated (SIGTERM); finished runs stay cached in {cache} for next time"
    ]
    assert not out.exists()
