"""Signals on the driver: SIGTERM / SIGHUP end a command with a message and exit 128 + signal at
every stage (preflight, Ray start, training, evaluation); SIGUSR1 asks the workers to checkpoint
and stop (:mod:`clrdist.train.preempt`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from clrdist.train import preempt

log = logging.getLogger("clrdist.train.trainer")


class RunInterrupted(BaseException):
    """SIGTERM / SIGHUP reached the driver (a scheduler's stop or preemption, a closed terminal).
    A BaseException, like KeyboardInterrupt, so that nothing swallows it on the way out."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class Preempted(RunInterrupted):
    """SIGUSR1 (SLURM's warning signal, forwarded by slurm/ray_cluster.sh) made the workers write
    a checkpoint and stop (clrdist.train.preempt); the run is KILLED and resumes when rerun."""

    exit_code = preempt.EXIT_PREEMPTED

    def __init__(self, step: int):
        super().__init__(signal.SIGUSR1)
        self.args = (f"SIGUSR1 (preempted: checkpoint at step {step})",)


_signals_received: list[int] = []  # SIGTERM / SIGHUP seen by signals_raise's handler


@contextlib.contextmanager
def signals_raise(stop_file: str | None = None):
    """SIGTERM and SIGHUP raise RunInterrupted in the main thread while training (SIGINT already
    raises KeyboardInterrupt); SIGUSR1 files a stop request (``stop_file``) that makes the workers
    checkpoint and stop (clrdist.train.preempt). Elsewhere (a Tune trial's thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        # Ray's blocking calls (ray.get in fit) turn only KeyboardInterrupt / SystemExit raised
        # by a handler into an interruption; anything else is lost there. train() turns it back.
        _signals_received.append(signum)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def request_stop(signum, frame):
        preempt.request(stop_file, "SIGUSR1")
        log.warning("SIGUSR1: asking the workers to checkpoint and stop at their next logging step")

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    if stop_file:
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, request_stop)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def install_command_handlers() -> None:
    """SIGTERM and SIGHUP raise :class:`RunInterrupted` in the main thread from now on (the CLI
    calls it first): a stop before any run or cluster exists ends with a message and exit 128 +
    signal, not Python's silent default. :func:`signals_raise` takes over while a run is held."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        raise RunInterrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def interruption(e: BaseException) -> BaseException | None:
    """The signal in ``e``: a RunInterrupted / KeyboardInterrupt in its chain of causes and
    contexts, or Ray's SIGTERM handler's SystemExit(15) (it is installed while ray.init runs),
    as a RunInterrupted; None if ``e`` is not a signal."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (RunInterrupted, KeyboardInterrupt)):
            if isinstance(e, KeyboardInterrupt) and _signals_received:
                return RunInterrupted(_signals_received[-1])
            return e
        if isinstance(e, SystemExit) and e.code == signal.SIGTERM:
            return RunInterrupted(signal.SIGTERM)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None
