"""bench/mtl.py and bench/mtl_speed.py's pure parts (Delta-m, the tables, the verdicts, the docs
section, the rounds of speed()), by hand on tiny inputs; no benchmark is run."""

import json
import subprocess

import pytest

import bench.mtl_speed as ms
from bench import mtl


def test_delta_m_follows_the_metric_direction():
    # accuracy (higher is better): 0.9 vs 1.0 and 0.8 vs 1.0 lose 10% and 20%: +15
    assert mtl.delta_m([0.9, 0.8], [1.0, 1.0], True) == pytest.approx(15.0)
    assert mtl.delta_m([1.2, 1.0], [1.0, 0.5], True) == pytest.approx(-60.0)  # -(20% + 100%) / 2
    # mse (lower is better): (2 - 4) / 4 = -50%, (3 - 1) / 1 = +200%: +75
    assert mtl.delta_m([2.0, 3.0], [4.0, 1.0], False) == pytest.approx(75.0)
    assert mtl.delta_m([5.0], [5.0], False) == 0.0


def fake_benchmark(name):
    higher = name == "two_digits"
    return {
        "out": [10, 10],
        "metric": ("accuracy" if higher else "mse", None, higher),
        "names": ["a", "b"],
    }


# single-task metric of task t at seed s, and the multi-task method's two metrics at seed s
STL = {0: [1.0, 2.0, 6.0], 1: [4.0, 4.0, 4.0]}  # task 0: mean 3, median 2
MULTI = [[3.0, 2.0], [3.0, 4.0], [9.0, 6.0]]


def fake_train_once(bench, method, seed, tasks):
    if method == "equal" and len(tasks) == 1:
        return [STL[tasks[0]][seed]]
    assert method == "m" and tasks == [0, 1]
    return list(MULTI[seed])


def test_quality_averages_seeds_against_single_task_means(monkeypatch):
    monkeypatch.setattr(mtl, "benchmark", fake_benchmark)
    monkeypatch.setattr(mtl, "train_once", fake_train_once)
    monkeypatch.setattr(mtl, "QUALITY_METHODS", ["m"])
    res = mtl.quality(3)
    assert list(res) == ["two_digits", "gradnorm_toy"]
    for bname, sign in [("two_digits", -1), ("gradnorm_toy", 1)]:
        r = res[bname]
        assert r["names"] == ["a", "b"] and r["metric"] == ("accuracy" if sign < 0 else "mse")
        assert r["rows"]["single-task"] == {"metrics": [3.0, 4.0], "delta_m": [0.0]}
        assert r["rows"]["m"]["metrics"] == [5.0, 4.0]  # means over seeds, not medians
        # per seed, against the single-task means [3, 4]: (0 - 50%)/2, (0 + 0)/2, (200% + 50%)/2
        assert r["rows"]["m"]["delta_m"] == pytest.approx([sign * -25.0, 0.0, sign * 125.0])


def test_quality_table_renders_mean_and_sample_std():
    rows = {
        "single-task": {"metrics": [0.9, 0.8], "delta_m": [0.0]},
        "equal": {"metrics": [0.91234, 0.7], "delta_m": [1.0, 2.0, 6.0]},
        "one_seed": {"metrics": [1.0, 2.0], "delta_m": [-1.5]},
    }
    res = {
        "two_digits": {"names": ["left", "right"], "metric": "accuracy", "rows": rows},
        "toy": {
            "names": ["s1"],
            "metric": "mse",
            "rows": {"x": {"metrics": [2.5], "delta_m": [-4.0, 4.0]}},
        },
    }
    assert mtl.quality_table(res).splitlines() == [
        "**two_digits** (test accuracy, higher is better; mean of 3 seeds)",
        "",
        "| method | left accuracy | right accuracy | Delta-m%, lower is better (+-std over seeds) |",
        "|---|---:|---:|---:|",
        "| single-task | 0.9 | 0.8 | 0 (reference) |",
        "| equal | 0.9123 | 0.7 | +3.00 (2.65) |",  # mean 3, sample std sqrt(7)
        "| one_seed | 1 | 2 | -1.50 (0.00) |",
        "",
        "**toy** (test mse, lower is better; mean of 2 seeds)",  # its own count
        "",
        "| method | s1 mse | Delta-m%, lower is better (+-std over seeds) |",
        "|---|---:|---:|",
        "| x | 2.5 | +0.00 (5.66) |",  # sample std: sqrt(32)
    ]


def test_write_docs_replaces_only_its_own_section(tmp_path, monkeypatch):
    monkeypatch.setattr(mtl, "ROOT", tmp_path)
    doc = tmp_path / "docs" / "benchmarks.md"
    body = mtl.SECTION + "\n\nnew\n### (a) x\n\n"
    mtl.write_docs(body)  # no docs/ folder yet: a new document with our section
    assert doc.read_text() == "# Benchmarks\n\n" + mtl.SECTION + "\n\nnew\n### (a) x\n"
    doc.write_text("# Benchmarks\n\n## Other\nkeep\n\n\n")  # no section yet: appended
    mtl.write_docs(body)
    assert (
        doc.read_text()
        == "# Benchmarks\n\n## Other\nkeep\n\n" + mtl.SECTION + "\n\nnew\n### (a) x\n"
    )
    before = "# Benchmarks\n\n## Other\nA\n\n"
    old = mtl.SECTION + "\n\nold\n### (a) sub\nold2\n#### deeper\n"
    after = "\n## Next\nkeep\n\n## Last\nz\n"
    doc.write_text(before + old + after)
    mtl.write_docs(mtl.SECTION + "\n\nnew\n\n")
    assert doc.read_text() == before + mtl.SECTION + "\n\nnew\n" + after
    doc.write_text(before + old)  # our section last
    mtl.write_docs(mtl.SECTION + "\n\nnewer")
    assert doc.read_text() == before + mtl.SECTION + "\n\nnewer\n"


def test_speed_keeps_the_fastest_median_and_the_largest_memory(monkeypatch):
    monkeypatch.setattr(ms, "speed_configs", lambda: [("equal", "params"), ("pcgrad", "params")])
    rounds = iter(
        [(1.0, 5.0, 10.0), (1.0, 3.0, 30.0), (1.0, 4.0, 20.0)]  # (pcgrad ms, mem) per round
    )
    calls = []

    def fake_run(cmd, **kwargs):
        method, mode, t, steps, trunk, batch = cmd[2:]
        calls.append((method, mode, t, steps, trunk, batch))
        if method == "equal":
            out = {"ms": 1.0, "mem_mb": 1.0}
        else:
            _, ms_, mem = next(rounds)
            out = {"ms": ms_, "mem_mb": mem}
        return subprocess.CompletedProcess(cmd, 0, "noise\n" + json.dumps(out) + "\n", "")

    monkeypatch.setattr(ms.subprocess, "run", fake_run)
    res = ms.speed([2], 3, trunk=(8, 4), batch=16)
    assert res == {
        "equal/params/2": {"ms": 1.0, "mem_mb": 1.0},
        "pcgrad/params/2": {"ms": 3.0, "mem_mb": 30.0},
    }
    assert calls[:2] == [
        ("equal", "params", "2", "30", "8,4", "16"),
        ("pcgrad", "params", "2", "30", "8,4", "16"),
    ]

    calls.clear()
    rounds = iter([(1.0, 7.0, 1.0)] * 3)
    assert list(ms.speed([10, 40], 1, only=["pcgrad"])) == ["pcgrad/params/10", "pcgrad/params/40"]
    assert [c[:4] for c in calls] == [
        ("pcgrad", "params", "10", "30"),
        ("pcgrad", "params", "40", "12"),
    ]


def test_a_failed_round_keeps_the_earlier_measurements(monkeypatch):
    monkeypatch.setattr(ms, "speed_configs", lambda: [("pcgrad", "params")])
    outcomes = iter([{"ms": 3.0, "mem_mb": 5.0}, None, {"ms": 9.0, "mem_mb": 1.0}])

    def fake_run(cmd, **kwargs):
        out = next(outcomes)
        if out is None:
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback\nMemoryError\n")
        return subprocess.CompletedProcess(cmd, 0, json.dumps(out) + "\n", "")

    monkeypatch.setattr(ms.subprocess, "run", fake_run)
    assert ms.speed([2], 3) == {"pcgrad/params/2": {"ms": 3.0, "mem_mb": 5.0}}
    # failed in every round (killed, nothing on stderr): the error is the row
    monkeypatch.setattr(
        ms.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -9, "", "")
    )
    assert ms.speed([2], 2) == {"pcgrad/params/2": {"error": "exit -9"}}


def test_speed_table_ratios_against_equal_at_the_same_t():
    res = {
        "equal/params/2": {"ms": 2.0, "mem_mb": 5.0},
        "equal/params/10": {"ms": 4.0, "mem_mb": 7.0},
        "famo/params/2": {"ms": 2.2, "mem_mb": 6.0},
        "famo/params/10": {"ms": 6.0, "mem_mb": 8.0},
        "pcgrad/params/2": {"ms": 3.0, "mem_mb": 9.0},
        "pcgrad/params/10": {"ms": 10.0, "mem_mb": 12.4},
        "pcgrad/features/2": {"error": "boom"},
    }
    assert ms.speed_table(res, [2, 10]).splitlines() == [
        "| method | mode | T = 2 | T = 10 |",
        "|---|---|---:|---:|",
        "| equal | ours (loss weighting) | 2.0 ms (1.00x), 5 MB | 4.0 ms (1.00x), 7 MB |",
        "| famo | ours, same-batch update (paper) | 2.2 ms (1.10x), 6 MB | 6.0 ms (1.50x), 8 MB |",
        "| pcgrad | ours, parameters | 3.0 ms (1.50x), 9 MB | 10.0 ms (2.50x), 12 MB |",
        "| pcgrad | ours, representation | error | error |",
    ]
    # no equal row to compare with: the ratio is nan, not invented
    assert ms.speed_table({"mgda/torchjd/2": {"ms": 1.0, "mem_mb": 0.0}}, [2]).splitlines()[2] == (
        "| mgda | torchjd 0.18 | 1.0 ms (nanx), 0 MB |"
    )


def test_verdicts_check_each_target_at_the_right_t():
    res = {
        "equal/params/2": {"ms": 10.0},
        "equal/params/10": {"ms": 20.0},
        "random/params/2": {"ms": 11.0},  # 1.10x exactly: within 1.1x
        "random/params/10": {"ms": 21.0},
        "uncertainty/params/2": {"ms": 10.0},  # worst T is T = 10: 1.5x
        "uncertainty/params/10": {"ms": 30.0},
        # dwa, gradnorm not measured: skipped, the rows after them still checked
        "famo/params/2": {"ms": 15.0},
        "famo/params/10": {"ms": 30.0},
        "famo/next_batch/2": {"ms": 10.5},
        "famo/next_batch/10": {"ms": 20.0},
        "gradient_reversal/params/2": {"ms": 12.0},  # worst T is T = 2: 1.2x
        "gradient_reversal/params/10": {"ms": 21.0},
        "pcgrad/params/2": {"ms": 5.0},  # 1.00x of torchjd: met
        "pcgrad/torchjd/2": {"ms": 5.0},
        "pcgrad/params/10": {"ms": 8.0},
        "pcgrad/torchjd/10": {"ms": 10.0},
        "mgda/params/2": {"ms": 4.0},
        "mgda/torchjd/2": {"ms": 5.0},
        "mgda/params/10": {"ms": 12.0},  # slower than torchjd at T = 10 only
        "mgda/torchjd/10": {"ms": 10.0},
        "pcgrad/features/10": {"ms": 4.0},  # 2.0x exactly: met
        "mgda/features/10": {"ms": 3.0},
    }
    for m in ("cagrad", "imtl_g", "nash_mtl", "upgrad"):
        res[f"{m}/params/10"] = {"ms": 6.0}
        res[f"{m}/features/10"] = {"ms": 2.0}
    assert ms.verdicts(res, [2, 10]).splitlines() == [
        "- Loss weighting within 1.1x of equal (worst T): random 1.10x met, uncertainty 1.50x "
        "MISSED, famo (same-batch, paper) 1.50x MISSED, gradient_reversal 1.20x MISSED, famo "
        "(next-batch) 1.05x met",
        "- pcgrad vs torchjd (parameters mode): T=2: 1.00x, T=10: 0.80x -> met",
        "- mgda vs torchjd (parameters mode): T=2: 0.80x, T=10: 1.20x -> MISSED",
        "- Representation mode speed-up at T = 10: pcgrad 2.0x, mgda 4.0x, cagrad 3.0x, "
        "imtl_g 3.0x, nash_mtl 3.0x, upgrad 3.0x -> met (target >= 2x)",
    ]
    res["upgrad/features/10"] = {"ms": 5.0}  # one method below 2x misses the target
    assert ms.verdicts(res, [2, 10]).endswith("upgrad 1.2x -> MISSED (target >= 2x)")
    # a verdict is judged on the ratio as printed: 1.104 read "1.10x MISSED" before
    res["random/params/10"] = {"ms": 22.08}
    assert "random 1.10x met" in ms.verdicts(res, [2, 10])
    res["pcgrad/params/2"] = {"ms": 5.02}  # 1.004x of torchjd, shown as 1.00x
    assert "T=2: 1.00x, T=10: 0.80x -> met" in ms.verdicts(res, [2, 10])


def test_representation_verdict_is_at_t_10_whatever_the_other_ts():
    res = {}
    for m in ms.GRAD_METHODS:
        res[f"{m}/params/10"], res[f"{m}/features/10"] = {"ms": 9.0}, {"ms": 3.0}
        res[f"{m}/params/40"], res[f"{m}/features/40"] = {"ms": 9.0}, {"ms": 9.0}
    out = ms.verdicts(res, [10, 40]).splitlines()
    assert out[0] == (
        "- Loss weighting within 1.1x of equal (worst T): no method but equal was measured"
    )
    assert out[1:] == [
        "- Representation mode speed-up at T = 10: "
        + ", ".join(f"{m} 3.0x" for m in ms.GRAD_METHODS)
        + " -> met (target >= 2x)"
    ]
    assert len(ms.verdicts(res, [40]).splitlines()) == 1  # no T = 10: no representation verdict


def test_verdicts_say_not_measured_for_failed_or_missing_rows():
    # a failed row's ms is NaN, and max() over ratios with a NaN depends on its position: the
    # verdicts printed "nan ... MISSED" or hid the failed T behind the other one's ratio
    res = {
        "equal/params/2": {"ms": 10.0},  # no equal row at T = 10
        "random/params/2": {"ms": 10.0},
        "random/params/10": {"ms": 10.0},
        "pcgrad/params/2": {"ms": 5.0},
        "pcgrad/torchjd/2": {"ms": 5.0},
        "pcgrad/params/10": {"ms": 8.0},
        "pcgrad/torchjd/10": {"error": "torchjd missing"},
    }
    assert ms.verdicts(res, [2, 10]).splitlines() == [
        "- Loss weighting within 1.1x of equal (worst T): random not measured",
        "- pcgrad vs torchjd (parameters mode): T=2: 1.00x, T=10: n/a -> not measured",
    ]


def test_verdicts_with_only_equal_measured_do_not_end_blank():
    # `bench/mtl.py speed --only equal` printed "... within 1.1x of equal (worst T): " and nothing
    res = {"equal/params/2": {"ms": 1.5}}
    assert ms.verdicts(res, [2]).splitlines() == [
        "- Loss weighting within 1.1x of equal (worst T): no method but equal was measured",
    ]


def test_help_explains_the_a_and_b_its_options_refer_to(capsys):
    # --help printed only the docstring's first line, while --rounds, --only, --trunk, --batch
    # and --reuse are described as "(a)" / "(b)", which only the docstring defines
    with pytest.raises(SystemExit) as e:
        mtl.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "(a) Test metrics averaged over seeds" in out
    assert "(b) One training step" in out
    assert "python bench/mtl.py speed" in out


def test_toy2d_bench_table_figure_and_dump(tmp_path, capsys):
    """bench/mtl_toy2d.py end to end on a tiny budget: a table row per method, the figure, and
    a dump whose runs start at the five standard points, hold every step and agree with the
    table; torch's thread count is restored."""
    import torch

    from bench import mtl_toy2d
    from mtrl.data import STARTING_POINTS

    threads = torch.get_num_threads()
    png, dump = tmp_path / "fig" / "toy.png", tmp_path / "runs.json"
    argv = ["--methods", "equal", "mgda", "--steps", "20", "--png", str(png), "--json", str(dump)]
    assert mtl_toy2d.main(argv) == 0
    assert torch.get_num_threads() == threads
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| method | on the front | (-8.5, 7.5) | (0, 0) |")
    assert [line.split(" | ")[:2] for line in out[2:]] == [["| equal", "0/5"], ["| mgda", "0/5"]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = json.loads(dump.read_text())
    assert list(runs) == ["equal", "mgda"]
    for method in runs:
        for run, start in zip(runs[method], STARTING_POINTS.tolist(), strict=True):
            assert run["start"] == run["path"][0] == start
            assert len(run["path"]) == 21 and run["final"] == run["path"][-1]
            assert not run["front"] and run["gap"] > 1e-3  # 20 steps from the starts: far off
