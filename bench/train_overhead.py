"""What a short Ray Train run costs beyond its steps, and what Ray Train's report poll adds.

    python -m bench.train_overhead [--repeats 2]

Runs ``clrdist.train.trainer.train`` (the product's path: preflight, the MLflow run, Ray Train's
TorchTrainer with 2 DDP workers) on 1200 + 1200 toy jets, 2 epochs of 18 steps, a checkpoint
every 6 steps: the shape of the tests' training runs. Two settings alternate in one local
cluster, ``--repeats`` times each:

- ``ray_default_poll``: RAY_TRAIN_HEALTH_CHECK_INTERVAL_S exported as 2 (Ray Train's default);
- ``clrdist_poll``: nothing exported, so clrdist asks for 0.25 s
  (``clrdist.train.trainer.CONTROLLER_POLL_S``).

Ray Train's controller takes one report per poll, so a run that reports (checkpoints, epoch
metrics) more often than every poll waits for it. Printed: wall and machine CPU seconds per run
(median), the ratio ``clrdist_over_ray_default`` (wall), the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import load_avg_1m, machine  # noqa: E402

SETTINGS = {"ray_default_poll": "2", "clrdist_poll": None}  # the exported value, or none


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (user + system + ...), from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def overrides(stores: Path, out: Path, name: str) -> list[str]:
    return [f"data.train_store={stores / 'train.zarr'}", f"data.val_store={stores / 'val.zarr'}",
            f"data.eval_train_store={stores / 'eval_train.zarr'}",
            f"data.eval_test_store={stores / 'eval_test.zarr'}",
            "data.batch_size=32", "data.shuffle_buffer=512", "augment.slots=null",
            "model.model_dim=32", "model.ff_dim=64", "model.head_dims=[32]", "model.output_dim=16",
            "optim.epochs=2", "optim.warmup_steps=2", "tracking.log_every=2",
            "checkpoint.every_steps=6", "eval.every_epochs=null", "eval.lct=false",
            "eval.baselines=false", "eval.cwola=false", "eval.nplm=false",
            f"checkpoint.storage_path={out / 'ray'}", f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
            f"tracking.run_name={name}"]


def one_run(stores: Path, out: Path, name: str, exported: str | None) -> dict:
    from clrdist.config import load_config
    from clrdist.train.trainer import CONTROLLER_POLL_ENV, train

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml",
                      overrides(stores, out, name))
    if exported is None:
        os.environ.pop(CONTROLLER_POLL_ENV, None)
    else:
        os.environ[CONTROLLER_POLL_ENV] = exported
    try:
        t, c = time.perf_counter(), busy_cpu_s()
        train(cfg)
        return {"wall_s": time.perf_counter() - t, "cpu_s": busy_cpu_s() - c}
    finally:
        os.environ.pop(CONTROLLER_POLL_ENV, None)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)

    import ray

    from clrdist.cluster import start_local
    from clrdist.data.split import split_store
    from clrdist.data.store import open_store
    from clrdist.data.toy import write_toy_store

    load_start = load_avg_1m()
    runs: dict[str, list[dict]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        write_toy_store(root / "toy.zarr", n_per_class=1200, seed=3)
        split_store(root / "toy.zarr", {"train": 0.5, "val": 0.1, "eval_train": 0.2,
                                        "eval_test": 0.2}, out_dir=root, seed=3)
        steps = 2 * (open_store(root / "train.zarr").n // (32 * 2))  # 2 epochs, 2 workers x 32
        start_local(3, log_to_driver=False)
        try:
            # a first run warms the cluster's worker pool and the page cache; not counted
            one_run(root, root / "warm", "warm", None)
            for r in range(a.repeats):
                order = list(SETTINGS) if r % 2 == 0 else list(reversed(SETTINGS))
                for name in order:
                    runs[name].append(one_run(root, root / f"{name}{r}", f"{name}{r}",
                                              SETTINGS[name]))
        finally:
            ray.shutdown()
    med = {name: {k: round(statistics.median(x[k] for x in rs), 2) for k in ("wall_s", "cpu_s")}
           for name, rs in runs.items()}
    out = {"runs": {name: [{k: round(v, 2) for k, v in x.items()} for x in rs]
                    for name, rs in runs.items()},
           "median": med,
           "clrdist_over_ray_default": round(med["clrdist_poll"]["wall_s"]
                                             / med["ray_default_poll"]["wall_s"], 3),
           "steps_per_run": steps, "workers": 2,
           "machine": machine(), "load_avg_1m_start": load_start, "load_avg_1m_end": load_avg_1m()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
