"""Supervised multi-task library benchmarks (mtrl only, no RL), written to docs/benchmarks.md.

    python bench/mtl.py quality --seeds 3      # (a) every method on two_digits and gradnorm_toy
    python bench/mtl.py speed                  # (b) step time / peak memory vs equal and torchjd
    python bench/mtl.py all --seeds 3 --write  # both, and replace our docs/benchmarks.md section

(a) Test metrics averaged over seeds, and Delta-m% against single-task models (one hard-sharing
network per task, same budget; Maninis et al. 2019, Liu et al. 2022):
``Delta-m = 100/T sum_t (-1)^{h_t} (M_t - M_stl,t) / M_stl,t`` with h_t = 1 when higher is better
(accuracy), so lower Delta-m is better. Gradient methods use the shared representation (MGDA-UB).

(b) One training step (forward, weighting.backward, optimizer.step, FAMO's update) on a fixed MLP
(64 -> 256 -> 256 trunk, T linear heads, batch 128, MSE; ``--trunk`` and ``--batch`` change it),
1 torch thread, median over timed steps after a warm-up; each row in a fresh subprocess, whose
peak RSS above the RSS before the first step is the memory column; ``--rounds`` interleaved
passes, the fastest median kept. Gradient methods run in parameter-gradient mode (Jacobian w.r.t.
the trunk's parameters: same work as torchjd's ``mtl_backward`` + ``jac_to_grad``) and in
representation mode (``features=``: Jacobian w.r.t. the trunk output only). The torchjd rows
need ``pip install -e '.[dev]'`` (torchjd with quadprog and cvxpy).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mtrl.weighting as W  # noqa: E402
from bench.mtl_speed import (  # noqa: E402
    BATCH,
    GRAD_METHODS,
    LOSS_METHODS,
    TRUNK,
    speed,
    speed_configs,
    speed_table,
    verdicts,
)
from mtrl.architectures import build_mlp  # noqa: E402
from mtrl.io import atomic_write  # noqa: E402
from mtrl.metrics import accuracy, cross_entropy, mse  # noqa: E402
from mtrl.trainer import Trainer  # noqa: E402

QUALITY_METHODS = LOSS_METHODS + GRAD_METHODS  # gradient_reversal is adversarial, not balancing
SECTION = "## Supervised multi-task library (mtl)"
NOTES = """Notes:

- Cells: median step time (its ratio to equal weighting at the same T), peak memory growth.
  "parameters" takes per-task gradients w.r.t. the trunk's parameters (T backward passes through
  the trunk, the same work as torchjd's `mtl_backward` + `jac_to_grad`); "representation" w.r.t.
  the trunk output z (B, D), then one backward through the trunk (Sener and Koltun 2018); the
  T gradients w.r.t. z come from one backward through the heads (`mtrl/weighting/heads_pass.py`;
  rows written before 2026-12-07 took one per task).
- GradNorm needs each task's gradient norm on the last shared layer's weight per step by
  definition: T backward passes to that layer's output, handed over with the model as the
  Trainer does, whose norms come from the layer's input and output gradients without forming the
  T weight gradients (`mtrl/weighting/linear_tap.py`; rows written before 2026-12-07 formed
  them); FAMO's paper protocol takes one extra forward pass (`famo_update="next_batch"` in the
  Trainer drops it).
- Gradient reversal is timed with the last task adversarial: one backward as equal weighting,
  then one through that task's head again to undo the reversal there (rows written before
  2026-12-06 timed it with no adversary, as two backward passes).
- Rows are interleaved over rounds and the fastest median kept, but on a shared or noisy
  machine expect +-15% noise on the small (T = 2) rows.
- Quality budgets are small (two_digits: 4000 pairs, 15 epochs; gradnorm_toy: 5000 samples,
  40 epochs): the differences between methods on two_digits are within a seed's noise; on the
  GradNorm toy (scales 1 and 100) methods that rebalance the small task (FAMO, MGDA) close most
  of the gap to single-task models, equal weighting does not.
"""


DELTA_M_NOTE = (
    "Delta-m% = 100/T sum_t (-1)^h_t (M_t - M_stl,t) / M_stl,t with h_t = 1 where higher is "
    "better\n(Navon et al. 2022, Liu et al. 2022): positive means worse than the single-task "
    "models, lower is\nbetter (Vandenhende et al.'s Delta_MTL has the opposite sign). The +- is "
    "the std over the\nmulti-task seeds, each against the mean of the single-task seeds, so it "
    "leaves out the\nreference's own seed noise."
)


# --- (a) quality ------------------------------------------------------------------------------
def benchmark(name: str) -> dict[str, Any]:
    """Data and per-benchmark settings (mirrors configs/supervised/*.yaml, smaller budgets)."""
    from mtrl.data import make_gradnorm_toy, make_two_digits

    if name == "two_digits":
        d = make_two_digits(4000, 1000, seed=0)
        return {
            "train": (d["x_train"].flatten(1), d["y_train"]),
            "test": (d["x_test"].flatten(1), d["y_test"]),
            "hidden": [128, 64],
            "out": [10, 10],
            "loss": cross_entropy,
            "metric": ("accuracy", accuracy, True),
            "epochs": 15,
            "batch": 64,
            "names": ["left", "right"],
        }
    d = make_gradnorm_toy(2, n_train=5000, n_test=1000, seed=0)
    return {
        "train": (d["x_train"], d["y_train"]),
        "test": (d["x_test"], d["y_test"]),
        "hidden": [100, 100, 100, 100],
        "out": [100, 100],
        "loss": F.mse_loss,
        "metric": ("mse", mse, False),
        "epochs": 40,
        "batch": 100,
        "names": ["sigma1", "sigma100"],
        "kwargs": {"gradnorm": {"alpha": 0.12}},  # the paper's asymmetry for this toy
    }


def train_once(bench: dict[str, Any], method: str, seed: int, tasks: list[int]) -> list[float]:
    """Test metric per task in ``tasks`` after training ``method`` on them (one model)."""
    torch.manual_seed(seed)
    x, y = bench["train"]
    xt, yt = bench["test"]
    model = build_mlp("hard_sharing", x.shape[1], bench["hidden"], [bench["out"][t] for t in tasks])
    kw = bench.get("kwargs", {}).get(method, {})
    weighting = W.build(method, len(tasks), **kw)
    name, fn, _ = bench["metric"]
    trainer = Trainer(
        model,
        weighting,
        torch.optim.Adam(model.parameters(), lr=1e-3),
        [bench["loss"]] * len(tasks),
        [{name: fn}] * len(tasks),
        train_data=(x, y[:, tasks]),
        test_data=(xt, yt[:, tasks]),
        epochs=bench["epochs"],
        batch_size=bench["batch"],
        progress=False,
        seed=seed,
    )
    stats = trainer.fit()["test"]
    return [s[name] for s in stats.values()]


def delta_m(values: list[float], stl: list[float], higher_better: bool) -> float:
    """Delta-m% of ``values`` (T,) against single-task ``stl`` (T,) (lower is better)."""
    sign = -1.0 if higher_better else 1.0
    return 100.0 * sum(sign * (v - b) / b for v, b in zip(values, stl)) / len(values)


def quality(seeds: int) -> dict[str, Any]:
    """Every method on both benchmarks: mean metrics and Delta-m% (mean +- std over seeds)."""
    out: dict[str, Any] = {}
    for bname in ("two_digits", "gradnorm_toy"):
        bench = benchmark(bname)
        t_count = len(bench["out"])
        higher = bench["metric"][2]
        stl = [
            [train_once(bench, "equal", s, [t])[0] for t in range(t_count)] for s in range(seeds)
        ]
        stl_mean = [statistics.mean(r[t] for r in stl) for t in range(t_count)]
        rows: dict[str, dict[str, Any]] = {"single-task": {"metrics": stl_mean, "delta_m": [0.0]}}
        for method in QUALITY_METHODS:
            start = time.perf_counter()
            runs = [train_once(bench, method, s, list(range(t_count))) for s in range(seeds)]
            rows[method] = {
                "metrics": [statistics.mean(r[t] for r in runs) for t in range(t_count)],
                "delta_m": [delta_m(r, stl_mean, higher) for r in runs],
                "seconds": (time.perf_counter() - start) / seeds,
            }
            print(bname, method, rows[method], flush=True)
        out[bname] = {"names": bench["names"], "metric": bench["metric"][0], "rows": rows}
    return out


def quality_table(res: dict[str, Any]) -> str:
    """(a)'s tables; the seed count is read from the results (one Delta-m per seed), so a
    ``--reuse``d dump is not labelled with this command's ``--seeds``."""
    lines = []
    for bname, r in res.items():
        metric, names = r["metric"], r["names"]
        seeds = max(len(row["delta_m"]) for m, row in r["rows"].items() if m != "single-task")
        arrow = "higher" if metric == "accuracy" else "lower"
        lines += [
            f"**{bname}** (test {metric}, {arrow} is better; mean of {seeds} seeds)",
            "",
            "| method | "
            + " | ".join(f"{n} {metric}" for n in names)
            + " | Delta-m%, lower is better (+-std over seeds) |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for method, row in r["rows"].items():
            vals = " | ".join(f"{v:.4g}" for v in row["metrics"])
            dm = row["delta_m"]
            sd = statistics.stdev(dm) if len(dm) > 1 else 0.0
            dm_s = (
                "0 (reference)"
                if method == "single-task"
                else f"{statistics.mean(dm):+.2f} ({sd:.2f})"
            )
            lines.append(f"| {method} | {vals} | {dm_s} |")
        lines.append("")
    return "\n".join(lines)


def write_docs(body: str) -> None:
    """Replace (or append) our section of docs/benchmarks.md, leaving the others untouched (an
    atomic write: an interrupted run leaves the old file whole; the folder is made if missing)."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body.rstrip("\n") + "\n" + ("" if nxt < 0 else text[nxt:])
    atomic_write(path, text.encode())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from bench._cli import Parser, positive_int, sigint_raises

    p = Parser(
        prog="bench/mtl.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("what", choices=["quality", "speed", "all"])
    p.add_argument("--seeds", type=positive_int, default=3)
    p.add_argument("--tasks", type=positive_int, nargs="+", default=[2, 10, 40])
    p.add_argument(
        "--rounds", type=positive_int, default=3, help="(b): interleaved passes, fastest kept"
    )
    p.add_argument(
        "--only",
        nargs="*",
        default=[],
        choices=sorted({m for m, _ in speed_configs()}),
        help="(b): re-measure only these methods",
    )
    p.add_argument(
        "--trunk",
        type=positive_int,
        nargs="+",
        default=list(TRUNK),
        help="(b): input and hidden sizes",
    )
    p.add_argument("--batch", type=positive_int, default=BATCH, help="(b): samples per step")
    p.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    p.add_argument("--json", default="", help="also dump raw results here")
    p.add_argument(
        "--reuse", default="", help="take (a) from this --json dump instead of rerunning"
    )
    args = p.parse_args(argv)
    if len(args.trunk) < 2:
        p.error("--trunk takes the input size and at least one hidden size")
    if args.only and args.what == "quality":  # (a) always runs every method
        p.error("--only selects rows of (b), the speed table; drop it for quality")
    if args.reuse:
        try:
            reused = json.loads(Path(args.reuse).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            p.error(f"--reuse {args.reuse}: {getattr(e, 'strerror', None) or e}")
        if not isinstance(reused, dict):
            p.error(f"--reuse {args.reuse} is not a --json dump of bench/mtl.py")
        if args.what != "speed" and "quality" not in reused:  # (b) measures what it lacks
            p.error(f"--reuse {args.reuse} holds no quality results; run (a) or drop --reuse")
    with sigint_raises():
        try:
            return run(args, argv)
        except KeyboardInterrupt:  # --json and --write are atomic: each file is whole or absent
            print("interrupted", file=sys.stderr)
            return 130


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """Run (a) and/or (b) as ``args`` ask, print the section, dump ``--json``, ``--write``."""
    torch.set_num_threads(1)
    parts = [SECTION, ""]
    shown = [
        a for i, a in enumerate(argv) if a != "--reuse" and (i == 0 or argv[i - 1] != "--reuse")
    ]
    cmd = "python bench/mtl.py " + " ".join(shown)
    parts += [
        f"Command: `{cmd}` ({platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, 1 torch thread). Produced by `bench/mtl.py`; see its docstring "
        "for the protocol.",
        "",
    ]
    raw: dict[str, Any] = {}

    def dump() -> None:
        if args.json:
            atomic_write(Path(args.json), json.dumps(raw, indent=1).encode())

    if args.what in ("quality", "all"):
        if args.reuse:
            raw["quality"] = json.loads(Path(args.reuse).read_text())["quality"]
        else:
            raw["quality"] = quality(args.seeds)
        parts += [
            "### (a) Quality: every method vs single-task models",
            "",
            DELTA_M_NOTE,
            "",
            quality_table(raw["quality"]),
        ]
    if args.what in ("speed", "all"):
        reused = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
        if args.only:  # re-measure some methods, keep the other rows of the reused run
            fresh = speed(args.tasks, args.rounds, args.only, tuple(args.trunk), args.batch)
            raw["speed"] = {**reused.get("speed", {}), **fresh}
        else:
            raw["speed"] = reused.get("speed") or speed(
                args.tasks, args.rounds, trunk=tuple(args.trunk), batch=args.batch
            )
        dump()
        parts += [
            "### (b) Step time and peak memory (relative to equal weighting)",
            "",
            speed_table(raw["speed"], args.tasks),
            "",
            "Targets:",
            "",
            verdicts(raw["speed"], args.tasks),
            "",
            NOTES,
        ]
    body = "\n".join(parts)
    print(body)
    dump()
    if args.write:
        write_docs(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
