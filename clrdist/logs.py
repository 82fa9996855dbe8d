"""Console and log file: clrdist's own lines on the console, everyone else's in a log file.

Inside :func:`quiet_console` the console shows what this process prints (rich output, progress
bars), records of the ``clrdist.*`` loggers, and the ``[clrdist] ...`` lines the training workers
print. Everything else goes to the log file: records of every other logger (Ray's
token-authentication notice and "Started a local Ray instance", MLflow's database notices),
Python warnings, and, once :meth:`ConsoleLog.follow_ray` has run, every line Ray streams from its
workers' stdout and stderr (Ray Train's "Reporting training result ...", errors Ray core logs in
its own actors, the FastJet banner Pythia's fjcore prints in each generation task). With
``verbose=True`` nothing is redirected.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

MARK = "[clrdist] "  # the prefix of the lines clrdist's Ray workers print for the console

# packages that give their loggers a console handler of their own when imported
NOISY_PACKAGES = ("ray", "mlflow")

_RAY_HANDLER = "ray_print_logs"  # the name Ray registers its worker-output printer under


def _is_clrdist(record: logging.LogRecord) -> bool:
    return record.name == "clrdist" or record.name.startswith("clrdist.")


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


class ConsoleLog:
    """The open log file of :func:`quiet_console` (``path`` is None with ``verbose``)."""

    def __init__(self, path: Path | None, console: TextIO, file: logging.FileHandler | None):
        self.path = path
        self._console = console
        self._file = file
        self._lock = threading.Lock()
        self._ray_printer = None  # Ray's own handler, put back on exit

    def follow_ray(self) -> None:
        """Send the output Ray streams from its workers to the log file, ``[clrdist] `` lines also
        to the console. Call it once Ray is initialised in this process; without
        ``log_to_driver`` nothing streams and this does nothing."""
        if self._file is None or self._ray_printer is not None:
            return
        try:
            # lazy: Ray's internals (~0.4 s) only once Ray runs in this process
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
        except ImportError:  # a Ray without the dispatcher: its output stays on the console
            return
        ray_printer = dict(dispatcher.handlers).get(_RAY_HANDLER)
        if ray_printer is None:
            return
        dispatcher.remove_handler(_RAY_HANDLER)
        dispatcher.add_handler(_RAY_HANDLER, self._worker_lines)
        self._ray_printer = ray_printer

    def _worker_lines(self, data: dict) -> None:
        """One batch of streamed lines: ``{"lines": [...], "pid": ..., "actor_name": ...}``."""
        lines = data.get("lines", [])
        if data.get("pid") == "autoscaler":  # its events, not its periodic status (as Ray does)
            lines = [line for line in lines if ":event_summary:" in line]
        who = data.get("actor_name") or data.get("task_name")
        prefix = f"({who + ' ' if who else ''}pid={data.get('pid')}) "
        ours = [line.split(MARK, 1)[1] for line in lines if MARK in line]
        with self._lock:
            self._write_file("".join(f"{prefix}{line}\n" for line in lines))
            if ours:
                self._console.write("".join(f"  {line}\n" for line in ours))
                self._console.flush()

    def _write_file(self, text: str) -> None:
        self._file.acquire()
        try:
            if self._file.stream is None or not text:  # closed: the block has ended
                return
            self._file.stream.write(text)
            self._file.flush()
        finally:
            self._file.release()

    def _stop_following_ray(self) -> None:
        if self._ray_printer is None:
            return
        # lazy: Ray's internals (~0.4 s) only once Ray runs in this process
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        # ray.shutdown removes the printer by name: put Ray's back only if ours is still there
        if any(h == self._worker_lines for _, h in dispatcher.handlers):
            dispatcher.remove_handler(_RAY_HANDLER)
            dispatcher.add_handler(_RAY_HANDLER, self._ray_printer)
        self._ray_printer = None


@contextlib.contextmanager
def quiet_console(log_file: str | Path, *, verbose: bool = False,
                  console: TextIO | None = None) -> Iterator[ConsoleLog]:
    """Within the block, other packages' log records and warnings go to ``log_file`` (written
    afresh) and clrdist's stay on ``console`` (default: sys.stdout for worker lines, the existing
    console handlers for log records). Everything is put back on exit."""
    console = console or sys.stdout
    if verbose:
        yield ConsoleLog(None, console, None)
        return
    for name in NOISY_PACKAGES:  # their handlers must exist now to be moved
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)

    path = Path(log_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(path, mode="w", encoding="utf-8")
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log = ConsoleLog(path, console, file)

    root = logging.getLogger()
    moved = []  # (logger, its handlers before, its console handlers, its propagate flag)
    for logger in list(logging.root.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger) and any(_is_console(h) for h in logger.handlers):
            mine = [h for h in logger.handlers if _is_console(h)]
            moved.append((logger, list(logger.handlers), mine, logger.propagate))
            for h in mine:
                logger.removeHandler(h)
            logger.propagate = True  # to the root logger, hence the file
    filtered = [h for h in root.handlers if _is_console(h)]
    added = None
    if not filtered:  # clrdist's warnings still need a console
        added = logging.StreamHandler(console)
        added.setLevel(logging.WARNING)
        added.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(added)
        filtered = [added]
    for h in filtered:
        h.addFilter(_is_clrdist)
    root.addHandler(file)
    captured = logging._warnings_showwarning is None  # type: ignore[attr-defined]
    if captured:
        logging.captureWarnings(True)  # warnings -> the py.warnings logger -> the file
    try:
        yield log
    finally:
        log._stop_following_ray()
        if captured:
            logging.captureWarnings(False)
        root.removeHandler(file)
        for h in filtered:
            h.removeFilter(_is_clrdist)
        if added is not None:
            root.removeHandler(added)
        for logger, before, mine, propagate in moved:
            # the console handlers back in their places; any handler added meanwhile stays, last
            now = logger.handlers
            logger.handlers = ([h for h in before if h in mine or h in now]
                               + [h for h in now if h not in before])
            logger.propagate = propagate
        file.close()
