"""mtrl command line: train a multi-task agent from a YAML config.

    python train.py                                   # configs/default.yaml
    python train.py --config configs/gridworld_a2c.yaml seed=3 agent.lr=1e-3
    python train.py --help                            # every config field with its doc

A user's mistake (bad key, value, type, file, game) prints one line to stderr and exits with 2,
before any run directory is created.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"


def _parser() -> argparse.ArgumentParser:
    from agents.config import help_text

    p = argparse.ArgumentParser(
        prog="train.py",
        description="Train a multi-task RL agent. Overrides are dotted key=value pairs.",
        epilog="config fields (key, type, default, doc):\n" + help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from agents.config import ConfigError, load_config
    from envs.base import EnvError
    from mtrl.registry import UnknownNameError

    try:
        cfg = load_config(args.config, args.overrides)
        if cfg.run_dir:
            run_dir = Path(cfg.run_dir)
            if run_dir.exists() and any(run_dir.iterdir()):
                raise ConfigError(
                    f"run_dir={cfg.run_dir!r} already exists and is not empty; choose a new run_dir"
                )
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            run_dir = Path("runs") / f"{cfg.agent.name}-{cfg.env.suite}-{stamp}"
        runner = build(cfg, run_dir)
    except (ConfigError, EnvError, UnknownNameError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        summary = runner.run()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        runner.env.close()
    print(f"run written to {run_dir} (sps {summary['sps']:.0f})")
    for name, stats in summary["tasks"].items():
        ret = stats["mean_return"]
        shown = "n/a" if ret is None else f"{ret:.3f}"
        print(f"  {name}: mean_return {shown} over {stats['episodes']} episodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
