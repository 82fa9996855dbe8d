"""What a sweep checks before any trial starts: that its trials will find their stores, write
their runs and Tune's state somewhere that outlives the job, and fit the cluster they joined."""

from __future__ import annotations

from pathlib import Path

from clrdist.config import ConfigError

TRIAL_CPUS = 0.01  # what a trial (it only drives Ray Train) reserves beside its workers


def in_job_copy(cwd: Path | None = None) -> bool:
    """The working directory is the temporary copy ``ray job submit --working-dir`` unpacks
    (under the session's runtime_resources): deleted with the job, without git-ignored files."""
    parts = (cwd or Path.cwd()).resolve().parts
    return "runtime_resources" in parts or any(p.startswith("_ray_pkg_") for p in parts)


def check_where_trials_run(spec, base) -> None:
    """Before any trial starts: every store of the trials' config resolves here (a relative one
    inside a ``ray job submit`` copy does not: git-ignored files are not uploaded), and neither
    the Tune storage nor a sqlite tracking store would live in that temporary copy. One line
    naming the key, the path and the fix."""
    # lazy: zarr (~0.3 s) only when the trials' stores are checked
    from clrdist.data.store import StoreError, open_store

    job = in_job_copy()
    where = (f"Ray's temporary copy of the working directory ({Path.cwd()}), which has no "
             "git-ignored files and is deleted with the job" if job else str(Path.cwd()))
    fix = "give absolute paths on a file system every node shares"
    d = base.data
    keys = ["train_store", "eval_train_store", "eval_test_store", "val_store"]
    for key in keys:
        path = getattr(d, key)
        if path is None:
            continue
        if job and not Path(path).is_absolute():
            raise ConfigError(f"data.{key}: {path} is relative and trials would read it in {where}; "
                              f"{fix}, e.g. --set data.{key}=/shared/.../{Path(path).name}")
        try:
            open_store(Path(path).resolve())  # what resolve_paths gives the trials
        except StoreError as e:
            raise ConfigError(f"data.{key}: {e} (where the trials run); {fix}") from None
    if job and not Path(spec.storage_path).is_absolute():
        raise ConfigError(f"storage_path: {spec.storage_path} is relative: Tune's state would live "
                          f"in {where}; {fix} (sweep.py --storage-path /shared/.../tune)")
    uri = base.tracking.uri
    if job and uri.startswith("sqlite:///") and not uri[len("sqlite:///"):].startswith("/"):
        raise ConfigError(f"tracking.uri: {uri} is relative: the runs would be written in {where}; "
                          f"{fix}, e.g. --set tracking.uri=sqlite:////shared/.../mlflow.db")


def check_trials_fit(base) -> None:
    """One trial's workers must fit the cluster it joined (Ray Train otherwise waits for them
    forever, retrying its worker group every minute)."""
    # lazy: ray (~0.3 s) only once the sweep has joined its cluster
    import ray

    have = float(ray.cluster_resources().get("CPU", 0.0))
    s = base.scaling
    need = s.num_workers * s.cpus_per_worker + TRIAL_CPUS
    if need > have + 1e-9:
        raise ConfigError(
            f"scaling: a trial needs {s.num_workers} workers x {s.cpus_per_worker:g} CPUs + "
            f"{TRIAL_CPUS:g} for the trial = {need:g} CPUs, the Ray cluster has {have:g}; start it "
            f"with more (ray start --head --num-cpus {int(need + 0.999)}) or --set "
            "scaling.num_workers=... / scaling.cpus_per_worker=...")
