"""A store from a generation config: the plan's shards as Ray tasks, written in shard order.

The application's side of :mod:`clrdist.data.generation`, which does the work of one shard
(``events.generate_shard``) and writes the store (``output``) without Ray. Ray is started or
joined by :func:`clrdist.cluster.ensure_ray` (``RAY_ADDRESS``, as under ``ray job submit``,
joins that cluster). At most ``workers`` tasks run at once; finished shards are written in
task order, and the writer puts the samples in the random order ``sample_order(n, seed)``, so
the same config gives the same store whatever the number of workers. A failed shard fails the
whole command and nothing appears at the output path.

    from clrdist.generation_fanout import generate_store
    generate_store(["top", "qcd"], 100_000, "data/toptag.zarr", seed=1)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from clrdist.cluster import ensure_ray
from clrdist.data.generation.events import generate_shard
from clrdist.data.generation.output import append_shard, generated_store_writer
from clrdist.data.generation.plan import (
    GenerationConfig,
    GenerationError,
    Plan,
    ShardSpec,
    make_plan,
)


def generate_store(processes: list[str], n_jets: int, out, *, workers: int | None = None,
                   chunk_size: int = 4096, overwrite: bool = False, progress: bool = True,
                   stats: dict | None = None, **fields: Any) -> Path:
    """Generate ``n_jets`` samples per process into a new store at ``out``; returns its path.

    ``processes``, ``n_jets`` and ``fields`` (seed, jet, n_particles, detector, r_inv, ...) are
    the :class:`GenerationConfig`; an invalid one raises GenerationError naming the field before
    anything starts. workers: concurrent Ray tasks (default: the cluster's CPUs); a local Ray
    instance is started if none is running (and stopped afterwards). stats: if given, filled
    with per-shard timing statistics (for benchmarks).
    """
    config = GenerationConfig(processes=list(processes), n_jets=n_jets, **fields)
    return write_generated_store(config, out, workers=workers, chunk_size=chunk_size,
                                 overwrite=overwrite, progress=progress, stats=stats)


def write_generated_store(config: GenerationConfig, out, *, workers: int | None = None,
                          chunk_size: int = 4096, overwrite: bool = False, progress: bool = True,
                          stats: dict | None = None) -> Path:
    """:func:`generate_store` for a config already built."""
    plan = make_plan(config)
    out = Path(out)
    # the writer first: an existing output is refused before Ray starts
    with generated_store_writer(config, plan, out, chunk_size=chunk_size,
                                overwrite=overwrite) as writer:
        run_shards(plan, writer, workers=workers, progress=progress, stats=stats)
    return out


def run_shards(plan: Plan, writer, *, workers: int | None, progress: bool,
               stats: dict | None) -> None:
    """Run the plan's shards as Ray tasks, ``workers`` at a time (default: the cluster's CPUs),
    and append each finished shard to ``writer`` in shard order."""
    started_ray = ensure_ray(workers or 0, log_to_driver=False)
    try:
        window = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1, max_retries=0)(_remote_shard)
        _keep_window_full(task, plan, writer, window, progress, stats)
    finally:
        if started_ray:
            ray.shutdown()


def _keep_window_full(task, plan: Plan, writer, window: int, progress: bool, stats) -> None:
    """Keep ``window`` tasks in flight; write finished shards in task order."""
    shards = plan.shards
    unit = "jets" if plan.kind == "jet" else "events"
    bar = Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False,
    )
    pending: dict = {}  # ref -> shard index
    done: dict[int, dict] = {}
    next_submit = next_write = finished = 0
    # running tasks report accepted samples to a counter actor, so the bar moves within shards
    counter = ray.remote(num_cpus=0)(_Counter).remote() if progress else None
    t0 = time.perf_counter()
    try:
        with bar:
            tid = bar.add_task("generate", total=sum(s.n for s in shards))
            while next_write < len(shards):
                while next_submit < len(shards) and len(pending) < window:
                    pending[task.remote(shards[next_submit], counter)] = next_submit
                    next_submit += 1
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        done[i] = ray.get(ref)
                    except Exception as e:  # the task's own error, unwrapped where possible
                        raise _task_error(shards[i], i, e) from e
                    finished += shards[i].n
                if counter is not None:
                    bar.update(tid, completed=max(finished, ray.get(counter.total.remote())))
                while next_write in done:
                    append_shard(writer, plan, next_write, done.pop(next_write), stats)
                    next_write += 1
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
    if stats is not None:
        stats["wall"] = time.perf_counter() - t0
        stats["workers"] = window


def _remote_shard(spec: ShardSpec, counter=None) -> dict:
    """Body of the Ray task; ``counter`` is the progress actor (or None)."""
    on_accept = None if counter is None else (lambda k: counter.add.remote(k))
    return generate_shard(spec, on_accept)


class _Counter:
    """Ray actor summing the accepted samples reported by running tasks (progress bar)."""

    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> None:
        self.n += k

    def total(self) -> int:
        return self.n


def _task_error(spec: ShardSpec, i: int, exc: Exception) -> GenerationError:
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, GenerationError):
        return GenerationError(f"{cause} (shard {i}, Pythia seed {spec.seed})")
    text = str(cause).strip().splitlines()
    msg = text[-1] if text else type(cause).__name__
    return GenerationError(
        f"generation task for {spec.process!r} (shard {i}, Pythia seed {spec.seed}) failed: "
        f"{type(cause).__name__}: {msg}"
    )
