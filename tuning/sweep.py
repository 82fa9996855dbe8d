"""Run a Ray Tune sweep described by a YAML file (see clrdist/tune.py for the format).

    python tuning/sweep.py tuning/jetclr_temperature.yaml [--set data.train_store=...]
    python tuning/sweep.py tuning/jetclr_temperature.yaml --stores demo_out   # after make demo
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python tuning/sweep.py tuning/jetclr_temperature.yaml --storage-path $PWD/runs/tune \
        --stores $PWD/demo_out --set tracking.uri=sqlite:///$PWD/mlflow.db   (docs/cluster.md)

Under ``ray job submit`` the sweep runs in a temporary copy of the working directory without
git-ignored files: stores, the tracking store and Tune's storage need absolute paths (checked
before any trial starts, as is whether one trial's workers fit the cluster's CPUs).

The sweep is one MLflow parent run with one nested run per trial. Running the same command again
after the sweep was stopped (SIGUSR1 or SIGTERM: Tune saves its state and stops, exit status 75;
a killed driver; a requeued SLURM job) resumes it with Tuner.restore: finished trials are kept.
Prints one JSON line per trial (its parameters, last metrics and MLflow run), best first, then a
summary line.
"""

import argparse
import json
import sys
from pathlib import Path

from clrdist.data_cli import SPLIT_NAMES
from clrdist.errors import ClrdistError
from clrdist.tune import load_sweep, run_sweep

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped with its state saved; run again to resume


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="sweep YAML")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to every trial's config (repeatable)")
    ap.add_argument("--stores", default=None, metavar="DIR",
                    help="take the four stores from DIR (train, val, eval_train, eval_test .zarr, "
                         "as clrdist demo and clrdist data split write them); relative to where "
                         "the sweep runs")
    ap.add_argument("--storage-path", default=None,
                    help="Tune's storage folder (default: the sweep file's storage_path); an "
                         "absolute path on a shared file system under ray job submit")
    ap.add_argument("--no-resume", action="store_true",
                    help="start a new sweep even if storage_path/name holds a stopped one")
    args = ap.parse_args(argv)
    overrides = list(args.set)
    if args.stores:  # before --set, which may still change one of them
        # data.<name>_store = DIR/<name>.zarr for the four stores `clrdist data split` writes
        overrides[:0] = [f"data.{name}_store={Path(args.stores) / f'{name}.zarr'}"
                         for name in SPLIT_NAMES[4]]
    try:
        spec = load_sweep(args.sweep, overrides)  # every trial config validated before Ray starts
        if args.storage_path:
            spec.storage_path = args.storage_path
        # Tune stops gracefully on SIGUSR1 (SLURM's --signal=B:USR1@N warning); run_sweep turns
        # SIGTERM (scancel, `ray job stop`) into the same request.
        result = run_sweep(spec, resume=not args.no_resume)
    except ClrdistError as e:  # refused before any trial started
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    missing = float("-inf") if spec.mode == "max" else float("inf")
    rows = sorted(result.rows, key=lambda r: r.get(spec.metric, missing),
                  reverse=spec.mode == "max")
    for row in rows:
        print(json.dumps(row))
    print(json.dumps({"sweep": spec.name, "parent_run_id": result.parent_run_id,
                      "tracking_uri": result.tracking_uri, "resumed": result.resumed,
                      "interrupted": result.interrupted, "trials": len(rows),
                      "best_trial_id": (result.best or {}).get("trial_id")}))
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 0 if all(r["error"] is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
