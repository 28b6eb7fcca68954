"""Learning benchmark: all seven agents x seeds on a gridworld with shared structure and MinAtar.

    python bench/learning.py                                  # full run (see docs/benchmarks.md)
    python bench/learning.py --suites gridworld --gridworld-seeds 2 --gridworld-steps 50000
    python bench/learning.py --from-json docs/learning_results.json   # re-render only
    python bench/learning.py --suites minatar --set agent.eps=0.00316 --out /tmp/eps  # ablation

Each run trains with the agent's YAML preset (``AGENT_CONFIGS``) and turns ``runner.episode_log``
into rolling per-task learning curves on a fixed step grid; ``bench/learning_report.py`` derives
steps to threshold, area under the curve and final return, and writes the table, plots and JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

AGENTS = [
    "a2c_multitask",
    "a2c_independent",
    "a2c_2col",
    "distral_kl_1col",
    "distral_kl_2col",
    "distral_klent_1col",
    "distral_klent_2col",
]
SUITES = ["gridworld", "minatar"]
# Preset per (suite, agent); the four Distral variants share one preset (the *_kl_* agents force
# alpha = 1 themselves).
AGENT_CONFIGS: dict[str, dict[str, str]] = {
    suite: {
        "a2c_multitask": f"configs/{suite}_a2c.yaml",
        "a2c_independent": f"configs/{suite}_a2c_independent.yaml",
        "a2c_2col": f"configs/{suite}_a2c_2col.yaml",
        **{a: f"configs/{suite}_distral.yaml" for a in AGENTS if a.startswith("distral")},
    }
    for suite in SUITES
}
DEFAULT_STEPS = {"gridworld": 300_000, "minatar": 500_000}
GRIDWORLD_MAP = "far_room"
CURVE_POINTS = 60  # points of the step grid of every learning curve
WINDOW = 20  # rolling window: the last WINDOW finished training episodes of each task
RANDOM_EPISODES = 40  # random-policy episodes per MinAtar game for the normalisation base


def rolling_curves(
    log: list[tuple[int, int, float, int]], num_tasks: int, grid: np.ndarray, window: int
) -> dict[str, list[list[float | None]]]:
    """Per task and grid step x: mean return, success rate and mean length of the task's last
    ``window`` training episodes finished at or before x (None before its first episode)."""
    out: dict[str, list[list[float | None]]] = {"return": [], "success": [], "length": []}
    arr = np.asarray(log, dtype=np.float64).reshape(-1, 4)
    for k in range(num_tasks):
        ep = arr[arr[:, 1] == k]
        ends = np.searchsorted(ep[:, 0], grid, side="right")
        rows: dict[str, list[float | None]] = {key: [] for key in out}
        for end in ends:
            w = ep[max(0, end - window) : end]
            has = len(w) > 0
            rows["return"].append(float(w[:, 2].mean()) if has else None)
            rows["success"].append(float((w[:, 2] > 0).mean()) if has else None)
            rows["length"].append(float(w[:, 3].mean()) if has else None)
        for key in out:
            out[key].append(rows[key])
    return out


def run_overrides(spec: dict[str, Any]) -> list[str]:
    """The overrides one run applies to its agent's preset: the bench's settings, then the
    user's (``spec["overrides"]``)."""
    agent, seed, steps = spec["agent"], spec["seed"], spec["steps"]
    overrides = [
        f"agent.name={agent}",
        f"seed={seed}",
        f"total_steps={steps}",
        "progress=false",
        "torch_threads=1",
        "device=cpu",
        f"log_interval={max(steps // 20, 1)}",
        f"checkpoint_interval={10 * steps}",
    ]
    if spec["suite"] == "gridworld":
        overrides += [f"env.gridworld.map={spec['map']}", "eval.episodes=32"]
    else:
        overrides.append("eval.episodes=0")  # greedy MinAtar episodes can run to 10k steps
    return overrides + list(spec.get("overrides", []))


def config_key(spec: dict[str, Any]) -> str:
    """Short hash of the run's resolved config, so a cached run is reused only while its preset
    and overrides still resolve to the same settings (``eval.*`` left out when it evaluates
    nothing, and ``progress``, which changes no result)."""
    from agents.config import load_config, to_dict

    cfg = to_dict(
        load_config(ROOT / AGENT_CONFIGS[spec["suite"]][spec["agent"]], run_overrides(spec))
    )
    cfg.pop("progress", None)
    if cfg["eval"]["episodes"] == 0:
        cfg.pop("eval")
    return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (suite, agent, seed) for ``spec["steps"]`` steps; return its curves and timing."""
    import train
    from agents.config import load_config
    from envs.gridworld import GridworldVecEnv

    suite, agent, seed, steps = spec["suite"], spec["agent"], spec["seed"], spec["steps"]
    overrides = run_overrides(spec)
    cfg = load_config(ROOT / AGENT_CONFIGS[suite][agent], overrides)
    with tempfile.TemporaryDirectory() as tmp:
        runner = train.build(cfg, Path(tmp) / "run")
        start = time.perf_counter()
        try:
            summary = runner.run()
        finally:
            runner.env.close()
        elapsed = time.perf_counter() - start
    names = list(runner.env.task_names)
    grid = np.linspace(steps / CURVE_POINTS, steps, CURVE_POINTS).round().astype(np.int64)
    result: dict[str, Any] = {
        "suite": suite,
        "agent": agent,
        "seed": seed,
        "steps": int(runner.global_step),
        "seconds": elapsed,
        "sps": summary["sps"],
        "tasks": names,
        "episodes": len(runner.episode_log),
        "grid": grid.tolist(),
        "curves": rolling_curves(runner.episode_log, len(names), grid, WINDOW),
        "greedy_eval": summary.get("tasks", {}),
        "config": f"{AGENT_CONFIGS[suite][agent]} " + " ".join(overrides),
        "code": str(Path(train.__file__).resolve().parent),
    }
    if suite == "gridworld":
        env = GridworldVecEnv(spec["map"], names, 1)
        result["optimal_length"] = [env.mean_optimal_length(t) for t in names]
    return result


def random_returns(episodes: int, seed: int = 12345) -> dict[str, float]:
    """Mean raw return of the uniform random policy per MinAtar game (the normalisation base)."""
    import torch

    from agents.evaluate import evaluate
    from envs.minatar import GAMES, NUM_ACTIONS, MinAtarVecEnv

    env = MinAtarVecEnv(list(GAMES), 4)
    gen = torch.Generator().manual_seed(seed)
    try:
        res = evaluate(
            env,
            lambda obs: torch.randint(0, NUM_ACTIONS, obs.shape[:2], generator=gen),
            episodes,
            seed,
            torch.device("cpu"),
        )
    finally:
        env.close()
    return {game: float(stats["mean_return"] or 0.0) for game, stats in res.items()}


def run_benchmark(
    suites: list[str],
    agents: list[str],
    seeds: dict[str, list[int]],
    steps: dict[str, int],
    cache: Path,
    workers: int = 2,
    gridworld_map: str = GRIDWORLD_MAP,
    command: str = "",
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run every (suite, agent, seed), reusing finished runs cached as JSON under ``cache``.

    Runs are ordered suite, seed, agent so a cut-short run still covers every agent; with
    ``workers > 1`` they go to that many spawned processes (torch threads = 1 each).
    ``overrides`` (``key=value``) apply to every run after its preset. A cached run is keyed by
    its resolved config (:func:`config_key`): edit a preset or pass overrides and its runs are
    trained anew.
    """
    cache.mkdir(parents=True, exist_ok=True)
    overrides = list(overrides)
    specs = [
        {
            "suite": s,
            "agent": a,
            "seed": seed,
            "steps": steps[s],
            "map": gridworld_map,
            "overrides": overrides,
        }
        for s in suites
        for seed in seeds[s]
        for a in agents
    ]
    for spec in specs:
        spec["key"] = config_key(spec)

    def path(spec: dict[str, Any]) -> Path:
        extra = f"-{spec['map']}" if spec["suite"] == "gridworld" else ""
        name = f"{spec['suite']}{extra}-{spec['agent']}-s{spec['seed']}-{spec['steps']}"
        return cache / f"{name}-{spec['key']}.json"

    todo = [s for s in specs if not path(s).is_file()]
    started = time.perf_counter()

    def done(spec: dict[str, Any], res: dict[str, Any]) -> None:
        path(spec).write_text(json.dumps(res) + "\n")
        wall = time.perf_counter() - started
        print(
            f"[{wall:7.0f}s] {res['suite']:9s} {res['agent']:18s} seed {res['seed']} "
            f"{res['seconds']:6.1f}s {res['sps']:7.0f} sps",
            flush=True,
        )

    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [(s, pool.submit(run_one, s)) for s in todo]
            for spec, fut in futures:
                done(spec, fut.result())
    else:
        for spec in todo:
            done(spec, run_one(spec))
    runs = [json.loads(path(s).read_text()) for s in specs]
    random = random_returns(RANDOM_EPISODES) if "minatar" in suites else {}
    return {
        "minatar_random": random,
        "meta": {
            "machine": f"{cpu_name()}, {_cpu_count()} cores, {platform.system()}",
            "python": platform.python_version(),
            "torch": _torch_version(),
            "workers": workers,
            "wall_seconds": time.perf_counter() - started,
            "steps": {s: steps[s] for s in suites},
            "seeds": {s: seeds[s] for s in suites},
            "gridworld_map": gridworld_map,
            "window": WINDOW,
            "command": command,
            "overrides": overrides,
        },
        "runs": runs,
    }


def check_overrides(suites: list[str], agents: list[str], overrides: list[str]) -> str | None:
    """The first error ``overrides`` give on top of any (suite, agent) preset, else None: found
    before a run starts, not in a worker minutes later."""
    from agents.config import ConfigError, load_config

    for suite in suites:
        for agent in agents:
            try:
                load_config(ROOT / AGENT_CONFIGS[suite][agent], [f"agent.name={agent}", *overrides])
            except ConfigError as e:
                return f"{e} (with {AGENT_CONFIGS[suite][agent]})"
    return None


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows; results differ between models."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    import torch

    return torch.__version__


def main(argv: list[str] | None = None) -> int:
    """CLI: run (or re-render from JSON) and write the table, plots and raw JSON."""
    from bench.learning_report import write_outputs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    p.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
    p.add_argument("--seeds", type=int, default=3, help="MinAtar seeds (0..n-1)")
    p.add_argument("--gridworld-seeds", type=int, default=10, help="gridworld seeds (cheap)")
    p.add_argument("--gridworld-steps", type=int, default=DEFAULT_STEPS["gridworld"])
    p.add_argument("--minatar-steps", type=int, default=DEFAULT_STEPS["minatar"])
    p.add_argument("--map", default=GRIDWORLD_MAP, help="gridworld map (shared structure)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="where docs go")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "bench_learning")
    p.add_argument("--from-json", type=Path, help="re-render from a results JSON, no training")
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every run, after its preset (e.g. agent.eps=0.00316)",
    )
    args = p.parse_args(argv)
    if args.set and args.from_json:
        p.error("--from-json re-renders finished runs and trains nothing; drop --set")
    if args.set and (error := check_overrides(args.suites, args.agents, args.set)):
        print(f"error: --set: {error}", file=sys.stderr)
        return 2
    if args.from_json:
        results = json.loads(args.from_json.read_text())
    else:
        steps = {"gridworld": args.gridworld_steps, "minatar": args.minatar_steps}
        seeds = {"gridworld": list(range(args.gridworld_seeds)), "minatar": list(range(args.seeds))}
        command = (
            f"python bench/learning.py --suites {' '.join(args.suites)} "
            f"--gridworld-seeds {args.gridworld_seeds} --seeds {args.seeds} "
            f"--gridworld-steps {args.gridworld_steps} --minatar-steps {args.minatar_steps} "
            f"--map {args.map} --workers {args.workers}"
        )
        if args.agents != AGENTS:
            command += f" --agents {' '.join(args.agents)}"
        if args.set:
            command += f" --set {' '.join(args.set)}"
        results = run_benchmark(
            args.suites,
            args.agents,
            seeds,
            steps,
            args.cache,
            args.workers,
            args.map,
            command,
            args.set,
        )
    for path in write_outputs(results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
