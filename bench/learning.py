"""Learning benchmark: all seven agents x seeds on a gridworld with shared structure and MinAtar.

    python bench/learning.py                                  # full run (see docs/benchmarks.md)
    python bench/learning.py --suites gridworld --gridworld-seeds 2 --gridworld-steps 50000 --out /tmp/gw
    python bench/learning.py --from-json docs/learning_results.json   # re-render only
    python bench/learning.py --suites minatar --set agent.eps=0.00316 --out /tmp/eps  # ablation

Each run trains with the agent's YAML preset (``AGENT_CONFIGS``) and turns ``runner.episode_log``
into rolling per-task learning curves on a fixed step grid (``bench/learning_runs.py``);
``bench/learning_metrics.py`` derives steps to threshold, area under the curve and final return,
and ``bench/learning_report.py`` writes the table, plots and JSON: into ``--out``, by default
docs/ (learning_results.json, learning_<suite>.png and the Learning section of benchmarks.md), so
pass ``--out`` for any run that should not replace the published results.

With ``--workers N`` the runs go to N processes; Ctrl-C or SIGTERM stops them all at once and
exits 130 / 143 with one line on stderr. Finished runs stay cached (``--cache``) and the same
command reuses them.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._pool import Terminated, raise_terminated  # noqa: E402
from bench.learning_runs import (  # noqa: E402
    AGENT_CONFIGS,
    AGENTS,
    DEFAULT_STEPS,
    GRIDWORLD_MAP,
    SUITES,
    run_benchmark,
)


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


def main(argv: list[str] | None = None) -> int:
    """CLI: run (or re-render from JSON) and write the table, plots and raw JSON. Bad input: one
    ``error:`` line, exit 2, nothing written; Ctrl-C / SIGTERM: workers stopped, exit 130 / 143."""
    from bench._cli import Parser, fail, input_errors, positive_int, sigint_raises
    from bench.learning_report import write_outputs

    p = Parser(
        prog="bench/learning.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--suites", nargs="+", default=SUITES, choices=SUITES)
    p.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
    p.add_argument("--seeds", type=positive_int, default=3, help="MinAtar seeds (0..n-1)")
    p.add_argument(
        "--gridworld-seeds", type=positive_int, default=10, help="gridworld seeds (cheap)"
    )
    p.add_argument("--gridworld-steps", type=positive_int, default=DEFAULT_STEPS["gridworld"])
    p.add_argument("--minatar-steps", type=positive_int, default=DEFAULT_STEPS["minatar"])
    p.add_argument("--map", default=GRIDWORLD_MAP, help="gridworld map (shared structure)")
    p.add_argument("--workers", type=positive_int, default=2, help="parallel processes")
    p.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs",
        help="where the table, plots and JSON go (default: docs/)",
    )
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
    for flag, folder in (("--out", args.out), ("--cache", args.cache)):
        if folder.exists() and not folder.is_dir():
            p.error(f"{flag} {folder} is a file; give a directory")
    if args.set and (error := check_overrides(args.suites, args.agents, args.set)):
        return fail(f"--set: {error}")
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
    bad_input: tuple[type[Exception], ...] = (*input_errors(), ResultsError)
    with sigint_raises():
        try:
            if args.from_json:
                written = rerender(args.from_json, args.out)
            else:
                written = write_outputs(benchmark(args), args.out)
        except bad_input as e:
            return fail(e)
        except (KeyboardInterrupt, Terminated) as e:
            signum = getattr(e, "signum", signal.SIGINT)
            word = "interrupted" if signum == signal.SIGINT else "terminated"
            hint = (
                ""
                if args.from_json
                else f"; finished runs stay cached in {args.cache} for next time"
            )
            print(f"{word} ({signal.Signals(signum).name}){hint}", file=sys.stderr)
            return 128 + signum
        finally:
            if old is not None:
                signal.signal(signal.SIGTERM, old)
    for path in written:
        print(f"wrote {path}")
    return 0


class ResultsError(ValueError):
    """A ``--from-json`` file that is not results of this benchmark."""


def rerender(path: Path, out: Path) -> list[Path]:
    """:func:`write_outputs` for the results JSON at ``path``; :class:`ResultsError` naming the
    problem, with nothing written, when it is not one."""
    from bench.learning_report import write_outputs

    try:
        results = json.loads(path.read_text())
    except OSError as e:
        raise ResultsError(f"--from-json {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ResultsError(f"--from-json {path} is not JSON ({e})") from None
    if not isinstance(results, dict) or not isinstance(results.get("runs"), list):
        raise ResultsError(f"--from-json {path} is not results of bench/learning.py (no runs)")
    if not results["runs"]:
        raise ResultsError(f"--from-json {path} holds no runs")
    try:
        return write_outputs(results, out)  # derives everything before it writes
    except (KeyError, TypeError, ValueError) as e:
        raise ResultsError(
            f"--from-json {path} is not results of bench/learning.py ({type(e).__name__}: {e})"
        ) from None


def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark the command line asks for (:func:`run_benchmark`)."""
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
    return run_benchmark(
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


if __name__ == "__main__":
    sys.exit(main())
