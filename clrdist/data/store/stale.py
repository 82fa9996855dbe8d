"""Temporary stores left by killed writers: each records its writer (host, pid, process start
time) and a later write to the same output removes the ones whose writer is gone."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from pathlib import Path

from clrdist.data.store.base import _OWNER_FILE, log
from clrdist.procs import process_start_time


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` as the owner record keeps it (a string), None if unknown."""
    start = process_start_time(pid)
    return None if start is None else str(start)


def _writer_alive(owner: dict) -> bool | None:
    """True / False: the writer process recorded in ``owner`` runs / is gone; None: cannot tell
    (another host, or no record)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = _proc_start(owner["pid"])
    return not (start is not None and owner.get("start") is not None and start != owner["start"])


def clean_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Remove ``<path>.tmp-*`` directories left by killed writers of ``path``; returns them.

    A temporary store records its writer (host, pid, process start time); it is removed when
    that process no longer runs on this host. Ones whose writer cannot be checked (another
    host, or written by an older clrdist) are left alone and named in a warning."""
    path = Path(path)
    removed: list[Path] = []
    if not path.parent.is_dir():
        return removed
    for tmp in sorted(path.parent.glob(f"{path.name}.tmp-*")):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            owner = json.loads((tmp / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            owner = {}
        alive = _writer_alive(owner)
        if alive is False:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
                removed.append(tmp)
                log.warning("removed %s: temporary store of a killed writer (pid %s)", tmp,
                            owner.get("pid"))
        elif alive is None:
            log.warning("%s: temporary store of a writer that cannot be checked (%s); if no "
                        "write to %s is running, remove it: rm -r %s", tmp,
                        f"host {owner['host']}" if owner.get("host") else "no writer record",
                        path, tmp)
    return removed
