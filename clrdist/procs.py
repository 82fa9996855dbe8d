"""Processes as /proc shows them (Linux): state, parent and start time of a pid.

A base module (standard library only): the stores (``clrdist.data.store``: who owns a
temporary store) and the driver's watchdog and resumable runs (``clrdist.runtime``,
``clrdist.train.resume``) read processes through it.
"""

from __future__ import annotations


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks since boot) of ``pid`` from /proc/<pid>/stat
    (Linux), None if there is no such process or it cannot be read. The one /proc parser: the
    start time with the pid is an identity that survives pid reuse."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
        return rest[0], int(rest[1]), int(rest[19])
    except (OSError, IndexError, ValueError):
        return None


def process_start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot; None: no such process): with the pid, an
    identity that survives pid reuse."""
    st = proc_stat(pid)
    return st[2] if st else None
