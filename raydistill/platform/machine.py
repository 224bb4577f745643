"""The machine: what a benchmark's absolute numbers were measured on, where its CPU went (by
process), and handing freed memory back to it."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
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


def _process_group(cmdline: list[str]) -> str:
    """A readable name for a process: a Ray worker's title (``ray::ServeReplica:app:Model``,
    ``ray::ProxyActor``) without its pid suffix, else the program's base name."""
    if not cmdline:
        return "?"
    first = cmdline[0]
    if first.startswith("ray::"):
        return first.split()[0]
    program = Path(first).name
    if program.startswith("python") and len(cmdline) > 1:
        script = next((part for part in cmdline[1:] if not part.startswith("-")), "")
        return f"{program} {Path(script).name}".strip()
    return program


def process_tree_cpu(root: int | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by ``root`` (default: this process) and every
    process below it, by pid, with a readable name: the Ray processes a private ``ray.init``
    starts (GCS, raylet, workers, Serve's proxy and replicas, HAProxy) are all descendants, so
    the difference of two snapshots says where a benchmark's CPU went. Linux only (``/proc``);
    empty elsewhere."""
    proc = Path("/proc")
    if not proc.is_dir():
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    stats: dict[int, tuple[str, float]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # gone between listing and reading
        fields = stat[stat.rindex(")") + 2:].split()
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        stats[pid] = (_process_group([part for part in cmdline if part]),
                      (int(fields[11]) + int(fields[12])) / tick)
    root = os.getpid() if root is None else root
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return {pid: stats[pid] for pid in tree if pid in stats}


def cpu_by_group(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds each named group of processes used between two ``process_tree_cpu``
    snapshots (a process that started in between counts from zero), largest first."""
    groups: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        if used > 0:
            groups[name] = groups.get(name, 0.0) + used
    return dict(sorted(groups.items(), key=lambda item: -item[1]))
