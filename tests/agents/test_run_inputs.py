"""What train.py makes of unusual input: a task listed twice, a weighting on an agent without
shared parameters, the largest allowed seeds (evaluation seeds), a map file that is not UTF-8,
and an evaluation cut short by eval.max_steps."""

from __future__ import annotations

from pathlib import Path

import pytest

import train
from agents.config import load_config
from agents.config_schema import SEED_LIMIT
from agents.evaluate import EVAL_SEED_OFFSET, eval_seed
from envs.base import EnvError, slot_seeds
from envs.gridworld import GridworldVecEnv
from envs.minatar import MinAtarVecEnv

ROOT = Path(__file__).resolve().parents[2]
GRID = str(ROOT / "configs" / "gridworld_a2c.yaml")


def _own_ent_coef(agent: str) -> str:
    """The entropy bonus of the agent's own presets: 0 for Distral (its regulariser has the
    entropy term), 0.01 for the A2C baselines; either way build() adds no note about it."""
    return f"agent.ent_coef={0 if agent.startswith('distral') else 0.01}"


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --- a task listed twice ---------------------------------------------------------------------
def test_gridworld_refuses_a_repeated_goal():
    with pytest.raises(EnvError, match=r"^task '0' is given more than once in \['0', '2', '0'\]"):
        GridworldVecEnv("four_rooms", ["0", "2", 0])


def test_minatar_refuses_a_game_repeated_under_another_spelling():
    with pytest.raises(EnvError, match="task 'breakout' is given more than once"):
        MinAtarVecEnv(["breakout", "Breakout"])


@pytest.mark.atari
def test_atari_refuses_a_repeated_game():
    from envs.atari import AtariVecEnv

    with pytest.raises(EnvError, match="task 'pong' is given more than once"):
        AtariVecEnv(["Pong", "pong"])


def test_repeated_task_on_the_command_line_exits_2_and_writes_nothing(tmp_path, capsys):
    # used to train two tasks named '0': their TensorBoard keys merged and summary.json kept one
    run_dir = tmp_path / "run"
    args = ["--config", GRID, "env.tasks=[0,0]", f"run_dir={run_dir}", "progress=false"]
    assert train.main(args) == 2
    assert "task '0' is given more than once" in _one_error_line(capsys.readouterr().err)
    assert not run_dir.exists()


# --- weightings and agents that share nothing ------------------------------------------------
def test_gradnorm_on_independent_networks_exits_2_before_anything_is_written(tmp_path, capsys):
    # used to raise ValueError from GradNorm at the first update (exit 1, traceback, run_dir
    # already holding config.yaml and TensorBoard files)
    run_dir = tmp_path / "run"
    args = ["--config", GRID, "agent.name=a2c_independent", "agent.weighting=gradnorm"]
    assert train.main([*args, f"run_dir={run_dir}", "progress=false"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("error: agent.weighting='gradnorm' balances gradient norms")
    assert "a2c_independent shares no parameters" in line
    assert not run_dir.exists()


@pytest.mark.parametrize("hook", ["update", "epoch_end"])
def test_a_weighting_with_a_supervised_only_hook_is_refused_for_rl(tmp_path, capsys, hook):
    # a user's method with FAMO's or DWA's hook: the RL runner never calls it, so the method
    # would silently train as if the hook did nothing (only famo and dwa were refused, by name)
    from mtrl.weighting import WEIGHTINGS, Equal

    cls = type("Hooked", (Equal,), {hook: lambda self, *args: None})
    entries = dict(WEIGHTINGS._entries)
    WEIGHTINGS.register("hooked")(cls)
    try:
        run_dir = tmp_path / "run"
        args = ["--config", GRID, "agent.weighting=hooked", f"run_dir={run_dir}"]
        assert train.main(args) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: agent.weighting='hooked' relies on its {hook}() hook")
        assert not run_dir.exists()
    finally:
        WEIGHTINGS._entries = entries


def test_weighting_options_reach_the_method_and_the_record(tmp_path):
    # agent.weighting took no options: CAGrad ran with c = 0.5, MGDA unnormalised, whatever wanted
    args = ["agent.weighting=cagrad", "agent.weighting_kwargs.c=0.25", "progress=false"]
    runner = train.build(load_config(GRID, args), tmp_path / "run")
    runner.env.close()
    assert runner.weighting.c == 0.25
    assert runner.cfg.agent.weighting_kwargs == {"c": 0.25}
    plain = train.build(load_config(GRID, ["agent.weighting=cagrad"]), tmp_path / "run2")
    plain.env.close()
    assert plain.weighting.c == 0.5


def test_an_unknown_weighting_lists_only_the_methods_the_rl_agents_accept(tmp_path, capsys):
    # the list used to offer dwa, famo and great, which are then refused for RL
    args = ["--config", GRID, "agent.weighting=famo_x", f"run_dir={tmp_path / 'run'}"]
    assert train.main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    listed = line.split("valid for the RL agents: ")[1].split(", ")
    assert "pcgrad" in listed and "gradnorm" in listed and "equal" in listed
    assert not {"dwa", "famo", "great", "gradient_reversal"} & set(listed)
    for name in listed:  # every method offered is accepted
        assert train._build_weighting(name, 2) is not None


@pytest.mark.parametrize(
    ("agent", "weighting", "note"),
    [
        ("a2c_independent", "pcgrad", True),  # an aggregator with nothing to aggregate
        ("a2c_independent", "uncertainty", False),  # a loss weighting works on any agent
        ("a2c_multitask", "pcgrad", False),  # shares its encoder
        ("a2c_multitask", "gradnorm", False),
        ("distral_kl_1col", "gradnorm", False),  # every task's loss reaches pi0
    ],
)
def test_build_notes_a_weighting_that_reduces_to_equal(tmp_path, capsys, agent, weighting, note):
    overrides = [f"agent.name={agent}", f"agent.weighting={weighting}", _own_ent_coef(agent)]
    cfg = load_config(GRID, [*overrides, "env.num_envs_per_task=1", "progress=false"])
    train.build(cfg, tmp_path / "run").env.close()
    err = capsys.readouterr().err
    expected = (
        f"note: agent.weighting='{weighting}' combines the tasks' gradients on shared "
        f"parameters; {agent} shares none, so every task keeps its own plain gradient, as with "
        "agent.weighting='equal'\n"
    )
    assert err == (expected if note else "")


@pytest.mark.parametrize(
    ("agent", "override", "note"),
    [
        (
            "a2c_multitask",
            "agent.shared_encoder=true",
            "a2c_2col, distral_kl_2col, distral_klent_2col",
        ),
        ("distral_kl_2col", "agent.alpha=0.3", "distral_klent_1col, distral_klent_2col"),
        ("distral_klent_2col", "agent.task_heads=false", "a2c_multitask"),
        (
            "a2c_2col",
            "agent.distill_discount=false",
            ", ".join(f"distral_{v}" for v in ("kl_1col", "kl_2col", "klent_1col", "klent_2col")),
        ),
        (
            "distral_klent_1col",
            "agent.shared_encoder=true",
            "a2c_2col, distral_kl_2col, distral_klent_2col",
        ),
        ("a2c_2col", "agent.shared_encoder=true", None),  # read: no note
        ("a2c_2col", "agent.distill_lr=1e-3", None),  # its h0 column's optimiser
        ("distral_kl_1col", "agent.beta=7", None),  # the KL-only agents read beta (alpha = 1)
        ("a2c_multitask", "agent.shared_encoder=false", None),  # the default: nothing to say
    ],
)
def test_build_notes_an_agent_setting_the_agent_does_not_read(
    tmp_path, capsys, agent, override, note
):
    # the sweep found agent.shared_encoder, task_heads and the Distral settings silently ignored
    # by the agents they do not apply to (agent.alpha even on the KL-only Distral agents)
    cfg = load_config(
        GRID, [f"agent.name={agent}", _own_ent_coef(agent), override, "progress=false"]
    )
    train.build(cfg, tmp_path / "run").env.close()
    err = capsys.readouterr().err
    if note is None:
        assert err == ""
    else:
        key, value = override.split("=")
        shown = {"true": "True", "false": "False"}.get(value, value)
        assert err == f"note: {key}={shown} has no effect on {agent} (it applies to {note})\n"


@pytest.mark.parametrize(
    ("overrides", "note"),
    [
        (
            ["agent.optimizer=adam", "agent.rmsprop_init=1"],
            "agent.rmsprop_init=1.0 has no effect with agent.optimizer='adam' (it applies to "
            "rmsprop)",
        ),
        (
            ["agent.optimizer=adam", "agent.rmsprop_alpha=0.9"],
            "agent.rmsprop_alpha=0.9 has no effect with agent.optimizer='adam' (it applies to "
            "rmsprop)",
        ),
        (["agent.optimizer=rmsprop", "agent.rmsprop_init=1"], None),  # read: no note
        (
            ["env.suite=minatar", "env.tasks=[breakout]", "agent.hidden=[8]"],
            "agent.hidden=[8] has no effect on minatar (it sets the gridworld MLP's sizes; "
            "minatar uses a fixed conv encoder)",
        ),
        (["env.suite=minatar", "env.tasks=[breakout]", "agent.hidden=[]"], None),
        # another suite's settings: read only by that suite (they were ignored without a word)
        (
            ["env.atari.frameskip=2"],
            "env.atari.frameskip=2 has no effect with env.suite='gridworld'",
        ),
        (
            [
                "env.suite=minatar",
                "env.tasks=[breakout]",
                "agent.hidden=[]",
                "env.gridworld.map=far_room",
            ],
            "env.gridworld.map='far_room' has no effect with env.suite='minatar'",
        ),
        (["env.gridworld.map=far_room"], None),  # the suite's own setting
        (["env.atari.frameskip=4"], None),  # the schema's default: nothing to say
    ],
)
def test_build_notes_an_optimizer_or_suite_setting_that_is_not_read(
    tmp_path, capsys, overrides, note
):
    # the sweep found RMSprop's settings under adam, and agent.hidden on MinAtar/Atari (conv
    # encoders), silently ignored
    cfg = load_config(GRID, [*overrides, "progress=false"])
    train.build(cfg, tmp_path / "run").env.close()
    assert capsys.readouterr().err == ("" if note is None else f"note: {note}\n")


@pytest.mark.parametrize("agent", ["a2c_multitask", "a2c_independent", "a2c_2col"])
def test_an_a2c_baseline_without_entropy_bonus_is_noted(agent):
    # `agent.name=a2c_multitask` on a Distral preset (ent_coef 0 there: Distral's own entropy
    # term replaces A2C's bonus) silently trained a weaker baseline than the A2C presets
    from agents.config_schema import AgentConfig
    from agents.factory import ignored_settings

    assert ignored_settings(AgentConfig(name=agent, ent_coef=0.0)) == [
        f"agent.ent_coef=0: {agent} trains without A2C's entropy bonus (the Distral presets set "
        "0, Distral having its own entropy term; the A2C presets, configs/*_a2c*.yaml, use 0.01)"
    ]
    assert ignored_settings(AgentConfig(name=agent, ent_coef=0.01)) == []
    for distral in ("distral_kl_2col", "distral_klent_1col"):  # their presets' own setting
        assert ignored_settings(AgentConfig(name=distral, ent_coef=0.0)) == []


def test_the_entropy_note_is_printed_when_a_distral_preset_runs_a_baseline(tmp_path, capsys):
    preset = str(ROOT / "configs" / "gridworld_distral.yaml")
    cfg = load_config(preset, ["agent.name=a2c_multitask", "progress=false"])
    assert cfg.agent.ent_coef == 0  # the preset's, for Distral
    train.build(cfg, tmp_path / "run").env.close()
    assert capsys.readouterr().err.startswith("note: agent.ent_coef=0: a2c_multitask trains ")


@pytest.mark.parametrize("preset", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_no_preset_switched_to_another_suite_sets_that_suites_settings_in_vain(preset):
    from agents.config_schema import inert_suite_settings

    for suite in ("atari", "minatar", "gridworld"):
        cfg = load_config(str(ROOT / "configs" / preset), [f"env.suite={suite}", "env.tasks=[]"])
        assert inert_suite_settings(cfg) == [], (preset, suite)


def test_a_registered_agent_gets_no_notes_on_agent_settings():
    from agents.config_schema import AgentConfig
    from agents.factory import ignored_settings

    assert ignored_settings(AgentConfig(name="my_agent", shared_encoder=True, alpha=0.1)) == []


def test_agent_hidden_is_noted_only_for_a_suite_known_to_use_a_conv_encoder():
    from agents.config_schema import AgentConfig
    from agents.factory import ignored_settings

    cfg = AgentConfig(hidden=[8])
    assert ignored_settings(cfg) == ignored_settings(cfg, "gridworld") == []  # no suite: unknown
    assert ignored_settings(cfg, "atari") == [
        "agent.hidden=[8] has no effect on atari (it sets the gridworld MLP's sizes; atari uses "
        "a fixed conv encoder)"
    ]


# --- evaluation seeds ------------------------------------------------------------------------
def test_a_missing_preset_names_the_repository_copy_only_when_there_is_one(tmp_path, monkeypatch):
    # a relative preset path is read from the current directory, not from the repository
    from agents.config import ConfigError

    monkeypatch.chdir(tmp_path)
    shipped = ROOT / "configs" / "gridworld_a2c.yaml"
    with pytest.raises(ConfigError) as e:
        load_config("configs/gridworld_a2c.yaml")
    assert str(e.value) == (
        "config file 'configs/gridworld_a2c.yaml' not found (relative to the current directory; "
        f"the repository's is {str(shipped)!r}); pass an existing YAML file"
    )
    with pytest.raises(ConfigError) as e:
        load_config("configs/no_such_preset.yaml")
    assert str(e.value) == (
        "config file 'configs/no_such_preset.yaml' not found; pass an existing YAML file"
    )


def test_eval_seed_is_offset_and_stays_in_the_run_seed_range():
    assert eval_seed(3) == 3 + EVAL_SEED_OFFSET  # unchanged for every ordinary seed
    assert eval_seed(SEED_LIMIT - EVAL_SEED_OFFSET - 1) == SEED_LIMIT - 1
    assert eval_seed(SEED_LIMIT - EVAL_SEED_OFFSET) == 0
    top = eval_seed(SEED_LIMIT - 1)  # the largest seed the config accepts
    assert top == EVAL_SEED_OFFSET - 1
    # slot seeds of the largest task/env counts still fit a C int (the native ALE's reset)
    assert int(slot_seeds(top, 1000, 1000).max()) < 2**31


@pytest.mark.atari
def test_native_atari_resets_with_the_eval_seeds_of_the_largest_run_seed():
    # with seed + 10_000_000 unwrapped, this reset raised TypeError after training had finished
    from envs.atari import AtariVecEnv

    with AtariVecEnv(["Pong"], 2, backend="native") as env:
        obs = env.reset(seed=eval_seed(SEED_LIMIT - 1))
    assert obs.shape == (2, 4, 84, 84)


# --- custom map files ------------------------------------------------------------------------
def test_a_map_file_that_is_not_utf8_exits_2_with_one_line(tmp_path, capsys):
    # a map saved as UTF-16 (PowerShell's `>`) used to end in a UnicodeDecodeError traceback
    path = tmp_path / "map.txt"
    path.write_text("#####\n#S.0#\n#####\n", encoding="utf-16")
    run_dir = tmp_path / "run"
    args = ["--config", GRID, f"env.gridworld.map={path}", f"run_dir={run_dir}"]
    assert train.main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line == (
        f"error: map file {str(path)!r} is not UTF-8 text (byte 0 cannot be decoded); save it "
        "as plain ASCII"
    )
    assert not run_dir.exists()


def test_a_relative_map_path_is_saved_absolute_so_resume_works_from_elsewhere(
    tmp_path, monkeypatch
):
    # config.yaml kept "map.txt": `--resume` from another directory failed with "unknown map"
    work, other = tmp_path / "work", tmp_path / "other"
    work.mkdir()
    other.mkdir()
    (work / "map.txt").write_text("#######\n#S...0#\n#######\n")
    monkeypatch.chdir(work)
    run_dir = tmp_path / "run"
    args = ["--config", GRID, "env.gridworld.map=map.txt", f"run_dir={run_dir}"]
    assert train.main([*args, "total_steps=40", "progress=false", "eval.episodes=1"]) == 0
    assert load_config(run_dir / "config.yaml").env.gridworld.map == str(work / "map.txt")
    monkeypatch.chdir(other)
    assert train.main(["--resume", str(run_dir)]) == 0
    # a shipped map stays a name
    cfg = load_config(GRID, ["env.gridworld.map=corridor"])
    train._absolute_map_path(cfg)
    assert cfg.env.gridworld.map == "corridor"


# --- the printed summary ---------------------------------------------------------------------
def test_printed_summary_says_when_eval_max_steps_cut_the_evaluation(tmp_path, capsys):
    # summary.json had "max_steps_reached" but the console showed only "over 0 episodes"
    path = tmp_path / "map.txt"
    path.write_text("#######\n#S...0#\n#######\n")  # the goal is 4 steps away
    args = [
        "--config",
        GRID,
        f"env.gridworld.map={path}",
        f"run_dir={tmp_path / 'run'}",
        "env.num_envs_per_task=1",
        "total_steps=5",
        "progress=false",
        "eval.max_steps=2",
    ]
    assert train.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training: a2c_multitask on gridworld (0) to 5 steps in ")
    assert out[2:] == ["  0: mean_return n/a over 0 episodes (cut short by eval.max_steps)"]


@pytest.mark.parametrize(
    ("load", "override", "message"),
    [
        ("rl", "agent.lrr=1e-3", "unknown config key 'agent.lrr' (did you mean agent.lr?); the "
         "valid fields of 'agent' are listed by `python train.py --help`"),
        ("rl", "env.atari.frame_skip=2", "unknown config key 'env.atari.frame_skip' (did you mean "
         "env.atari.frameskip, env.atari.frame_stack?); the valid fields of 'env.atari' are "
         "listed by `python train.py --help`"),
        ("rl", "foo=1", "unknown config key 'foo'; the valid fields are listed by "
         "`python train.py --help`"),
        ("supervised", "supervised.epochz=1", "unknown config key 'supervised.epochz' (did you "
         "mean supervised.epochs?); the valid fields of 'supervised' are listed in docs/mtrl.md"),
        # a field of a section given at the top level: the section's key is suggested
        ("supervised", "run_dir=x", "unknown config key 'run_dir' (did you mean "
         "supervised.run_dir?); the valid fields are listed in docs/mtrl.md"),
        ("rl", "lr=0.1", "unknown config key 'lr' (did you mean agent.lr?); the valid fields are "
         "listed by `python train.py --help`"),
        ("rl", "max_episode_steps=9", "unknown config key 'max_episode_steps'; the valid fields "
         "are listed by `python train.py --help`"),  # only one level down: env.atari.* is two
    ],
)  # fmt: skip
def test_an_unknown_key_suggests_close_fields_and_where_the_list_is(load, override, message):
    # a typo got no suggestion (games and weightings did), and a supervised key was pointed to
    # both train.py --help and docs/mtrl.md although the kind of run is known
    from agents.config import ConfigError
    from agents.supervised_config import load_supervised

    with pytest.raises(ConfigError) as e:
        if load == "rl":
            load_config(GRID, [override])
        else:
            load_supervised(ROOT / "configs" / "supervised" / "two_digits.yaml", [override])
    assert str(e.value) == message


def test_a_weighting_option_without_a_default_names_the_key_to_set(tmp_path, capsys):
    # every built-in method the RL agents accept has defaults: only a user's method can miss one
    from mtrl.weighting import WEIGHTINGS, Equal

    class Needy(Equal):
        def __init__(self, num_tasks: int, scale: float) -> None:
            super().__init__(num_tasks)
            self.scale = scale

    entries = dict(WEIGHTINGS._entries)
    WEIGHTINGS.register("needy")(Needy)
    try:
        run_dir = tmp_path / "run"
        assert train.main(["--config", GRID, "agent.weighting=needy", f"run_dir={run_dir}"]) == 2
        assert _one_error_line(capsys.readouterr().err) == (
            "error: agent.weighting='needy': weighting 'needy' needs scale=... (no default); "
            "set agent.weighting_kwargs.scale=<value>"
        )
        assert not run_dir.exists()
        assert train._build_weighting("needy", 2, {"scale": 0.5}).scale == 0.5  # given: built
    finally:
        WEIGHTINGS._entries = entries
