"""The machine: what a benchmark's absolute numbers were measured on, and handing freed memory
back to it."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform.processor()`` is often
    empty), else what the platform module says, else "unknown"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Return the heap that freed tensors left behind to the OS (glibc ``malloc_trim``; a no-op
    elsewhere). glibc keeps it otherwise: a scorer's resident memory would climb with every
    wider batch it ever ran (measured: +200 MB over one 40,000-text round), although what it
    holds is one shard's."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
