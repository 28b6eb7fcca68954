"""What the docs only quote, not run (tests/test_docs_examples.py runs the rest), still holds.

Every `python bench/<script>.py ...` of the docs and of the bench scripts' docstrings parses with
that script's parser (and names existing files and valid config overrides), every flag quoted on
its own is a real one, every `python train.py ...` line parses and its config loads (a resume
changing only the keys a resume may change), and the name lists of README.md and docs/mtrl.md
are the registries'.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "extending.md"
LIBRARY = ROOT / "docs" / "mtrl.md"

# Every bench command the docs quote parses with the current scripts: each script's main() runs
# until its parser has parsed the command line, then stops.
DOCS = [README, GUIDE, LIBRARY, ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "reliability.md"]
BENCH = (
    "atari_learning",
    "learning",
    "mtl",
    "mtl_toy2d",
    "profile_update",
    "sb3_parity",
    "throughput",
)
PLACEHOLDERS = {"<name>": "a2c_multitask", "<run dir>": "RUN", "<dir>": "RUN", "<(a)>": "REUSE"}
# the rows of benchmarks.md's profile table name bench/profile_update.py's arguments only
PROFILE_ROW = re.compile(r"^(?:GOMP_SPINCOUNT=\d+ \.\.\. )?(--agent \S+.*)$")


def quoted(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each line of the fenced blocks and of each inline code span of a markdown
    file; a span may wrap over lines (its whitespace collapsed), a fenced line may end in a
    comment (dropped)."""
    text = path.read_text()
    out = []
    fence = re.compile(r"^```[^\n]*\n(.*?)^```$", re.M | re.S)
    for m in fence.finditer(text):
        first = text.count("\n", 0, m.start(1)) + 1
        for i, line in enumerate(m[1].replace("\\\n", " ").splitlines()):
            out.append((first + i, line.split(" #")[0].strip()))
    prose = fence.sub(lambda m: "\n" * m[0].count("\n"), text)
    for m in re.finditer(r"`([^`]+)`", prose):
        out.append((prose.count("\n", 0, m.start()) + 1, " ".join(m[1].split())))
    return out


def bench_commands() -> list[tuple[str, str, list[str]]]:
    """(where, script, arguments) of every `python bench/<script>.py ...` quoted in the docs or
    in a bench script's docstring, placeholders filled in."""
    import ast

    sources = [(p.relative_to(ROOT), line, code) for p in DOCS for line, code in quoted(p)]
    for p in sorted((ROOT / "bench").glob("*.py")):
        doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        for i, line in enumerate(doc.splitlines()):
            sources.append((p.relative_to(ROOT), i + 1, line.split(" #")[0].strip()))
    out = []
    for path, line, code in sources:
        for key, value in PLACEHOLDERS.items():
            code = code.replace(key, value)
        if m := re.search(r"(?:^|python )bench/(\w+)\.py( --.*| \w+.*|$)", code):
            script, args = m[1], m[2]
            if not code.startswith(("python ", "GOMP_SPINCOUNT=")) and not args.startswith(" --"):
                continue  # a file named in passing, not a command
        elif path.name == "benchmarks.md" and (m := PROFILE_ROW.match(code)):
            script, args = "profile_update", m[1]
        else:
            continue
        if script in BENCH:
            out.append((f"{path}:{line}", script, shlex.split(args)))
    return out


class _Parsed(Exception):
    """Raised by the patched parser: the namespace and the flags the parser knows."""


@pytest.fixture(scope="module")
def parsed_bench_commands() -> list[tuple[str, str, list[str], dict]]:
    """Each of :func:`bench_commands` with what its script's parser made of it: ``{"args":
    namespace as a dict, "flags": [...]}``, or ``{"error": ...}``."""
    import contextlib
    import importlib
    import io

    import torch  # noqa: F401  (first: the scripts then leave OpenMP's settings alone)

    from agents.seeding import flushing_denormals
    from bench import _cli

    def parse_args(self, args=None, namespace=None):
        ns = super(_cli.Parser, self).parse_args(args, namespace)
        flags = sorted(k for k in self._option_string_actions if k.startswith("--"))
        raise _Parsed({"args": vars(ns), "flags": flags})

    out = []
    with pytest.MonkeyPatch.context() as mp, flushing_denormals():  # mode restored after
        mp.setattr(_cli.Parser, "parse_args", parse_args)  # throughput & co. set it on import
        for where, script, args in bench_commands():
            main = importlib.import_module(f"bench.{script}").main
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err):
                    main(args)
                result = {"error": "ran past its parser"}
            except _Parsed as e:
                result = e.args[0]
            except SystemExit as e:
                result = {"error": f"exit {e.code}: {err.getvalue().strip()}"}
            out.append((where, script, args, result))
    return out


def test_every_quoted_bench_command_parses(parsed_bench_commands):
    """Flags, choices (agents, methods, suites) and counts of each `python bench/...` line."""
    assert len(parsed_bench_commands) >= 40
    assert {script for _, script, _, _ in parsed_bench_commands} == set(BENCH)
    bad = [(where, args, r["error"]) for where, _, args, r in parsed_bench_commands if "error" in r]
    assert not bad, bad


def test_quoted_bench_commands_name_real_files_and_valid_overrides(parsed_bench_commands):
    """What a parsed command points to exists: configs, maps, results JSON; its config
    overrides (positional or --set) load on top of the presets it would run."""
    from agents.config import ConfigError, load_config
    from bench.learning import check_overrides
    from envs.gridworld_maps import map_path

    loads: dict[tuple[str, tuple[str, ...]], str] = {}  # (config, overrides) -> where
    for where, script, _, result in parsed_bench_commands:
        if "error" in result:
            continue  # test_every_quoted_bench_command_parses names it
        args = result["args"]
        for key in ("config", "from_json"):
            if args.get(key):
                assert (ROOT / args[key]).is_file(), where
        if script == "learning":
            map_path(args["map"])  # an unknown map raises
            assert not (args["set"] and args["from_json"]), where
            for suite in args["suites"] if args["set"] else ():
                error = check_overrides([suite], args["agents"], args["set"])
                assert error is None, (where, error)
        elif script == "atari_learning":
            assert not (args["from_run"] and (args["config"] or args["overrides"])), where
            config = str(args["config"] or "configs/default.yaml")
            loads[config, tuple(args["overrides"])] = where
        elif script == "profile_update":
            loads["configs/atari_a2c.yaml", tuple(args["overrides"])] = where
    for (config, overrides), where in loads.items():
        try:
            load_config(ROOT / config, list(overrides))
        except ConfigError as e:  # names the bad override
            pytest.fail(f"{where}: {e}")


def test_quoted_bench_flags_exist(parsed_bench_commands):
    """A flag quoted on its own in benchmarks.md or the README (`--rounds 1 --updates 60`,
    `--set agent.beta=200`, ...) is one of the bench scripts' or train.py's."""
    known = {"--help", "--config", "--resume"}  # train.py's
    for *_, result in parsed_bench_commands:
        known.update(result.get("flags", ()))
    quoted_flags = {
        (f"{path.name}:{line}", flag)
        for path in (README, ROOT / "docs" / "benchmarks.md")
        for line, code in quoted(path)
        if not re.search(r"\b(pytest|tensorboard|pip)\b", code)  # other programs' flags
        for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", code)
    }
    assert len(quoted_flags) >= 60
    assert not [(where, flag) for where, flag in quoted_flags if flag not in known]


def train_commands() -> list[tuple[str, list[str]]]:
    """(where, arguments) of every `python train.py ...` quoted in the docs (an optional
    `[key=N]` given as key=1; a `configs/supervised/...` left out)."""
    out = []
    for path in DOCS:
        for line, code in quoted(path):
            code = re.sub(r" \[([\w.]+)=N\]", r" \1=1", code)
            if (m := re.search(r"\bpython train\.py\b(.*)", code)) and "..." not in m[1]:
                out.append((f"{path.relative_to(ROOT)}:{line}", shlex.split(m[1])))
    return out


def test_every_quoted_train_command_parses_and_its_config_loads(capsys):
    """Also the lines the tests above do not run (docs/reliability.md's usage, benchmarks.md's
    historical runs, resumes): flags parse, config and overrides load, and a resume changes only
    the keys a resume may change."""
    import train
    from agents.config import ConfigError, load_config
    from agents.resume import RESUME_SAFE
    from agents.supervised_config import is_supervised_file, load_supervised
    from agents.supervised_run import SUPERVISED_RESUME_SAFE

    commands = train_commands()
    assert len(commands) >= 20
    for where, argv in commands:
        if argv == ["--help"]:
            with pytest.raises(SystemExit) as exit_:
                train._parser().parse_args(argv)
            assert exit_.value.code == 0 and "valid names:" in capsys.readouterr().out
            continue
        args = train._parser().parse_args(argv)
        config = ROOT / (args.config or "configs/default.yaml")
        overrides = args.overrides
        if args.resume is not None:
            assert args.config is None, where
            for key in (o.split("=", 1)[0] for o in overrides):
                if key.startswith("supervised."):
                    safe = key.removeprefix("supervised.").startswith(SUPERVISED_RESUME_SAFE)
                else:
                    safe = key.startswith(RESUME_SAFE)
                assert safe, (where, key)
            overrides = [o for o in overrides if not o.startswith("supervised.")]
        try:  # on a resume: the RL overrides' types and ranges
            if is_supervised_file(config):
                load_supervised(config, overrides)
            else:
                load_config(config, overrides)
        except ConfigError as e:
            pytest.fail(f"{where}: {e}")


def _names(text: str) -> set[str]:
    """Registry names from a prose list: "hard and soft sharing, cross-stitch, IMTL-G, ..."."""
    text = text.replace("hard and soft sharing", "hard sharing, soft sharing")
    return {re.sub(r"[\s-]+", "_", n.strip().strip("`").lower()) for n in text.split(",")}


def test_the_docs_name_every_registered_agent_architecture_and_weighting():
    """README's and docs/mtrl.md's name lists are the registries' (a new method gets a line)."""
    import train
    from agents.factory import names as agents
    from mtrl.architectures import names as architectures
    from mtrl.weighting import names as weightings

    readme, library = README.read_text(), LIBRARY.read_text()
    table = re.findall(r"^\| (`\w+`(?:, `\w+`)*)(?: \(`configs/\S+`\))? \|", readme, re.M)
    assert set().union(*map(_names, table)) == set(agents())
    assert f"one of {len(agents())} agents" in " ".join(readme.replace("seven", "7").split())
    for text, pattern, registry in (
        (readme, r"\(`mtrl\.architectures\.names\(\)`: ([^)]*)\)", architectures()),
        (library, r"`names\(\)` lists them: ([^.]*)\.", architectures()),
        (readme, r"\(`mtrl\.weighting\.names\(\)`: ([^)]*)\)", weightings()),
        (library, r"# W\.names\(\): (.*\n# .*)\n", weightings()),
    ):
        listed = re.search(pattern, text)[1].replace("#", "")
        assert _names(" ".join(listed.split())) == set(registry), listed
    # the methods README says the RL runner refuses: those not in train.py's valid names
    rl_paragraph = re.search(r"^Task-loss weighting from .*?refused here", readme, re.M | re.S)[0]
    named = set(re.findall(r"`(\w+)` \(", rl_paragraph))
    rl = set(train._rl_weightings())
    assert named == set(weightings()) - rl  # dwa, famo, great, gradient_reversal
