"""Process-level settings: malloc thresholds for CPU training, and the driver's watchdog.

glibc's malloc serves blocks above a dynamic threshold (128 KiB at start) with mmap and hands them
back to the kernel when freed, and trims the heap top past another; a training step that allocates
and frees the same few hundred KiB (an augmented batch) can then fault every page of it in again on
every step. Which side of the threshold a block lands on depends on what the process freed before,
so the cost of the same call comes and goes with what ran before it (README, Performance).
``tune_malloc`` fixes both thresholds high, as PyTorch's CPU performance
guides suggest doing with jemalloc or tcmalloc; memory freed inside the process is reused instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

from clrdist.procs import proc_stat, process_start_time

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


# -- the driver's watchdog ----------------------------------------------------------------------
# SIGKILL cannot be caught, so a killed driver can neither close its MLflow run nor stop the local
# Ray cluster it started (Ray fate-shares its head processes with the driver, but the dashboard
# and runtime-env agents survive, ~230 MB). A small process, started before Ray, holds the read
# end of a pipe from the driver; when the driver is gone (for any reason) the pipe reports
# end-of-file and the watchdog kills what is left of that cluster and marks the still-open runs
# KILLED with the reason. It lives in its own session, so a Ctrl-C in the terminal leaves it be,
# and it is not the driver's child: a launcher forks it and exits at once, so the driver has no
# child process still running when its interpreter exits (Python warns about one) and keeps only
# the pipe's file descriptor, which the kernel closes however the driver ends.

_LAUNCH = ("import os, sys\n"
           "if os.fork() == 0:\n"
           "    os.execv(sys.executable, [sys.executable, '-c',\n"
           "             'import clrdist.runtime as r; r._watch(' + sys.argv[1] + ')'])\n")
_watchdog_fd: int | None = None  # the write end of the pipe to the watchdog


def _start_watchdog() -> int:
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCH, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    fd = os.dup(launcher.stdin.fileno())  # non-inheritable, like the pipe: Ray's children lack it
    launcher.stdin.close()
    launcher.wait()  # the launcher exits once it has forked the watchdog
    return fd


def _write(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _send(msg: dict) -> None:
    global _watchdog_fd
    line = (json.dumps(msg) + "\n").encode()
    if _watchdog_fd is None:
        _watchdog_fd = _start_watchdog()
    try:
        _write(_watchdog_fd, line)
    except OSError:  # the watchdog died (EPIPE): a new one gets this message
        os.close(_watchdog_fd)
        _watchdog_fd = _start_watchdog()
        _write(_watchdog_fd, line)


def watch_run(uri: str, run_id: str) -> None:
    """If this process dies before :func:`release_run`, the run is marked KILLED."""
    _send({"op": "run", "uri": uri, "run_id": run_id, "pid": os.getpid(),
           "host": socket.gethostname()})


def release_run(run_id: str) -> None:
    """The run was closed by this process (FINISHED / FAILED / KILLED)."""
    if _watchdog_fd is not None:
        _send({"op": "end", "run_id": run_id})


def watch_cluster(head_pids: list[int], session_dir: str | None) -> None:
    """The local Ray cluster this process started: killed (every process of it) if we die."""
    _send({"op": "cluster", "pids": [[p, process_start_time(p)] for p in head_pids],
           "session_dir": session_dir})


def child_pids(pid: int | None = None) -> set[int]:
    """Direct children of ``pid`` (default: this process), from /proc."""
    pid = os.getpid() if pid is None else pid
    return {p for p, (ppid, _) in _proc_table().items() if ppid == pid}


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks) for every process we can see (Linux)."""
    table = {}
    for d in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if d.isdigit() and (st := proc_stat(int(d))) is not None:
            table[int(d)] = st[1:]
    return table


def _running(pid: int, start: int) -> bool:
    """``pid`` is still the process that started at ``start`` and has not exited (zombie)."""
    st = proc_stat(pid)
    return st is not None and st[2] == start and st[0] not in ("Z", "X")


def cluster_processes(heads: list[tuple[int, int | None]], session_dir: str | None) -> set[int]:
    """Live processes of one local Ray cluster: the head processes (same pid and start time),
    their descendants, and anything holding a file in the cluster's session directory."""
    table = _proc_table()
    found = {p for p, t in heads if t is not None and table.get(p, (0, None))[1] == t}
    frontier = set(found)
    while frontier:
        frontier = {p for p, (pp, _) in table.items() if pp in frontier} - found
        found |= frontier
    if session_dir:
        session_dir = session_dir.rstrip("/") + "/"
        me = os.getpid()
        for p in table:
            if p in found or p == me:
                continue
            try:
                if any(os.readlink(f"/proc/{p}/fd/{fd}").startswith(session_dir)
                       for fd in os.listdir(f"/proc/{p}/fd")):
                    found.add(p)
            except OSError:
                continue
    return found


def _watch(driver: int) -> None:
    """The watchdog process of ``driver`` (a pid): read the driver's messages until end-of-file,
    then clean up."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    driver_start = process_start_time(driver)
    runs: dict[str, dict] = {}
    heads: list[tuple[int, int | None]] = []
    session_dir = None
    for line in sys.stdin:  # returns at end-of-file: the driver exited or was killed
        msg = json.loads(line)
        if msg["op"] == "run":
            runs[msg["run_id"]] = msg
        elif msg["op"] == "end":
            runs.pop(msg["run_id"], None)
        elif msg["op"] == "cluster":
            heads += [(p, t) for p, t in msg["pids"]]
            session_dir = msg["session_dir"] or session_dir
    # The pipe closes while the interpreter shuts down, before the process is gone: wait for it
    while driver_start is not None and _running(driver, driver_start):
        time.sleep(0.2)
    if heads:
        for p in cluster_processes(heads, session_dir) - {driver, os.getpid()}:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
    if runs:
        # lazy: mlflow (~2 s) only when the watchdog has runs to mark KILLED
        from clrdist import tracking

        for run_id, msg in runs.items():
            try:
                tracking.end_run(msg["uri"], run_id, "KILLED", stage="driver",
                                 reason=f"driver process {msg['pid']} on {msg['host']} ended "
                                        "without closing the run (SIGKILL or a crash)")
            except Exception:  # the store is gone too: nothing left to tell
                pass
