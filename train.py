"""mtrl command line: train a multi-task agent from a YAML config.

    python train.py                                   # configs/default.yaml
    python train.py --config configs/gridworld_a2c.yaml seed=3 agent.lr=1e-3
    python train.py --help                            # every config field with its doc
    python train.py --resume runs/RUN_DIR             # continue a stopped run exactly

A user's mistake (bad key, value, type, file, game, checkpoint) prints one line to stderr and exits
with 2, before any run directory is created or changed. SIGINT/SIGTERM checkpoint and exit 130/143;
a diverged run exits 3 (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:  # torch and the config load lazily, after argument parsing
    from agents.config_schema import AgentConfig, Config
    from agents.runner import Runner
    from envs.base import MultiTaskVecEnv
    from mtrl.weighting.base import LossWeighting

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        from agents.config import one_line

        print(f"error: {one_line(message)}; see `python train.py --help`", file=sys.stderr)
        raise SystemExit(2)

    def format_help(self) -> str:
        """The help, then the valid names, read from the registries only when help is shown."""
        return super().format_help() + _names_text()


def _names_text() -> str:
    """The values of agent.name, agent.weighting and the small suites' tasks and maps."""
    from agents.factory import names as agents
    from envs.gridworld_maps import available_maps
    from envs.minatar import GAMES

    rows = [
        ("agent.name", agents()),
        ("agent.weighting", _rl_weightings()),
        ("env.gridworld.map", [*available_maps(), "or a .txt map file"]),
        ("env.tasks (minatar)", list(GAMES)),
    ]
    lines = ["", "valid names:"]
    for key, values in rows:
        lines.append(f"  {key:<22} {', '.join(values)}")
    lines.append(f"  {'env.tasks (atari)':<22} ALE game names, e.g. Pong, Breakout, SpaceInvaders")
    lines.append(f"  {'env.tasks (gridworld)':<22} the map's goal digits, e.g. 0, 1, 2, 3")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    from agents.config_schema import help_text
    from agents.supervised_config import SupervisedConfig

    p = _Parser(
        prog="train.py",
        description="Train a multi-task RL agent. Overrides are dotted key=value pairs.",
        epilog=(
            "config fields (key, type, default, doc). The defaults are the schema's: "
            "configs/default.yaml,\nwhich `python train.py` runs without --config, sets many "
            "of them (Distral on 4 Atari games).\n" + help_text() + "\n\nsupervised config "
            "fields (configs/supervised/*.yaml; docs/mtrl.md):\n"
            + help_text(SupervisedConfig, "supervised.")
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", default=None, help="YAML config file (default: configs/default.yaml)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the run in RUN_DIR from checkpoints/last.pt to its own total_steps",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. agent.lr=3e-4 seed=1")
    return p


def _suite_kwargs(cfg: Config) -> dict[str, Any]:
    from agents.config import to_dict

    kwargs = to_dict(cfg)["env"][cfg.env.suite]
    if cfg.env.suite == "gridworld" and kwargs.get("max_episode_steps") == 0:
        kwargs["max_episode_steps"] = None
    return kwargs


def _absolute_map_path(cfg: Config) -> None:
    """A gridworld map given as a relative file path becomes absolute before the config is saved,
    so ``--resume`` from another directory reads the same file (it failed with "unknown map")."""
    from envs.base import EnvError
    from envs.gridworld_maps import map_path

    if cfg.env.suite != "gridworld":
        return
    try:
        path = map_path(cfg.env.gridworld.map)
    except EnvError:
        return  # build() reports it
    if not path.is_absolute():  # a shipped map's file is absolute: its name stays
        cfg.env.gridworld.map = str(path.absolute())


def build(cfg: Config, run_dir: Path, record_tasks: bool = True) -> Runner:
    """Everything a run needs, built (and so validated) before anything is written.

    ``record_tasks``: ``cfg.env.tasks`` becomes the env's task list (canonical names, the
    suite's default filled in), so config.yaml and checkpoints say what was trained. A resume
    passes False: it keeps its checkpoint's value (runs before this recorded ``[]``)."""
    import torch

    from agents.config_schema import inert_suite_settings
    from agents.factory import build_agent
    from agents.runner import Runner
    from agents.seeding import resolve_device, seed_everything, start_flushing_workers
    from envs.factory import make_multitask_env

    device = resolve_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    start_flushing_workers()
    seed_everything(cfg.seed, cfg.deterministic)
    tasks = list(cfg.env.tasks) or None
    kwargs = _suite_kwargs(cfg)
    if cfg.env.workers:
        from envs.workers import WorkerVecEnv

        env: MultiTaskVecEnv = WorkerVecEnv(
            cfg.env.suite, tasks, cfg.env.num_envs_per_task, kwargs, cfg.seed
        )
    else:
        env = make_multitask_env(cfg.env.suite, tasks, cfg.env.num_envs_per_task, **kwargs)
    if record_tasks:
        cfg.env.tasks = list(env.task_names)
    eval_envs = cfg.eval.num_envs_per_task or cfg.env.num_envs_per_task

    def make_eval_env() -> MultiTaskVecEnv:
        return make_multitask_env(cfg.env.suite, env.task_names, eval_envs, **kwargs)

    obs_shape = tuple(env.single_observation_space.shape)
    num_actions = int(env.single_action_space.n)
    agent = build_agent(cfg.agent, cfg.env.suite, obs_shape, num_actions, env.num_tasks)
    for agent_note in (*agent.notes, *inert_suite_settings(cfg)):
        print(f"note: {agent_note}", file=sys.stderr)
    weighting = _build_weighting(cfg.agent.weighting, env.num_tasks, cfg.agent.weighting_kwargs)
    note = _check_weighting_sharing(weighting, cfg.agent, bool(agent.shared_parameters()))
    if note:
        print(f"note: {note}", file=sys.stderr)
    return Runner(cfg, env, agent, run_dir, device, weighting, make_eval_env)


def _check_weighting_sharing(
    weighting: LossWeighting, agent_cfg: AgentConfig, shares: bool
) -> str | None:
    """Refuse a weighting that cannot work on an agent without shared parameters; return a note
    (or None) when the chosen method would silently reduce to ``equal`` on such an agent.

    GradNorm balances gradient norms at the last shared layer and raised mid-run without one;
    gradient aggregators (PCGrad, MGDA, ...) combine per-task gradients of the shared parameters
    and, with none, give every task its own plain gradient.
    """
    from agents.config import ConfigError
    from mtrl.weighting.base import GradientAggregator
    from mtrl.weighting.gradnorm import GradNorm

    if shares:
        return None
    name, agent = agent_cfg.weighting, agent_cfg.name
    if isinstance(weighting, GradNorm):
        raise ConfigError(
            f"agent.weighting={name!r} balances gradient norms at a layer every task shares; "
            f"{agent} shares no parameters between tasks (use a2c_multitask or a Distral agent, "
            "or another weighting)"
        )
    if isinstance(weighting, GradientAggregator):
        return (
            f"agent.weighting={name!r} combines the tasks' gradients on shared parameters; "
            f"{agent} shares none, so every task keeps its own plain gradient, as with "
            "agent.weighting='equal'"
        )
    return None


def _rl_refusal(name: str) -> str | None:
    """Why the registered weighting ``name`` cannot train the RL agents (None if it can)."""
    from mtrl import weighting

    if name == "famo":
        return (
            "agent.weighting='famo' needs the losses re-evaluated on the same batch after each "
            "step, which the RL runner does not do; use it with mtrl's supervised Trainer"
        )
    if name == "dwa":  # its weights would stay 1 for ever: refuse rather than train `equal`
        return (
            "agent.weighting='dwa' averages each task's loss over epochs, which RL training does "
            "not have; use it with mtrl's supervised Trainer, or uncertainty/gradnorm here"
        )
    if name == "gradient_reversal":  # with no adversarial task it is `equal`: refuse as dwa
        return (
            "agent.weighting='gradient_reversal' reverses the gradients of the tasks it is told "
            "are adversarial, which the RL runner does not support (with none it trains as "
            "'equal'); use it with mtrl's supervised Trainer (supervised.weighting.kwargs."
            "adversarial)"
        )
    cls = weighting.WEIGHTINGS.get(name)
    for hook, when in (("update", "after each optimiser step"), ("epoch_end", "after each epoch")):
        if callable(getattr(cls, hook, None)):  # e.g. a user's method (docs/extending.md)
            return (
                f"agent.weighting={name!r} relies on its {hook}() hook, which mtrl's supervised "
                f"Trainer calls {when} and the RL runner never does; use it there"
            )
    if getattr(cls, "needs_features", False):  # e.g. GREAT
        return (
            f"agent.weighting={name!r} classifies per-sample gradients w.r.t. one shared "
            "representation, which the RL agents do not expose; use it with mtrl's supervised "
            "Trainer"
        )
    return None


def _rl_weightings() -> list[str]:
    """The registered weightings the RL agents accept (the valid values of agent.weighting)."""
    from mtrl import weighting

    return [n for n in weighting.names() if _rl_refusal(n) is None]


def _build_weighting(
    name: str, num_tasks: int, kwargs: dict[str, Any] | None = None
) -> LossWeighting:
    """agent.weighting with its options agent.weighting_kwargs, checked: a ConfigError names an
    unknown or RL-refused method, or an option that is missing, unknown or out of range."""
    import difflib

    from agents.config import ConfigError
    from mtrl import weighting

    if name not in weighting.WEIGHTINGS:
        usable = _rl_weightings()
        close = difflib.get_close_matches(name, usable, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(
            f"agent.weighting: unknown weighting {name!r}{hint}; valid for the RL agents: "
            f"{', '.join(usable)}"
        )
    refusal = _rl_refusal(name)
    if refusal:
        raise ConfigError(refusal)
    try:
        return weighting.build(name, num_tasks, **(kwargs or {}))
    except (TypeError, ValueError) as e:
        hint = "".join(
            f"; set agent.weighting_kwargs.{m}=<value>" for m in getattr(e, "missing", [])
        )
        raise ConfigError(f"agent.weighting={name!r}: {str(e).splitlines()[0]}{hint}") from None


def resume(run_dir: Path, overrides: list[str]) -> Runner:
    """A Runner that continues the run in ``run_dir`` from its last checkpoint (validated first;
    nothing in ``run_dir`` changes before :meth:`Runner.run`)."""
    from agents.resume import load_resume_state

    cfg, state, log_end = load_resume_state(run_dir, overrides)
    runner = build(cfg, run_dir, record_tasks=False)
    try:
        runner.load_state_dict(state, log_end)
    except BaseException:
        runner.env.close()
        raise
    return runner


def main(argv: list[str] | None = None) -> int:
    """Train (or resume); exit code 0, 2 (bad input), 3 (diverged), 130/143 (interrupted) or 141
    (stdout closed by its reader)."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # a closed pipe fails here, not in Python's flush at exit
        return code
    except KeyboardInterrupt:  # Ctrl-C while starting up (imports, env construction)
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout's reader has gone (`train.py ... | head -1`): the rest of the output is
        # dropped, quietly, as a shell tool's would be; what the run wrote to disk stays. stdout
        # then points at /dev/null, or Python's flush at exit would raise the error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE: what a shell reports for a writer whose pipe closed


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    from agents.supervised_config import is_supervised_file

    if args.config and args.resume is None and is_supervised_file(args.config):
        # a top-level `supervised:` key: mtrl's supervised Trainer (agents/supervised_cli.py)
        from agents.supervised_cli import main as supervised_main

        return supervised_main(args.config, args.overrides)
    resuming_supervised = args.resume is not None and args.config is None
    if resuming_supervised and is_supervised_file(Path(args.resume) / "config.yaml"):
        from agents.supervised_cli import main as supervised_main

        return supervised_main(None, args.overrides, resume=args.resume)
    from agents.config import ConfigError, load_config, one_line
    from agents.resume import new_run_dir
    from agents.signals import DivergenceError, Interrupted
    from envs.base import EnvError
    from mtrl.io import discard_if_empty
    from mtrl.registry import UnknownNameError

    try:
        if args.resume is not None:
            if args.config is not None:
                raise ConfigError("--resume takes the config from the checkpoint; drop --config")
            run_dir = Path(args.resume)
            runner = resume(run_dir, args.overrides)
            if not runner.env_restored:  # said before training, where a watcher sees it
                print(
                    "note: environments were reset on resume (this suite has no env snapshots; "
                    "the episodes in progress are lost)",
                    file=sys.stderr,
                )
        else:
            cfg = load_config(args.config or str(DEFAULT_CONFIG), args.overrides)
            _absolute_map_path(cfg)
            automatic = not cfg.run_dir
            run_dir = new_run_dir(cfg)
            cfg.run_dir = str(run_dir)  # config.yaml and checkpoints name the automatic directory
            try:
                runner = build(cfg, run_dir)
            except BaseException:
                if automatic:  # the directory claimed above: nothing half-written
                    discard_if_empty(run_dir)
                    discard_if_empty(run_dir.parent)  # runs/ itself, if this run created it
                raise
    except (ConfigError, EnvError, UnknownNameError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    cfg = runner.cfg
    what = f"{cfg.agent.name} on {cfg.env.suite} ({', '.join(runner.env.task_names)})"
    try:  # the first line inside: a closed stdout (BrokenPipeError) still closes the envs
        if runner.resumed and runner.update >= runner.num_updates():  # nothing left to train
            start = f"already finished at step {runner.global_step:,}: evaluating {what}"
            print(f"{start} in {run_dir}", flush=True)
        else:
            action = f"resuming at step {runner.global_step:,}" if runner.resumed else "training"
            start = f"{action}: {what} to {cfg.total_steps:,} steps in {run_dir}"
            print(f"{start}; Ctrl-C stops with a checkpoint", flush=True)
        summary = runner.run()
    except Interrupted as e:
        print(e.resume_hint(run_dir), file=sys.stderr)
        return e.exit_code
    except DivergenceError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        runner.env.close()
    print(f"run written to {run_dir} (sps {summary['sps']:.0f})")
    for label, key in (("task policies", "tasks"), ("distilled pi0", "pi0_tasks")):
        if key not in summary:
            continue
        if "pi0_tasks" in summary:
            print(f" {label}:")
        for name, stats in summary[key].items():
            ret = stats["mean_return"]
            shown = "n/a" if ret is None else f"{ret:.3f}"
            hns = stats.get("human_normalised")
            extra = "" if hns is None else f" (human-normalised {hns:.3f})"
            if stats.get("max_steps_reached"):  # fewer episodes than eval.episodes asked for
                extra += " (cut short by eval.max_steps)"
            print(f"  {name}: mean_return {shown} over {stats['episodes']} episodes{extra}")
    return 0


if __name__ == "__main__":
    from agents.omp import limit_openmp_spinning

    limit_openmp_spinning()  # before torch loads (see agents/omp.py)
    sys.exit(main())
