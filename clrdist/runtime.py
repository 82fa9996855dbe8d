"""Process-level settings for CPU training and benchmarks.

glibc's malloc serves blocks above a dynamic threshold (128 KiB at start) with mmap and hands them
back to the kernel when freed, and trims the heap top past another; a training step that allocates
and frees the same few hundred KiB (an augmented batch) can then fault every page of it in again on
every step. Which side of the threshold a block lands on depends on what the process freed before,
so the cost comes and goes (measured here: the same augmentation call took 250 or 420 us depending
on what ran before it). ``tune_malloc`` fixes both thresholds high, as PyTorch's CPU performance
guides suggest doing with jemalloc or tcmalloc; memory freed inside the process is reused instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # blocks below 64 MiB come from the heap
TRIM_THRESHOLD = 256 << 20  # keep up to 256 MiB of freed heap top instead of trimming it


def tune_malloc() -> bool:
    """Set glibc's mmap and trim thresholds for this process. False where it does not apply:
    not Linux/glibc, or CLRDIST_TUNE_MALLOC=0 in the environment."""
    if os.environ.get("CLRDIST_TUNE_MALLOC", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
