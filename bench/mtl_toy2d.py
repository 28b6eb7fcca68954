"""The 2-D two-objective toy (Liu et al. 2021; Navon et al. 2022): which weighting methods reach
the Pareto front from the five standard starting points, as a table and a trajectory figure.

    python bench/mtl_toy2d.py                     # table on stdout, figure docs/toy2d.png (~3.5 min)
    python bench/mtl_toy2d.py --steps 700 --png /tmp/toy2d_700.png   # tests/test_toys.py's budget
    python bench/mtl_toy2d.py --methods equal mgda --scale 0.1 --png ''  # L1 scaled (Nash-MTL)

Every method runs through its ``mtrl.weighting`` class (``backward([L1, L2], [x])`` on the point
x itself, the only "shared parameter"), with one protocol for all: Adam, its step decaying
exponentially from 0.2 to 1e-3 over ``--steps`` (3000) steps, float64. A run *reaches the front*
when it ends Pareto-stationary (the min-norm combination of the two gradients has norm < 1e-3,
``mtrl.data.is_pareto_stationary``) in the lower half (x2 < -8, where the front lies), not on
the flat plateau far up where the gradients merely vanish. FAMO gets the toy's loss lower bounds
(``mtrl.data.toy_loss_bounds``: its log needs positive L - bound) and its update after each step;
uncertainty weighting, GradNorm and DWA are left out (log-variance terms diverge on losses that go
negative; GradNorm and DWA balance loss ratios, which a toy with negative losses does not have).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mtrl.weighting as W  # noqa: E402
from bench._cli import Parser, positive_int, sigint_raises  # noqa: E402
from mtrl.data import STARTING_POINTS, toy_loss_bounds, toy_losses  # noqa: E402
from mtrl.data.toy2d import pareto_stationarity  # noqa: E402
from mtrl.io import atomic_write, check_writable  # noqa: E402
from mtrl.weighting.famo import FAMO  # noqa: E402

METHODS = ["equal", "random", "pcgrad", "mgda", "cagrad", "imtl_g", "nash_mtl", "upgrad", "famo"]
FRONT_TOL = 1e-3
LR, LR_END = 0.2, 1e-3


def descend(method: str, start: torch.Tensor, steps: int, scale: float, seed: int = 0) -> dict:
    """One run of ``method`` from ``start`` (2,): its trajectory (steps + 1, 2), final losses,
    Pareto-stationarity gap and whether it reached the front."""
    torch.manual_seed(seed)
    x = torch.nn.Parameter(start.clone().double())
    kwargs: dict[str, Any] = {"min_losses": toy_loss_bounds(scale)} if method == "famo" else {}
    weighting = W.build(method, 2, **kwargs).double()
    opt = torch.optim.Adam([x], lr=LR)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, (LR_END / LR) ** (1 / steps))
    path = [x.detach().clone()]
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        losses = toy_losses(x, scale)
        weighting.backward([losses[0], losses[1]], [x])
        opt.step()
        sched.step()
        if isinstance(weighting, FAMO):
            with torch.no_grad():
                weighting.update(toy_losses(x, scale))
        path.append(x.detach().clone())
    final = x.detach()
    gap = pareto_stationarity(final, scale)
    return {
        "start": start.tolist(),
        "final": final.tolist(),
        "losses": toy_losses(final, scale).tolist(),
        "gap": gap,
        "front": bool(gap < FRONT_TOL and final[1] < -8.0),
        "path": torch.stack(path).tolist(),
    }


def run(methods: list[str], steps: int, scale: float) -> dict[str, list[dict]]:
    """Every method from every starting point: ``{method: [run per start]}``."""
    out = {}
    for m in methods:
        began = time.perf_counter()
        out[m] = [descend(m, s, steps, scale) for s in STARTING_POINTS]
        reached = sum(r["front"] for r in out[m])
        print(
            f"{m}: {reached}/5 on the front ({time.perf_counter() - began:.1f} s)", file=sys.stderr
        )
    return out


def table(res: dict[str, list[dict]]) -> str:
    """Markdown: per method, the starts that reached the front and each run's final x2 or why not."""
    head = [f"({s[0]:g}, {s[1]:g})" for s in STARTING_POINTS.tolist()]
    lines = [
        "| method | on the front | " + " | ".join(head) + " |",
        "|---|---:|" + "---:|" * len(head),
    ]
    for m, runs in res.items():
        cells = []
        for r in runs:
            x1, x2 = r["final"]
            where = f"({x1:.2f}, {x2:.2f})"
            cells.append(where if r["front"] else f"{where} gap {r['gap']:.1e}")
        reached = sum(r["front"] for r in runs)
        lines.append(f"| {m} | {reached}/5 | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(res: dict[str, list[dict]], scale: float, path: Path) -> None:
    """One panel per method: contours of L1 + L2 and the five trajectories (start o, end x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = torch.linspace(-10, 10, 201, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    total = toy_losses(torch.stack([xx.flatten(), yy.flatten()], 1), scale).sum(1)
    total = total.reshape(xx.shape)
    cols = 3
    rows = -(-len(res) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False)
    colours = [f"C{i}" for i in range(10)]  # the tab10 cycle
    for ax, (m, runs) in zip(axes.flat, res.items(), strict=False):
        ax.contourf(xx, yy, total, levels=30, cmap="Greys", alpha=0.6)
        ax.plot([-7, 7], [-8.36, -8.36], color="black", lw=3, alpha=0.35)  # the front, roughly
        for i, r in enumerate(runs):
            p = torch.tensor(r["path"])
            ax.plot(p[:, 0], p[:, 1], color=colours[i], lw=1.2)
            ax.plot(*r["start"], "o", color=colours[i], ms=4)
            ax.plot(*r["final"], "x" if r["front"] else "s", color=colours[i], ms=6)
        reached = sum(r["front"] for r in runs)
        ax.set_title(f"{m} ({reached}/5 on the front)", fontsize=9)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(res) :]:
        ax.axis("off")
    what = "L1 + L2" if scale == 1 else f"{scale:g} L1 + L2"
    fig.suptitle(f"2-D toy: trajectories over {what} (x: on the front, square: not)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def unwritable(path: Path) -> str:
    """Why ``path`` cannot be written ('' if it can): a directory, or a parent that is a file or
    not writable (missing parents are created, as the figure's are)."""
    if path.is_dir():
        return "is a directory"
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file"
    try:
        check_writable(parent)
    except OSError as e:
        return f"{parent} is not writable ({e.strerror})"
    return ""


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="bench/mtl_toy2d.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--steps", type=positive_int, default=3000, help="optimisation steps per run")
    p.add_argument("--scale", type=float, default=1.0, help="factor on L1 (Nash-MTL's toy: 0.1)")
    p.add_argument("--png", default=str(ROOT / "docs" / "toy2d.png"), help="figure ('' = none)")
    p.add_argument("--json", default="", help="also dump the runs (with trajectories) here")
    args = p.parse_args(argv)
    if not args.scale > 0:
        p.error(f"--scale must be > 0, got {args.scale}")
    for flag, out in (("--png", args.png), ("--json", args.json)):
        problem = out and unwritable(Path(out))
        if problem:  # found now, not after minutes of runs
            p.error(f"{flag} {out}: {problem}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with sigint_raises():
        try:
            res = run(list(dict.fromkeys(args.methods)), args.steps, args.scale)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        finally:
            torch.set_num_threads(threads)
    print(table(res))
    if args.json:
        atomic_write(Path(args.json), json.dumps(res).encode())
    if args.png:
        plot(res, args.scale, Path(args.png))
    return 0


if __name__ == "__main__":
    sys.exit(main())
