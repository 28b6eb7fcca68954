"""glibc malloc settings for a training process that frees and reallocates the same large buffers.

Each update allocates its gradients (and agents.linear's packed weights) afresh: 26 MB for the
four task columns' FC layer alone. glibc serves blocks above a threshold that it adapts at run
time with fresh ``mmap`` pages, and returns freed heap tops to the kernel, so an update can
page-fault and zero-fill the same memory again: 16 to 2,410 minor page faults per two-column
Distral update on 4 Atari games depending on the allocator's adapted state, under 50 with these
settings (``python bench/profile_update.py --agent distral_klent_2col [--default-malloc]``; the
time difference is within this machine's run-to-run noise). A fixed 32 MB mmap threshold and a
1 GB trim threshold keep the pages in the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Apply the thresholds through glibc's ``mallopt``; returns whether they were applied.

    A no-op off Linux/glibc, and when the user set malloc's own environment variables.
    """
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, trim_threshold)
    )
