"""Resident memory of this process: the quantity a `--memory-budget` is about.

The budget is the whole process's peak RSS (interpreter, libraries, weights, buffers, activations), so the
runtime reads the kernel's own accounting instead of estimating: `VmHWM` (peak) and `VmRSS` (now) from
/proc/self/status, with `ru_maxrss` as the fallback where /proc is missing. Writing "5" to /proc/self/clear_refs
resets the peak to the current RSS, which lets the profiler attribute peaks to phases (load, one call) inside a
single process.
"""

from __future__ import annotations

import ctypes
import functools
import ctypes.util
import resource
import sys
from pathlib import Path
from edgediff.units import MIB

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter number (malloc.h)


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_mb() -> float:
    """RSS now, MiB (VmRSS); falls back to the peak when /proc is unavailable (an over-estimate, never under)."""
    kib = _status_kib("VmRSS")
    return kib / 1024.0 if kib is not None else peak_mb()


def peak_mb() -> float:
    """Peak RSS of this process so far, MiB: VmHWM (honours clear_refs resets), else ru_maxrss."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024.0
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / MIB if sys.platform == "darwin" else ru / 1024.0  # bytes on macOS, KiB on Linux


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux clear_refs "5"); False where the kernel does not allow it."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def _mallopt():
    """glibc's mallopt from the libc already mapped into this process (CDLL(None)); find_library is only the
    fallback because it shells out to ldconfig, which costs tens of milliseconds and a subprocess per run."""
    for name in (None, "libc.so.6"):
        try:
            return ctypes.CDLL(name).mallopt
        except (OSError, AttributeError):
            continue
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return None


def set_mmap_threshold(nbytes: int) -> bool:
    """Make glibc serve allocations >= `nbytes` with mmap, so freed activation buffers go back to the kernel.

    glibc otherwise keeps freed heap and its dynamic threshold drifts upward, so peaks creep over a long loop
    (REFERENCE.md: 376 -> 234 MB at 256 px with 64 KiB). Same effect as MALLOC_MMAP_THRESHOLD_ but settable after
    start-up. Returns False on a libc without mallopt (musl, macOS): the lever is then simply unavailable.
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))
