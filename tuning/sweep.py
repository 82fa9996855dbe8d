"""Run a Ray Tune sweep described by a YAML file (see clrdist/tune.py for the format).

    python tuning/sweep.py tuning/jetclr_temperature.yaml [--set data.train_store=...]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python tuning/sweep.py tuning/jetclr_temperature.yaml

Prints one JSON line per trial (its parameters and last metrics), best first.
"""

import argparse
import json
import sys

from clrdist.errors import ClrdistError
from clrdist.tune import load_sweep, run_sweep


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="sweep YAML")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override applied to every trial's config (repeatable)")
    args = ap.parse_args(argv)
    try:
        spec = load_sweep(args.sweep, args.set)  # every trial config validated before Ray starts
    except ClrdistError as e:
        print(f"sweep: error: {e}", file=sys.stderr)
        return 2
    rows = run_sweep(spec)
    missing = float("-inf") if spec.mode == "max" else float("inf")
    rows.sort(key=lambda r: r.get(spec.metric, missing), reverse=spec.mode == "max")
    for row in rows:
        print(json.dumps(row))
    return 0 if all(r["error"] is None for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
