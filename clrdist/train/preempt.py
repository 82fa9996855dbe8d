"""Preemption: a stop request the driver files and every training rank acts on together.

SLURM warns a job before its time limit (``sbatch --signal=B:USR1@N``) and stops or requeues it
with SIGTERM; ``slurm/ray_cluster.sh`` forwards both to the command. The driver answers the first
signal by filing a request: a file in the run's Ray storage folder, which every node sees. At
every logging step (``tracking.log_every``) each rank looks for it and the ranks agree through
one tiny all-gather (a request seen by any rank stops all of them at the same step); they write a
checkpoint with their stream positions and return. The driver then closes the MLflow run as
KILLED (reason: preempted) and exits with :data:`EXIT_PREEMPTED`; running the same command again
(same ``tracking.run_name``; a requeued job does) resumes from that checkpoint into the same run.

Ray Train has a preemption watcher of its own: an actor per worker group that polls Ray core for
node drains (an autoscaler reclaiming a node). ``clrdist.cluster.ensure_ray`` turns it off on a
local cluster, which has no drains to watch.
"""

from __future__ import annotations

import os
from pathlib import Path

REQUEST_FILE = "clrdist_stop_request"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped with a checkpoint; run the same command to resume


def request_path(run_dir: str | Path) -> str:
    """The request file of a Ray Train run folder (``checkpoint.storage_path/<ray run name>``)."""
    return str(Path(run_dir) / REQUEST_FILE)


def request(path: str, reason: str) -> None:
    """File a stop request (written under a temporary name, then renamed)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}")
    tmp.write_text(reason + "\n")
    tmp.replace(p)


def clear(path: str) -> None:
    """Withdraw a request (a resumed run must not stop on its predecessor's)."""
    Path(path).unlink(missing_ok=True)


def requested(path: str | None) -> bool:
    return bool(path) and os.path.exists(path)


def agree(local: bool, device) -> bool:
    """True on every rank if any rank saw a request (a collective: call it at the same steps)."""
    # lazy: clrdist.distributed loads torch (~1.5 s); the CLI imports this module (train.signals)
    from clrdist.distributed import any_rank

    return any_rank(local, device)
