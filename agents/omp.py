"""OpenMP spin policy for a CPU where emulator threads and torch's threads share the cores.

GNU OpenMP (the runtime of the torch CPU wheels) keeps its worker threads spinning for a while
after each parallel region. Between the back-to-back kernels of a training step that saves a
wake-up, but while the C++ emulator threads of ale-py step the games it takes their cores: on
2 cores, 4 Atari games, ``a2c_multitask`` ran 1,489 steps/s with libgomp's default (300,000
spins) and 1,902 with ``GOMP_SPINCOUNT=30000`` (bench/profile_update.py, a one-off measurement;
docs/benchmarks.md's profile table has 1,688 -> 1,931, +14%, and +9% for Distral 2-col). The
runtime reads the variable once, when torch is first imported, so call this before that.
"""

from __future__ import annotations

import os
import sys

DEFAULT_SPINCOUNT = 30_000


def limit_openmp_spinning(spincount: int = DEFAULT_SPINCOUNT) -> bool:
    """Set ``GOMP_SPINCOUNT`` unless the user chose a policy or torch is already loaded.

    Returns whether the setting was applied. A user's ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``
    always wins.
    """
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = str(spincount)
    return True
