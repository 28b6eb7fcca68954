"""Ratio cells of bench/throughput.py's table, importable without the script's process-wide
torch settings (it limits OpenMP spinning and flushes subnormals at import)."""

from __future__ import annotations

import numpy as np


def ratio_cell(rates: list[float], base: list[float] | None) -> str:
    """Median (min-max) over rounds of the per-round ratio of ``rates`` to ``base``."""
    if not base:
        return "-"
    ratios = np.array(rates) / np.array(base)
    return f"{np.median(ratios):.2f}x ({ratios.min():.2f}-{ratios.max():.2f})"
