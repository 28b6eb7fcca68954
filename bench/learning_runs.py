"""Runs of the learning benchmark (bench/learning.py): each (suite, agent, seed) trained with its
agent's YAML preset (``AGENT_CONFIGS``), its ``runner.episode_log`` turned into rolling per-task
learning curves on a fixed step grid, and every finished run cached as JSON under a key of its
resolved config and the code it ran (:func:`config_key`), so that the same command reuses it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __name__ == "__main__":  # first: a script run cannot import the bench package below
    from _module_guard import refuse_script_run  # type: ignore[import-not-found]  # script run only

    refuse_script_run(__file__)

from bench._machine import cpu_count, cpu_name, git_commit, torch_version
from bench._pool import run_in_processes

ROOT = Path(__file__).resolve().parents[1]

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


def curve_grid(steps: int) -> np.ndarray:
    """The CURVE_POINTS env-step points (int64) every learning curve of a ``steps`` run is read at."""
    return np.linspace(steps / CURVE_POINTS, steps, CURVE_POINTS).round().astype(np.int64)


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


def code_hash() -> str:
    """Hash of the code a run's result depends on: agents/, envs/ (maps included), mtrl/,
    train.py and this file's curve code. Any edit there retrains rather than reuse a stale run."""
    h = hashlib.sha1()
    files = [ROOT / "train.py"]
    for folder in ("agents", "envs", "mtrl"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".txt"))
    for path in files:
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    for fn in (curve_grid, rolling_curves, run_one):
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()


def config_key(spec: dict[str, Any], code: str | None = None) -> str:
    """Short hash of the run's resolved config, the curve settings (``WINDOW``, ``CURVE_POINTS``),
    a custom map file's contents and the code (:func:`code_hash`), so a cached run is reused only
    while all of them are unchanged (``eval.*`` left out when it evaluates nothing, and
    ``progress``, which changes no result)."""
    from agents.config import load_config, to_dict

    cfg = to_dict(
        load_config(ROOT / AGENT_CONFIGS[spec["suite"]][spec["agent"]], run_overrides(spec))
    )
    cfg.pop("progress", None)
    if cfg["eval"]["episodes"] == 0:
        cfg.pop("eval")
    key: dict[str, Any] = {"config": cfg, "window": WINDOW, "points": CURVE_POINTS}
    map_file = Path(cfg["env"]["gridworld"]["map"])
    if spec["suite"] == "gridworld" and map_file.is_file():  # a user's map: its contents count
        key["map"] = hashlib.sha1(map_file.read_bytes()).hexdigest()
    key["code"] = code if code is not None else code_hash()
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one (suite, agent, seed) for ``spec["steps"]`` steps; return its curves and timing."""
    import train
    from agents.config import load_config
    from envs.gridworld import GridworldVecEnv

    suite, agent, seed, steps = spec["suite"], spec["agent"], spec["seed"], spec["steps"]
    overrides = run_overrides(spec)
    cfg = load_config(ROOT / AGENT_CONFIGS[suite][agent], overrides)
    # under the parent's scratch directory when it gives one, which it removes even after it has
    # killed this process mid-run
    with tempfile.TemporaryDirectory(dir=spec.get("scratch")) as tmp:
        runner = train.build(cfg, Path(tmp) / "run")
        start = time.perf_counter()
        try:
            # the bench's own handlers stop it (nothing to checkpoint in a scratch directory)
            summary = runner.run(handle_signals=False)
        finally:
            runner.env.close()
        elapsed = time.perf_counter() - start
    names = list(runner.env.task_names)
    grid = curve_grid(steps)
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


def random_returns(
    episodes: int, seed: int = 12345, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, float]:
    """Mean raw return of the uniform random policy per MinAtar game (the normalisation base), in
    the env the runs train in (``env.minatar.*`` as the presets and ``overrides`` set it)."""
    import torch

    from agents.config import load_config, to_dict
    from agents.evaluate import evaluate
    from envs.minatar import GAMES, NUM_ACTIONS, MinAtarVecEnv

    preset = ROOT / AGENT_CONFIGS["minatar"]["a2c_multitask"]
    settings = to_dict(load_config(preset, list(overrides)))["env"]["minatar"]
    env = MinAtarVecEnv(list(GAMES), 4, **settings)
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
    code = code_hash()
    for spec in specs:
        # also validates each config: ConfigError, nothing written
        spec["key"] = config_key(spec, code)

    def path(spec: dict[str, Any]) -> Path:
        extra = f"-{spec['map']}" if spec["suite"] == "gridworld" else ""
        name = f"{spec['suite']}{extra}-{spec['agent']}-s{spec['seed']}-{spec['steps']}"
        return cache / f"{name}-{spec['key']}.json"

    cached = {id(s): load_cached(path(s), s) for s in specs}
    todo = [s for s in specs if cached[id(s)] is None]
    preflight(todo)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def done(spec: dict[str, Any], res: dict[str, Any]) -> None:
        tmp = path(spec).with_suffix(".tmp")  # atomic: a run is cached whole or not at all
        tmp.write_text(json.dumps(res) + "\n")
        os.replace(tmp, path(spec))
        wall = time.perf_counter() - started
        print(
            f"[{wall:7.0f}s] {res['suite']:9s} {res['agent']:18s} seed {res['seed']} "
            f"{res['seconds']:6.1f}s {res['sps']:7.0f} sps",
            flush=True,
        )

    if workers > 1 and len(todo) > 1:
        run_in_processes(run_one, todo, workers, done)
    else:
        for spec in todo:
            done(spec, run_one(spec))
    runs = [cached[id(s)] or json.loads(path(s).read_text()) for s in specs]
    random = random_returns(RANDOM_EPISODES, overrides=overrides) if "minatar" in suites else {}
    return {
        "minatar_random": random,
        "meta": {
            "machine": f"{cpu_name()}, {cpu_count()} cores, {platform.system()}",
            "python": platform.python_version(),
            "torch": torch_version(),
            "workers": workers,
            "wall_seconds": time.perf_counter() - started,
            "steps": {s: steps[s] for s in suites},
            "seeds": {s: seeds[s] for s in suites},
            "gridworld_map": gridworld_map,
            "window": WINDOW,
            "commit": git_commit(),
            "command": command,
            "overrides": overrides,
        },
        "runs": runs,
    }


def load_cached(path: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The run cached at ``path`` if it is one of ``spec`` (same suite, agent, seed and step
    grid, with curves), else None: a missing entry, or one that is unreadable, truncated or
    another run's (a file copied or edited by hand) is trained anew, the latter with a warning,
    rather than crash the report or slip into the table."""
    if not path.is_file():
        return None
    try:
        run = json.loads(path.read_text())
        grid = curve_grid(spec["steps"])
        fits = (
            isinstance(run, dict)
            and all(run.get(k) == spec[k] for k in ("suite", "agent", "seed"))
            and run.get("grid") == grid.tolist()
            and isinstance(run.get("curves"), dict)
            and isinstance(run.get("tasks"), list)
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        fits = False
    if not fits:
        print(
            f"warning: cache entry {path} is not this run's result; training it anew",
            file=sys.stderr,
        )
        return None
    return run


def preflight(specs: list[dict[str, Any]]) -> None:
    """Build (so validate) the first run of each (suite, agent) in ``specs``, writing nothing: an
    unknown map or a bad override is one error now, not a worker's traceback minutes later."""
    import contextlib
    import io

    import train
    from agents.config import load_config

    firsts = {(s["suite"], s["agent"]): s for s in reversed(specs)}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(io.StringIO()):
        for spec in firsts.values():  # notes (stderr) are printed by the runs themselves
            cfg = load_config(
                ROOT / AGENT_CONFIGS[spec["suite"]][spec["agent"]], run_overrides(spec)
            )
            train.build(cfg, Path(tmp) / "run").env.close()
