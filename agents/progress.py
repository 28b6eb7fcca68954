"""The progress bar's postfix: the latest return per task, as readable as the terminal allows.

Full task names when they fit beside the bar; otherwise every name is cut to the longest common
length that fits (never below 4 characters), and kept whole where a cut would make two tasks read
the same (``space_invaders`` and ``space_war`` stay apart).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import numpy as np

BAR_WIDTH = 60  # what tqdm's counters, rate and a short bar take beside the postfix
MIN_NAME = 4


def _cut(names: Sequence[str], n: int) -> list[str]:
    """Names cut to ``n`` characters; a name whose cut collides with another's stays whole."""
    cut = [name[:n] for name in names]
    return [c if cut.count(c) == 1 else name for c, name in zip(cut, names)]


def postfix_width() -> int:
    """Characters the postfix may take: the terminal's width less the bar's."""
    return shutil.get_terminal_size((120, 24)).columns - BAR_WIDTH


def task_postfix(
    names: Sequence[str], recent: Sequence[Sequence[float]], width: int | None = None
) -> str:
    """``name=mean`` per task (``name=-`` before its first episode) in at most ``width``
    characters if cutting names can get there (default: :func:`postfix_width`)."""
    if width is None:
        width = postfix_width()
    values = [f"{np.mean(r):.2f}" if len(r) else "-" for r in recent]

    def render(shown: Sequence[str]) -> str:
        return " ".join(f"{s}={v}" for s, v in zip(shown, values))

    longest = max((len(n) for n in names), default=0)
    for n in range(longest, MIN_NAME - 1, -1):
        text = render(_cut(names, n))
        if len(text) <= width:
            return text
    return render(_cut(names, MIN_NAME))
