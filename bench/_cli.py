"""Command-line plumbing shared by the bench scripts, with train.py's rule for bad input: one
``error: <message>`` line on stderr naming the problem and the fix, exit code 2, nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn

from agents.config import one_line


def fail(message: object) -> int:
    """Print ``error: <message>`` on stderr and return the bad-input exit code, 2."""
    print(f"error: {one_line(message)}", file=sys.stderr)
    return 2


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line (exit 2), as train.py."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}; see `python {self.prog} --help`")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """argparse ``type``: an integer >= 1 (counts, steps, sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def input_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (unknown key, game, agent, map; out-of-range value):
    their messages name the problem and are printed as the one ``error:`` line."""
    from agents.config import ConfigError
    from envs.base import EnvError
    from mtrl.registry import UnknownNameError

    return ConfigError, EnvError, UnknownNameError


@contextlib.contextmanager
def sigint_raises() -> Iterator[None]:
    """Inside, Ctrl-C and ``kill -INT`` raise ``KeyboardInterrupt``, also in a shell's background
    job: it inherits SIGINT ignored, and Python then installs no handler of its own (the bench
    ran on to the end). The previous handler is back afterwards; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
