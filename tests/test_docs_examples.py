"""docs/extending.md's and docs/mtrl.md's examples run as written.

A fence with a file name after the language (```python my_methods.py) is that file's content
(blocks of one name are joined in order); the other ```python blocks run in order in one
namespace, and each `python my_train.py --config ...` line of a ```bash block runs through the
launcher, with overrides that keep the run tiny. Everything happens in a temporary directory
holding a link to configs/, as if run from the repository root. docs/mtrl.md's python blocks
run in order in one namespace and its `python train.py --config configs/supervised/...` lines
run for one epoch.
(tests/test_docs_quoted.py checks the commands the docs only quote.)
"""

from __future__ import annotations

import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)[ \t]*(\S*)\n(.*?)^```$", re.M | re.S)
TINY_RL = ["total_steps=400", "progress=false", "eval.episodes=2", "env.num_envs_per_task=2"]
TINY_SUPERVISED = [
    "supervised.epochs=1",
    "supervised.benchmark.n_train=128",
    "supervised.benchmark.n_test=32",
    "supervised.progress=false",
]


def blocks() -> list[tuple[str, str, str]]:
    """(language, file name or "", code) of every fenced block of the guide, in order."""
    return [(m[1], m[2], m[3]) for m in FENCE.finditer(GUIDE.read_text())]


def commands() -> list[list[str]]:
    """The arguments of each `python my_train.py ...` line of the guide's bash blocks."""
    out = []
    for lang, _, code in blocks():
        if lang != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line)
            if words[:2] == ["python", "my_train.py"]:
                out.append(words[2:])
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A working directory like the repository root; the registries and sys.modules as they
    were afterwards (the guide's names must not leak into other tests)."""
    from agents.factory import AGENTS
    from mtrl.architectures import ARCHITECTURES
    from mtrl.weighting import WEIGHTINGS

    for registry in (AGENTS, ARCHITECTURES, WEIGHTINGS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("my_methods", "my_train"):
        sys.modules.pop(name, None)


def test_the_guide_has_an_example_per_extension_point():
    files = {name for _, name, _ in blocks() if name}
    assert files == {"my_methods.py", "five_goals.txt", "my_train.py"}
    code = "".join(c for _, name, c in blocks() if name == "my_methods.py")
    for registration in ("WEIGHTINGS.register", "ARCHITECTURES.register", "AGENTS.register"):
        assert registration in code
    assert len(commands()) == 2


def test_the_guide_examples_run(sandbox, monkeypatch):
    files: dict[str, str] = {}
    for _, name, code in blocks():
        if name:
            files[name] = files.get(name, "") + code
    for name, text in files.items():
        (sandbox / name).write_text(text)
    namespace: dict[str, object] = {"__name__": "extending_md"}
    for i, (lang, name, code) in enumerate(blocks()):
        if lang == "python" and not name:
            exec(compile(code, f"docs/extending.md, block {i + 1}", "exec"), namespace)

    runs = sandbox / "runs"
    for i, args in enumerate(commands()):
        supervised = any("supervised" in a for a in args)
        tiny = TINY_SUPERVISED if supervised else TINY_RL
        key = "supervised.run_dir" if supervised else "run_dir"
        run_dir = runs / str(i)
        argv = ["my_train.py", *args, *tiny, f"{key}={run_dir}"]
        monkeypatch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(sandbox / "my_train.py"), run_name="__main__")
        assert exit_.value.code == 0, argv
        summary = json.loads((run_dir / "summary.json").read_text())
        if not supervised:  # the new agent, weighting and map together; then a resume
            assert summary["agent"] == "a2c_vf_decay" and list(summary["tasks"]) == ["0", "2", "4"]
            first = json.loads((run_dir / "losses.jsonl").read_text().splitlines()[0])
            assert first["losses/vf_coef"] == pytest.approx(0.5)  # the preset's vf_coef
            assert first["weights/0"] == 1.0
            monkeypatch.setattr(sys, "argv", ["my_train.py", "--resume", str(run_dir)])
            with pytest.raises(SystemExit) as exit_:
                runpy.run_path(str(sandbox / "my_train.py"), run_name="__main__")
            assert exit_.value.code == 0


LIBRARY = ROOT / "docs" / "mtrl.md"


def library_blocks() -> list[tuple[str, str]]:
    """(language, code) of docs/mtrl.md's fenced blocks, in order ("" for a bare fence)."""
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
    return [(m[1], m[2]) for m in fence.finditer(LIBRARY.read_text())]


def test_the_library_guide_examples_run_in_order(sandbox):
    """docs/mtrl.md's python blocks, pasted one after another, run and do what their comments
    say (the Trainer block writes to runs/digits, here inside the sandbox)."""
    import torch

    namespace: dict[str, object] = {"__name__": "mtrl_md"}
    python = [code for lang, code in library_blocks() if lang == "python"]
    assert len(python) == 5
    torch.manual_seed(0)
    for i, code in enumerate(python):
        exec(compile(code, f"docs/mtrl.md, python block {i + 1}", "exec"), namespace)
    ns = namespace
    assert [tuple(o.shape) for o in ns["outs"]] == [(32, 10), (32, 10)]
    assert ns["weights"].shape == (2,) and ns["cos"].shape == ns["z"].shape == (2, 2)
    assert torch.allclose(ns["cos"].diagonal(), torch.ones(2))
    assert ns["penalty"].item() > 0 and ns["kl"].shape == (32,) and (ns["kl"] >= 0).all()
    assert set().union(*ns["groups"]) == {0, 1} and len(ns["groups"]) <= 2
    assert len(ns["sched"].sample(5)) == 5
    assert set(ns["summary"]["test"]) == {"left", "right"}
    assert (sandbox / "runs" / "digits" / "last.pt").is_file()
    trainer = ns["trainer"]  # the resumed fit ran the 10 more epochs and learned both digits
    assert trainer.epoch == 20
    accuracy = trainer.evaluate()
    assert min(accuracy[task]["accuracy"] for task in ("left", "right")) > 0.8


def test_the_library_guide_commands_run(sandbox, monkeypatch):
    """Each `python train.py --config configs/supervised/...` line of docs/mtrl.md runs (tiny)."""
    lines = []
    for lang, code in library_blocks():
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line) if lang in ("", "bash") else []
            if words[:2] == ["python", "train.py"]:
                lines.append(words[2:])
    assert len(lines) == 3
    import train

    for i, args in enumerate(lines):
        run_dir = sandbox / "cmd" / str(i)
        argv = [a for a in args if not a.startswith("supervised.run_dir=")]
        argv += [
            "supervised.epochs=1",
            "supervised.progress=false",
            f"supervised.run_dir={run_dir}",
        ]
        assert train.main(argv) == 0, argv
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["epochs"] == 1 and len(summary["tasks"]) >= 2, argv


README = ROOT / "README.md"


def readme_commands() -> list[str]:
    """Every line of README.md's ```bash blocks (continuations joined, comments dropped)."""
    out = []
    for m in re.finditer(r"^```bash\n(.*?)^```$", README.read_text(), re.M | re.S):
        for line in m[1].replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def test_ci_runs_the_readme_set_up_and_test_command():
    """The README's test command is what .ci/run runs: same install chain, then the tests."""
    setup = [c for c in readme_commands() if c.startswith("python3 -m venv")]
    assert len(setup) == 2  # install + main job, install + tests
    main_job, tests = (c.split(" && ") for c in setup)
    assert main_job[-1] == "python train.py" and tests[-1] == "python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert " && ".join(tests[:-1]) in ci and tests[-1] in ci
    assert main_job[:-2] == tests[:-2]  # the same venv and torch pin before the project install


@pytest.mark.atari
def test_the_readme_quickstart_commands_run(sandbox):
    """Each `python train.py --config ...` line of the README runs (tiny budget, own run dir)."""
    import train

    lines = [shlex.split(c)[2:] for c in readme_commands() if c.startswith("python train.py --")]
    assert len(lines) >= 8
    tiny_rl = ["total_steps=200", "env.num_envs_per_task=1", "eval.episodes=1", "eval.max_steps=50"]
    for i, args in enumerate(lines):
        args = [a.replace("path/to/map.txt", str(ROOT / "envs/maps/two_rooms.txt")) for a in args]
        run_dir = sandbox / "readme" / str(i)
        if "supervised" in args[1]:
            tiny = [*TINY_SUPERVISED, f"supervised.run_dir={run_dir}"]
        else:
            tiny = [*tiny_rl, "progress=false", f"run_dir={run_dir}"]
        assert train.main([*args, *tiny]) == 0, args
        assert (run_dir / "summary.json").is_file(), args
