"""train.py end to end: smoke runs per suite, determinism, and bad input -> exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import train
from agents.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("config", "extra"),
    [
        ("gridworld_a2c.yaml", ["env.num_envs_per_task=2"]),
        ("minatar_a2c.yaml", ["env.num_envs_per_task=2", "eval.max_steps=200"]),
        pytest.param(
            "atari_a2c.yaml",
            ["env.tasks=[Pong,Breakout]", "env.num_envs_per_task=2", "eval.max_steps=50"],
            marks=pytest.mark.atari,
        ),
    ],
)
def test_smoke_run_writes_the_run_directory(tmp_path, config, extra):
    run_dir = tmp_path / "run"
    proc = _run(
        "--config",
        str(ROOT / "configs" / config),
        "total_steps=400",
        "agent.n_steps=5",
        f"run_dir={run_dir}",
        "eval.episodes=1",
        "progress=false",
        *extra,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["total_steps"] >= 400
    assert summary["sps"] > 0
    assert {"agent", "total_steps", "sps", "tasks"} <= set(summary)
    saved_cfg = load_config(run_dir / "config.yaml")
    assert list(summary["tasks"]) == [t.lower() for t in saved_cfg.env.tasks] or (
        saved_cfg.env.suite == "gridworld" and len(summary["tasks"]) == 4
    )
    for stats in summary["tasks"].values():
        assert stats["episodes"] == 0 or isinstance(stats["mean_return"], float)
    assert (run_dir / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert (run_dir / "returns.png").read_bytes().startswith(b"\x89PNG")
    saved = load_config(run_dir / "config.yaml")
    assert saved.total_steps == 400


def test_same_seed_gives_identical_losses(tmp_path):
    histories = []
    for i in range(2):
        cfg = load_config(
            str(ROOT / "configs" / "minatar_a2c.yaml"),
            ["total_steps=600", "env.num_envs_per_task=2", "progress=false", "eval.episodes=0"],
        )
        runner = train.build(cfg, tmp_path / f"run{i}")
        runner.run()
        runner.env.close()
        histories.append(runner.loss_records())
    assert histories[0] == histories[1]
    assert len(histories[0]) == 600 // (5 * 2 * 5)


def test_build_prints_the_agents_notes(tmp_path, capsys):
    # an A2C preset switched to Distral keeps A2C's entropy bonus: said once, at start
    cfg = load_config(
        str(ROOT / "configs" / "gridworld_a2c.yaml"),
        ["agent.name=distral_kl_1col", "env.num_envs_per_task=1", "progress=false"],
    )
    runner = train.build(cfg, tmp_path / "run")
    runner.env.close()
    err = capsys.readouterr().err
    assert err.count("note: agent.ent_coef=0.01 adds A2C's entropy bonus") == 1
    assert not (tmp_path / "run").exists()  # building writes nothing


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["env.suite=mujoco"], "env.suite"),
        (["seed=abc"], "seed"),
        (["agent.gamma=1.5"], "agent.gamma"),
        (["agent.name=dqn"], "agent.name"),
        (["env.nonsense=1"], "env.nonsense"),
        (["total_steps=-5"], "total_steps"),
        (["notakeyvalue"], "key=value"),
        (["--config", "/nonexistent.yaml"], "not found"),
        # run from another directory (a user's project): the hint names the repository's preset
        (["--config", "configs/gridworld_a2c.yaml"], str(ROOT / "configs" / "gridworld_a2c.yaml")),
        (["env.suite=atari", "env.tasks=[Pongg]"], "Pong"),
        (["env.suite=minatar", "env.tasks=[breakot]"], "breakout"),
        (["env.gridworld.map=no_such_map"], "no_such_map"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_run_dir(
    tmp_path, args, needle, capsys, monkeypatch
):
    # in process (a subprocess each cost ~3 s of imports); test_rel_bad_input.py runs a few
    # cases through a real process
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    if "--config" not in args:
        args = ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), *args]
    code = train.main([*args, f"run_dir={run_dir}"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0]
    assert not run_dir.exists()
    assert not (tmp_path / "runs").exists()


def test_malformed_yaml_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("env:\n  suite: [gridworld\n")
    assert train.main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_unwritable_run_dir_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch):
    # used to end in a PermissionError/FileNotFoundError traceback (exit 1) from the runner
    monkeypatch.chdir(tmp_path)
    code = train.main(
        ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), "run_dir=/proc/mtrl_nope/run"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: run_dir='/proc/mtrl_nope/run' cannot be created")
    assert "choose a writable run_dir" in err[0]
    assert not list(tmp_path.iterdir())


def test_a_run_that_fails_to_start_leaves_no_runs_directory(tmp_path, capsys, monkeypatch):
    # the automatic runs/<name> was removed, but runs/ itself stayed behind
    monkeypatch.chdir(tmp_path)
    cfg = str(ROOT / "configs" / "gridworld_a2c.yaml")
    assert train.main(["--config", cfg, "env.gridworld.map=no_such_map"]) == 2
    assert "no_such_map" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    (tmp_path / "runs" / "keep").mkdir(parents=True)  # a runs/ with content stays
    assert train.main(["--config", cfg, "env.gridworld.map=no_such_map"]) == 2
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["keep"]


def test_an_automatic_run_directory_is_recorded_in_its_config(tmp_path, monkeypatch):
    # config.yaml, the checkpoint and TensorBoard's config text said run_dir: '' for an
    # automatically named run; only a later --resume wrote the directory into config.yaml
    import yaml

    from agents.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    cfg = ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), "total_steps=200"]
    assert train.main([*cfg, "progress=false", "eval.episodes=0"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    expected = str(Path("runs") / run_dir.name)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["run_dir"] == expected
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]["run_dir"] == expected


def test_existing_run_dir_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    proc = _run(f"run_dir={tmp_path / 'run'}", "--config", str(ROOT / "configs/gridworld_a2c.yaml"))
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["keep.txt"]


def test_help_lists_config_fields():
    proc = _run("--help")
    assert proc.returncode == 0
    for key in ("env.suite", "agent.name", "total_steps", "env.atari.frameskip", "device"):
        assert key in proc.stdout
    # the valid names, which it used to leave to Python functions a CLI user cannot call
    from agents.factory import names
    from mtrl.weighting import names as weightings

    names_at_end = proc.stdout[proc.stdout.index("valid names:") :].splitlines()
    assert names_at_end[1].split(None, 1) == ["agent.name", ", ".join(names())]
    usable = names_at_end[2].split(None, 1)[1].split(", ")
    assert "pcgrad" in usable and "dwa" not in usable and set(usable) < set(weightings())
    assert "four_rooms" in names_at_end[3] and "space_invaders" in names_at_end[4]


def test_regularised_return_is_logged_where_its_episode_ended(tmp_path):
    # it was logged at the end of the rollout, up to n_steps * num_envs steps after task/*/return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    cfg = ["--config", str(ROOT / "configs" / "gridworld_distral.yaml"), "total_steps=6000"]
    extra = ["env.gridworld.max_episode_steps=7", "progress=false", "eval.episodes=0"]
    assert train.main([*cfg, *extra, "log_interval=100", f"run_dir={run_dir}"]) == 0
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.endswith("/regularised_return")]
    assert len(tags) == 4  # one per task
    for tag in tags:
        ends = {e.step for e in events.Scalars(tag.replace("regularised_return", "return"))}
        steps = {e.step for e in events.Scalars(tag)}
        assert steps and steps <= ends, (tag, sorted(steps - ends)[:5])


def test_runs_flush_subnormals_to_zero_and_restore_the_mode(tmp_path, monkeypatch):
    """RL and supervised runs turn on FTZ/DAZ while they train (subnormal operands, e.g. the
    gradients of saturated policies, cost Intel CPUs a microcode assist each) and restore the
    caller's IEEE mode afterwards."""
    from agents.seeding import flushes_denormals
    from agents.supervised import run_supervised
    from agents.supervised_config import load_supervised
    from mtrl.trainer import Trainer

    assert not flushes_denormals()
    seen: list[bool] = []
    cfg = load_config(
        "configs/gridworld_distral.yaml",
        ["progress=false", "eval.episodes=0", "total_steps=160", f"run_dir={tmp_path / 'rl'}"],
    )
    runner = train.build(cfg, tmp_path / "rl")
    step = runner.train_step
    monkeypatch.setattr(runner, "train_step", lambda: seen.append(flushes_denormals()) or step())
    runner.run()
    runner.env.close()
    assert seen and all(seen) and not flushes_denormals()

    seen.clear()
    fit = Trainer.train_step
    monkeypatch.setattr(
        Trainer, "train_step", lambda self, *a: seen.append(flushes_denormals()) or fit(self, *a)
    )
    sup = load_supervised(
        "configs/supervised/toy2d.yaml", ["supervised.epochs=2", "supervised.progress=false"]
    )
    run_supervised(sup, tmp_path / "sup")
    assert seen and all(seen) and not flushes_denormals()


@pytest.mark.parametrize(
    ("name", "two_column", "kl_only", "regularise"),
    [
        ("a2c_2col", True, False, False),
        ("distral_kl_1col", False, True, True),
        ("distral_kl_2col", True, True, True),
        ("distral_klent_1col", False, False, True),
        ("distral_klent_2col", True, False, True),
    ],
)
def test_factory_builds_each_distral_variant(name, two_column, kl_only, regularise):
    from agents.config_schema import AgentConfig
    from agents.distral import DistralAgent
    from agents.factory import build_agent

    agent = build_agent(AgentConfig(name=name, alpha=0.5, hidden=[8]), "gridworld", (5,), 3, 2)
    assert type(agent) is DistralAgent and agent.name == name
    assert (agent.two_column, agent.regularise) == (two_column, regularise)
    if regularise:  # the KL-only variants force alpha = 1
        assert agent.alpha == (1.0 if kl_only else 0.5)


@pytest.mark.parametrize(
    ("name", "task_heads", "encoders", "heads"),
    [
        ("a2c_multitask", True, 1, 2),
        ("a2c_multitask", False, 1, 1),
        ("a2c_independent", False, 2, 2),  # independent: per-task everything, whatever task_heads
    ],
)
def test_factory_builds_the_a2c_sharing_asked_for(name, task_heads, encoders, heads):
    from agents.a2c import A2CAgent
    from agents.config_schema import AgentConfig
    from agents.factory import build_agent, names

    cfg = AgentConfig(name=name, task_heads=task_heads, hidden=[8])
    agent = build_agent(cfg, "gridworld", (5,), 3, 2)
    assert type(agent) is A2CAgent and agent.name == name
    first = next(p for n, p in agent.net.named_parameters() if n.startswith("encoder"))
    assert first.shape[0] == encoders
    assert agent.net.policy.groups == heads and agent.net.value.groups == heads
    assert names() == sorted(names()) and "a2c_multitask" in names()


def test_an_agent_registered_from_outside_the_package_is_built_by_name(monkeypatch):
    from agents.a2c import A2CAgent
    from agents.base import Agent
    from agents.config import ConfigError
    from agents.config_schema import AgentConfig
    from agents.factory import AGENTS, build_agent

    monkeypatch.setattr(AGENTS, "_entries", dict(AGENTS._entries))

    @AGENTS.register("my_a2c")
    def build(cfg, suite, obs_shape, num_actions, num_tasks):
        return A2CAgent(cfg, suite, obs_shape, num_actions, num_tasks, True)  # name "a2c"

    agent = build_agent(AgentConfig(name="my_a2c", hidden=[8]), "gridworld", (5,), 3, 2)
    # named as configured: summary.json and checkpoints said "a2c" unless the builder passed it
    assert type(agent) is A2CAgent and agent.name == "my_a2c"
    # AGENTS was a dict: a user's entry silently replaced a built-in agent
    with pytest.raises(ValueError, match=r"agent 'a2c_multitask' is already registered to"):
        AGENTS.register("a2c_multitask")(build)
    with pytest.raises(ConfigError, match=r"agent.name='my_a2d' is not an agent; .*my_a2c"):
        build_agent(AgentConfig(name="my_a2d"), "gridworld", (5,), 3, 2)
    # an Agent subclass missing a method said only NotImplementedError
    with pytest.raises(NotImplementedError, match=r"Agent must implement task_losses\(rollout\)"):
        Agent(AgentConfig(), 2).task_losses(None)


def test_torch_threads_is_applied(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(3 - n)
            cfg = load_config(
                str(ROOT / "configs" / "gridworld_a2c.yaml"),
                [f"torch_threads={n}", "env.num_envs_per_task=1", "progress=false"],
            )
            train.build(cfg, tmp_path / "run").env.close()
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_factory_refuses_an_unknown_agent_listing_the_valid_ones():
    # the config's choices catch it on the command line; the factory says the same to API callers
    from agents.config import ConfigError
    from agents.config_schema import AgentConfig
    from agents.factory import build_agent, names

    with pytest.raises(ConfigError) as e:
        build_agent(AgentConfig(name="dqn", hidden=[8]), "gridworld", (5,), 3, 2)
    assert str(e.value) == f"agent.name='dqn' is not an agent; choose one of: {', '.join(names())}"


def test_build_wires_tasks_eval_envs_and_weighting_into_the_runner(tmp_path):
    cfg = load_config(
        str(ROOT / "configs" / "gridworld_a2c.yaml"),
        [
            "env.tasks=[2,0]",
            "env.num_envs_per_task=1",
            "eval.num_envs_per_task=3",
            "agent.weighting=uncertainty",
            "progress=false",
        ],
    )
    runner = train.build(cfg, tmp_path / "run")
    try:
        assert runner.env.task_names == ["2", "0"] and runner.env.num_envs == 2
        assert type(runner.weighting).__name__ == "Uncertainty"
        assert runner.weighting.num_tasks == 2
        eval_env = runner.make_eval_env()
        try:
            assert eval_env.task_names == ["2", "0"] and eval_env.num_envs == 6
        finally:
            eval_env.close()
    finally:
        runner.env.close()
    assert not (tmp_path / "run").exists()


def test_ctrl_c_while_starting_up_exits_130(monkeypatch, capsys):
    def interrupted(argv):
        raise KeyboardInterrupt  # e.g. during the imports or the env construction

    monkeypatch.setattr(train, "_main", interrupted)
    assert train.main([]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_start_line_loss_steps_and_a_finished_resume_adds_no_event_file(tmp_path, capsys):
    # the newcomer walkthrough: the run directory was only named at the end (or by Ctrl-C),
    # losses.jsonl records had no step to line them up with TensorBoard, and each --resume of
    # a finished run left an empty TensorBoard events file behind
    run_dir = tmp_path / "run"
    cfg = ["--config", str(ROOT / "configs" / "gridworld_a2c.yaml"), "total_steps=320"]
    assert train.main([*cfg, "progress=false", "eval.episodes=0", f"run_dir={run_dir}"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (
        f"training: a2c_multitask on gridworld (0, 1, 2, 3) to 320 steps in {run_dir}; "
        "Ctrl-C stops with a checkpoint"
    )
    per_update = 5 * 4 * 8  # n_steps x tasks x envs per task (the preset)
    steps = [json.loads(line)["step"] for line in (run_dir / "losses.jsonl").open()]
    assert steps == [per_update, 2 * per_update]
    events = sorted(run_dir.glob("events.out.tfevents.*"))
    assert train.main(["--resume", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (  # it said "resuming ... Ctrl-C stops"
        f"already finished at step 320: evaluating a2c_multitask on gridworld (0, 1, 2, 3) in "
        f"{run_dir}"
    )
    assert sorted(run_dir.glob("events.out.tfevents.*")) == events


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "configs/gridworld_a2c.yaml", "total_steps=400", "progress=false"],
        ["--config", "configs/supervised/toy2d.yaml", "supervised.epochs=40"],
    ],
    ids=["rl", "supervised"],
)
def test_a_reader_that_stops_after_the_first_line_ends_the_run_quietly(tmp_path, args):
    # `python train.py ... | head -1`: the last lines met a closed pipe and ended in a
    # BrokenPipeError traceback (exit 1) after a finished run
    run_dir = tmp_path / "run"
    key = "supervised.run_dir" if "supervised" in args[1] else "run_dir"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *args, f"{key}={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader goes away while the run trains
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err  # 128 + SIGPIPE, as for any shell tool
    assert first.startswith("training: ") and str(run_dir) in first
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert json.loads((run_dir / "summary.json").read_text())  # the run itself is whole


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "configs/gridworld_a2c.yaml", "total_steps=400", "progress=false"],
        ["--config", "configs/supervised/toy2d.yaml", "supervised.epochs=2"],
    ],
    ids=["rl", "supervised"],
)
def test_a_reader_gone_before_the_first_line_leaves_nothing(tmp_path, args):
    # `train.py ... | true`: the supervised run had created its directory (and missing parents)
    # and left it empty
    run_dir = tmp_path / "new" / "run"
    key = "supervised.run_dir" if "supervised" in args[1] else "run_dir"
    read_end, write_end = os.pipe()
    os.close(read_end)  # no reader at all
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args, f"{key}={run_dir}"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
