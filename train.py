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
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


#: Config keys a resumed run may change (they do not alter what is learned).
RESUME_SAFE = (
    "progress",
    "log_interval",
    "checkpoint_interval",
    "checkpoint_minutes",
    "keep_checkpoints",
    "max_nonfinite_updates",
    "torch_threads",
    "device",
    "eval.",
)


def _one_line(message: object) -> str:
    """``message`` with every non-printable character (newlines too) escaped: one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(message))


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {_one_line(message)}; see `python train.py --help`", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    from agents.config import help_text

    p = _Parser(
        prog="train.py",
        description="Train a multi-task RL agent. Overrides are dotted key=value pairs.",
        epilog="config fields (key, type, default, doc):\n" + help_text(),
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


def _suite_kwargs(cfg) -> dict:
    from agents.config import to_dict

    kwargs = to_dict(cfg)["env"][cfg.env.suite]
    if cfg.env.suite == "gridworld" and kwargs.get("max_episode_steps") == 0:
        kwargs["max_episode_steps"] = None
    return kwargs


def build(cfg, run_dir: Path):
    """Everything a run needs, built (and so validated) before anything is written."""
    import torch

    from agents.factory import build_agent
    from agents.runner import Runner
    from agents.seeding import resolve_device, seed_everything
    from envs.factory import make_multitask_env

    device = resolve_device(cfg.device)
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    seed_everything(cfg.seed, cfg.deterministic)
    tasks = list(cfg.env.tasks) or None
    kwargs = _suite_kwargs(cfg)
    if cfg.env.workers:
        from envs.workers import WorkerVecEnv

        env = WorkerVecEnv(cfg.env.suite, tasks, cfg.env.num_envs_per_task, kwargs, cfg.seed)
    else:
        env = make_multitask_env(cfg.env.suite, tasks, cfg.env.num_envs_per_task, **kwargs)
    eval_envs = cfg.eval.num_envs_per_task or cfg.env.num_envs_per_task

    def make_eval_env():
        return make_multitask_env(cfg.env.suite, env.task_names, eval_envs, **kwargs)

    obs_shape = tuple(env.single_observation_space.shape)
    num_actions = int(env.single_action_space.n)
    agent = build_agent(cfg.agent, cfg.env.suite, obs_shape, num_actions, env.num_tasks)
    weighting = _build_weighting(cfg.agent.weighting, env.num_tasks)
    return Runner(cfg, env, agent, run_dir, device, weighting, make_eval_env)


def _build_weighting(name: str, num_tasks: int):
    from agents.config import ConfigError
    from mtrl import weighting
    from mtrl.registry import UnknownNameError

    if name == "famo":
        raise ConfigError(
            "agent.weighting='famo' needs the losses re-evaluated on the same batch after each "
            "step, which the RL runner does not do; use it with mtrl's supervised Trainer"
        )
    try:
        return weighting.build(name, num_tasks)
    except UnknownNameError as e:
        raise ConfigError(f"agent.weighting: {e}") from None


def _check_new_run_dir(cfg) -> Path:
    """The run directory of a new run: must not exist with content, and its parent must be a
    directory."""
    from agents.config import ConfigError

    if cfg.run_dir:
        run_dir = Path(cfg.run_dir)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{cfg.agent.name}-{cfg.env.suite}-{stamp}"
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ConfigError(
                f"run_dir={str(run_dir)!r} already exists and is not an empty directory; "
                "choose a new run_dir"
            )
        parent = run_dir.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"run_dir={str(run_dir)!r} cannot be created: {parent} is a file")
    except OSError as e:
        raise ConfigError(f"run_dir={str(run_dir)!r} cannot be used: {e.strerror or e}") from None
    return run_dir


def _diff_keys(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            keys += _diff_keys(va, vb, f"{prefix}{k}.")
        elif va != vb:
            keys.append(f"{prefix}{k}")
    return keys


def resume(run_dir: Path, overrides: list[str]):
    """Validate ``run_dir`` and its last checkpoint and return a Runner ready to continue it.
    Nothing in ``run_dir`` is changed before :meth:`Runner.run`."""
    from agents.checkpoint import load_checkpoint
    from agents.config import (
        Config,
        ConfigError,
        load_config,
        merge_structured,
        to_dict,
        validate,
    )

    try:
        if not run_dir.is_dir():
            what = "is not a directory" if run_dir.exists() else "not found"
            raise ConfigError(f"run directory {str(run_dir)!r} {what}; pass a RUN_DIR to resume")
        state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        saved = state["config"]
        if not isinstance(saved, dict):
            raise ConfigError(f"checkpoint in {str(run_dir)!r} holds no config")
        try:
            cfg = merge_structured(Config, saved, overrides)
        except ConfigError as e:
            raise ConfigError(f"checkpoint config is incompatible with this version: {e}") from None
        validate(cfg)
        changed = _diff_keys(saved, to_dict(cfg))
        bad = [k for k in changed if not k.startswith(RESUME_SAFE)]
        if bad:
            raise ConfigError(
                f"cannot change {', '.join(bad)} when resuming; only {', '.join(RESUME_SAFE)} may "
                "change"
            )
        on_disk = run_dir / "config.yaml"
        if on_disk.exists():
            differ = [
                k
                for k in _diff_keys(saved, to_dict(load_config(on_disk)))
                if not k.startswith(RESUME_SAFE)
            ]
            if differ:
                raise ConfigError(
                    f"config.yaml in {str(run_dir)!r} differs from its checkpoint in "
                    f"{', '.join(differ)}; the checkpoint is from another run or agent"
                )
        cfg.run_dir = str(run_dir)
        history = _read_losses(run_dir / "losses.jsonl", int(state["counters"]["update"]))
    except ConfigError:
        raise
    except OSError as e:
        raise ConfigError(f"run directory {str(run_dir)!r} cannot be read: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(
            f"checkpoint in {str(run_dir)!r} is malformed ({type(e).__name__}: {e})"
        ) from None
    runner = build(cfg, run_dir)
    try:
        runner.load_state_dict(state, history)
    except BaseException:
        runner.env.close()
        raise
    return runner


def _read_losses(path: Path, updates: int) -> list[dict[str, float]]:
    """The first ``updates`` records of ``losses.jsonl`` (the ones the checkpoint covers)."""
    import json

    from agents.config import ConfigError

    if not path.is_file():
        raise ConfigError(f"{str(path)!r} not found; the run directory is incomplete")
    history = []
    with path.open() as f:
        for line in f:
            if len(history) == updates:
                break
            try:
                record = json.loads(line)
            except ValueError:
                break
            if not isinstance(record, dict):
                break
            history.append(record)
    if len(history) != updates:
        raise ConfigError(
            f"{str(path)!r} has {len(history)} valid records but the checkpoint is at update "
            f"{updates}; the run directory is damaged"
        )
    return history


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from agents.supervised import is_supervised_file

    if args.config and args.resume is None and is_supervised_file(args.config):
        # a top-level `supervised:` key: mtrl's supervised Trainer (agents/supervised.py)
        from agents.supervised import main as supervised_main

        return supervised_main(args.config, args.overrides)
    from agents.config import ConfigError, load_config
    from agents.signals import DivergenceError, Interrupted
    from envs.base import EnvError
    from mtrl.registry import UnknownNameError

    try:
        if args.resume is not None:
            if args.config is not None:
                raise ConfigError("--resume takes the config from the checkpoint; drop --config")
            run_dir = Path(args.resume)
            runner = resume(run_dir, args.overrides)
        else:
            cfg = load_config(args.config or str(DEFAULT_CONFIG), args.overrides)
            run_dir = _check_new_run_dir(cfg)
            runner = build(cfg, run_dir)
    except (ConfigError, EnvError, UnknownNameError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    try:
        summary = runner.run()
    except Interrupted as e:
        print(
            f"{e}; checkpoint written; continue with: python train.py --resume {run_dir}",
            file=sys.stderr,
        )
        return e.exit_code
    except DivergenceError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        runner.env.close()
    if not runner.env_restored:
        print("note: environments were reset on resume (this suite has no env snapshots)")
    print(f"run written to {run_dir} (sps {summary['sps']:.0f})")
    for name, stats in summary["tasks"].items():
        ret = stats["mean_return"]
        shown = "n/a" if ret is None else f"{ret:.3f}"
        print(f"  {name}: mean_return {shown} over {stats['episodes']} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
