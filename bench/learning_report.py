"""Markdown tables, plots and the raw JSON of the learning benchmark (bench/learning.py).

Every metric comes from bench/learning_metrics.py, derived from the stored rolling curves, so
``--from-json`` re-renders without training.
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mtrl.io import atomic_write

if __name__ == "__main__":  # first: a script run cannot import the bench package below
    from _module_guard import refuse_script_run  # type: ignore[import-not-found]  # script run only

    refuse_script_run(__file__)

from bench.learning_metrics import (
    GRID_LENGTH,
    GRID_SUCCESS,
    HOLD,
    MINATAR_FRACTION,
    MINATAR_MIN_GAIN,
    Run,
    mean_ci,
    minatar_normalisers,
    ratio_interval,
    suite_metrics,
    used_games,
)

NOTES_BEGIN, NOTES_END = "<!-- learning-notes -->", "<!-- /learning-notes -->"


def _cell(values: list[float], digits: int = 2) -> str:
    """Mean ± CI over the seeds with a finite value; names how many when some have none (e.g. a
    task without a finished episode), instead of turning the whole cell into n/a."""
    finite = [v for v in values if math.isfinite(v)]
    text = _fmt(*mean_ci(finite), digits)
    if finite and len(finite) < len(values):
        text += f" ({len(finite)}/{len(values)} seeds)"
    elif len(finite) == 1:  # no interval: say why, rather than look like a failed one
        text += " (1 seed)"
    return text


def _fmt(mean: float, half: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return (
        f"{mean:.{digits}f}"
        if not math.isfinite(half)
        else f"{mean:.{digits}f} ± {half:.{digits}f}"
    )


def _stt_cell(ms: list[dict[str, Any]], budget: int) -> str:
    """Steps to threshold in thousands, unreached runs counted at the budget, k/n reached."""
    reached = sum(math.isfinite(m["stt"]) for m in ms)
    vals = [m["stt"] if math.isfinite(m["stt"]) else budget for m in ms]
    mean, half = mean_ci([v / 1000 for v in vals])
    if reached < len(ms):  # censored at the budget: the mean is a lower bound, no CI around it
        return f"≥ {_fmt(mean, math.nan, 0)}k ({reached}/{len(ms)})"
    return f"{_fmt(mean, half, 0)}k ({reached}/{len(ms)})"


def stt_ratio(
    metrics: dict[str, list[dict[str, Any]]], agent: str, ref: str, budget: int, key: str = "stt"
) -> str:
    """Mean steps-to-threshold of ``agent`` over that of ``ref`` (a ratio of means; unreached =
    budget), with its 95% interval over seeds (:func:`ratio_interval`). With unreached runs the
    ratio is itself a bound, so only the limit on the bound's side is shown (a lower limit for
    a "≥" ratio, an upper one for "≤", none for "~"). ``key="stt_hold"``: the threshold held for
    ``HOLD`` grid points."""
    if agent not in metrics or ref not in metrics:
        return "n/a"

    def steps(a: str) -> tuple[list[float], bool]:
        v = [m[key] for m in metrics[a]]
        return [s if math.isfinite(s) else budget for s in v], all(math.isfinite(s) for s in v)

    a, a_all = steps(agent)
    r, r_all = steps(ref)
    # an unreached run counted at the budget understates its mean: the ratio is then a bound
    bound = {(True, True): "", (False, True): "≥ ", (True, False): "≤ ", (False, False): "~ "}
    text = f"{bound[(a_all, r_all)]}{np.mean(a) / np.mean(r):.2f}"
    lo, hi = ratio_interval(a, r)
    if not math.isfinite(lo):
        return text
    if a_all and r_all:
        return text + f" (95% CI {lo:.2f}-{hi:.2f})"
    if r_all:  # agent censored: the ratio is too small by an unknown amount, no upper limit
        return text + f" (95% CI lower limit {lo:.2f})"
    if a_all:  # reference censored: too large, no lower limit
        return text + f" (95% CI upper limit {hi:.2f})"
    return text + " (no interval: both censored)"


def _held(ratios: str) -> str:
    """The sentence for the ratios with the threshold held for ``HOLD`` grid points."""
    return (
        f"Counting a run only once the threshold holds for {HOLD} grid points in a row (the "
        f"rolling curves often dip back below it right after first crossing it): {ratios}."
    )


def budget_of(runs: list[Run]) -> int:
    """Where unreached runs are counted: the step grid's last point (the curves end there, while
    ``run["steps"]`` may round the budget up to whole updates)."""
    return int(runs[0]["grid"][-1])


def table(suite: str, runs: list[Run], metrics: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: per agent steps to threshold, AUC and final value (mean ± 95% CI)."""
    budget = budget_of(runs)
    if suite == "gridworld":
        head = "| agent | steps to threshold | AUC (mean success) | final success | final length / optimal | greedy success |\n|---|---|---|---|---|---|\n"
    else:
        names = runs[0]["tasks"]
        head = (
            "| agent | steps to threshold | AUC (norm.) | final (norm.) | "
            + " | ".join(f"{n} final" for n in names)
            + " |\n|---|---|---|---|"
            + "---|" * len(names)
            + "\n"
        )
    lines = []
    for agent, ms in metrics.items():
        cells = [
            f"`{agent}`",
            _stt_cell(ms, budget),
            _cell([m["auc"] for m in ms]),
            _cell([m["final"] for m in ms]),
        ]
        if suite == "gridworld":
            cells.append(_cell([m["final_ratio"] for m in ms]))
            cells.append(_cell([m["greedy_success"] for m in ms]))
        else:
            for k in range(len(runs[0]["tasks"])):
                cells.append(_cell([float(m["final_raw"][k]) for m in ms], 1))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def _greedy_episodes(results: dict[str, Any]) -> str:
    """Greedy evaluation episodes per gridworld task, as the runs recorded them."""
    counts = {
        t["episodes"]
        for r in results["runs"]
        if r["suite"] == "gridworld"
        for t in (r.get("greedy_eval") or {}).values()
    }
    return "/".join(str(c) for c in sorted(counts)) or "no"


def section(results: dict[str, Any], tables: dict[str, str], ratios: dict[str, str]) -> str:
    """The "## Learning" section of docs/benchmarks.md (without the hand-written notes)."""
    meta = results["meta"]
    steps = meta["steps"]
    parts = [
        "## Learning\n",
        "Produced by `bench/learning.py` (re-render without training: "
        "`python bench/learning.py --from-json docs/learning_results.json`). Command:\n",
        f"```bash\n{meta['command']}\n```\n",
        f"Machine: {meta['machine']}; torch {meta['torch']}, Python {meta['python']}"
        + (f", commit {meta['commit']}" if meta.get("commit") else "")
        + f"; {meta['workers']} runs in parallel, torch threads = 1 per run; wall time "
        f"{meta['wall_seconds'] / 60:.1f} min for the whole invocation (per suite below: the sum "
        "of the single runs' times). Every cell is mean ± 95% "
        "CI over seeds (t-distribution). Curves are training episodes (sampled actions): at each "
        f"of 60 grid steps, the last {meta['window']} finished episodes of each task.\n",
    ]
    if meta.get("overrides"):  # an ablation: say so next to its numbers
        parts.append(
            f"Overrides on every run, after its preset: `{' '.join(meta['overrides'])}`.\n"
        )
    if "gridworld" in tables:
        parts += [
            f"### Gridworld (`{meta['gridworld_map']}`, {steps['gridworld']:,} steps in total, "
            f"{_per_task(results, 'gridworld')}, {_seeds_and_time(results, 'gridworld')})\n",
            f"Threshold: every task at success rate >= {GRID_SUCCESS} and mean episode length "
            f"<= {GRID_LENGTH}x its exact optimum (`mean_optimal_length`). Steps to threshold "
            "is the first grid point at which the curve meets it (not interpolated, and the "
            "curve may dip below again later); a run that never gets there counts at the "
            "budget, and the cell then shows a lower bound (k/n = runs that reached it). "
            f"{_grid_text(results, 'gridworld')} "
            "AUC = success rate averaged over the grid, from its first point to the budget "
            "(`area_under_curve(normalize=True)`); "
            f"greedy success = final greedy evaluation, {_greedy_episodes(results)} episodes "
            "per task.\n",
            tables["gridworld"],
            "Target (Distral 2-col steps to threshold / `a2c_independent`'s, <= 0.6 wanted; a "
            "ratio of the seed means, with a 95% interval over seeds: a t interval on the log "
            "ratio): "
            f"{ratios['gridworld']}. {_held(ratios['gridworld_hold'])}\n",
            "![gridworld learning curves](learning_gridworld.png)\n",
        ]
    if "minatar" in tables:
        games = len(next(r for r in results["runs"] if r["suite"] == "minatar")["tasks"])
        parts += [
            f"### MinAtar ({games} games, {steps['minatar']:,} steps in total, "
            f"{steps['minatar'] // games:,} per game, {_seeds_and_time(results, 'minatar')})\n",
            "Per game, the return is normalised as (R - random) / (best - random): random = the "
            "uniform random policy's mean return (" + _random_text(results) + "), best = the "
            "highest seed-mean final return of any agent on that game. Threshold: the mean over "
            f"games reaches {MINATAR_FRACTION}. Only games where some agent's median seed beats "
            f"random by >= {MINATAR_MIN_GAIN} points enter the mean ({_used_text(results)}; one "
            "lucky seed does not bring in a game no other run learns). Best, the "
            "games used and so the threshold depend on which agents the table holds: a table "
            "over other agents (an `--agents` ablation) is normalised differently and its "
            f"numbers do not compare with these. {_grid_text(results, 'minatar')} Per-game "
            "columns: raw final returns.\n",
            tables["minatar"],
            "Distral 2-col steps to threshold / `a2c_independent`'s (ratio of the seed means, "
            f"95% interval over seeds, t on the log ratio): {ratios['minatar']}. "
            f"{_held(ratios['minatar_hold'])}\n",
            "![MinAtar learning curves](learning_minatar.png)\n",
        ]
    return "\n".join(parts)


def _random_text(results: dict[str, Any]) -> str:
    random = results.get("minatar_random") or {}
    return ", ".join(f"{k} {v:.2f}" for k, v in random.items()) or "not measured"


def _used_text(results: dict[str, Any]) -> str:
    runs = [r for r in results["runs"] if r["suite"] == "minatar"]
    base, _ = minatar_normalisers(runs, results.get("minatar_random"))
    used = used_games(runs, base)
    names = runs[0]["tasks"]
    out = "used: " + (", ".join(n for n, u in zip(names, used) if u) or "none")
    left = [n for n, u in zip(names, used) if not u]
    return out + ("; left out: " + ", ".join(left) if left else "")


def _per_task(results: dict[str, Any], suite: str) -> str:
    run = next(r for r in results["runs"] if r["suite"] == suite)
    return f"{results['meta']['steps'][suite] // len(run['tasks']):,} per task"


def _grid_text(results: dict[str, Any], suite: str) -> str:
    grid = next(r for r in results["runs"] if r["suite"] == suite)["grid"]
    return (
        f"The curves' grid has a point every {grid[1] - grid[0]:,} steps: steps to threshold is "
        "resolved to that, and seeds that cross at the same point give a zero-width interval."
    )


def _seeds_and_time(results: dict[str, Any], suite: str) -> str:
    runs = [r for r in results["runs"] if r["suite"] == suite]
    seeds = len({r["seed"] for r in runs})
    return f"{seeds} seeds, {sum(r['seconds'] for r in runs) / 60:.1f} run-minutes"


def _replace_section(doc: Path, body: str) -> None:
    """Replace the "## Learning" section of ``doc`` (other sections untouched), keeping notes."""
    text = doc.read_text() if doc.is_file() else "# Benchmarks\n"
    match = re.search(r"^## Learning\s*$.*?(?=^## |\Z)", text, flags=re.S | re.M)
    old = match.group(0) if match else ""
    notes = re.search(re.escape(NOTES_BEGIN) + r".*?" + re.escape(NOTES_END), old, flags=re.S)
    block = notes.group(0) if notes else f"{NOTES_BEGIN}\n{NOTES_END}"
    new = body.rstrip() + "\n\n" + block + "\n\n"
    if match:
        text = text[: match.start()] + new + text[match.end() :]
    else:
        text = text.rstrip() + "\n\n" + new
    atomic_write(doc, (text.rstrip() + "\n").encode())


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """Write learning_results.json, one PNG per suite and the Learning section of benchmarks.md.
    Metrics, tables and the section are derived first: malformed ``results`` (KeyError,
    TypeError, ValueError) raise before any file is written."""
    from bench.learning_plot import plot  # matplotlib: only when writing

    warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
    warnings.filterwarnings("ignore", "Degrees of freedom", RuntimeWarning)
    tables, ratios, figures = {}, {}, []
    for suite in ("gridworld", "minatar"):
        runs = [r for r in results["runs"] if r["suite"] == suite]
        if not runs:
            continue
        metrics = suite_metrics(runs, results.get("minatar_random"))
        tables[suite] = table(suite, runs, metrics)
        budget = budget_of(runs)
        for key, name in (("stt", suite), ("stt_hold", f"{suite}_hold")):
            ratios[name] = ", ".join(
                f"`{a}` {stt_ratio(metrics, a, 'a2c_independent', budget, key)}"
                for a in ("distral_klent_2col", "distral_kl_2col")
            )
        figures.append((suite, runs, metrics))
    body = section(results, tables, ratios)
    out.mkdir(parents=True, exist_ok=True)
    # Figures are drawn to temporary files first (matplotlib is what fails, if anything does),
    # then every file is moved or written in place atomically: an error or Ctrl-C leaves the
    # previous outputs whole, never a results JSON that the table and figures do not show.
    pngs = []
    try:
        for suite, runs, metrics in figures:
            tmp = out / f".learning_{suite}.png.tmp"
            pngs.append((tmp, out / f"learning_{suite}.png"))
            plot(suite, runs, metrics, tmp, GRID_LENGTH)
        atomic_write(out / "learning_results.json", (json.dumps(results) + "\n").encode())
        for tmp, final in pngs:
            os.replace(tmp, final)
    finally:
        for tmp, _ in pngs:
            tmp.unlink(missing_ok=True)
    _replace_section(out / "benchmarks.md", body)
    return [out / "learning_results.json", *(final for _, final in pngs), out / "benchmarks.md"]
