"""Wall-clock times of paths that must stay quick, printed as one JSON object.

    python -m bench.quick_paths [--repeats 3]

These were time limits inside tests, where a loaded machine fails them and an idle one learns
nothing. Each path is timed ``--repeats`` times (best and median kept) next to its budget and a
reference measured in the same run, so the ratios read the same on any machine:

- ``toy_store``: ``write_toy_store`` of 10000 jets per class vs ``toy_dataset`` making the same
  jets in memory (``write_over_generate``: the cost of shuffling, chunking and writing the Zarr
  store); budget 2 s on an idle core (``best_over_budget``).
- ``lct_during_training``: ``evaluate_during_training`` (the per-epoch validation LCT) on 20000
  train + 20000 validation 64-dimensional representations vs a plain scikit-learn
  ``LogisticRegression`` fit and score of the same data (``quick_over_sklearn``); budget 10 s.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def timed(fn, repeats: int) -> dict:
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t)
    return {"best_s": round(min(seconds), 4), "median_s": round(statistics.median(seconds), 4)}


def toy_store(repeats: int) -> dict:
    from clrdist.data.toy import toy_dataset, write_toy_store

    budget = 2.0
    with tempfile.TemporaryDirectory() as d:
        runs = iter(range(repeats))
        write = timed(lambda: write_toy_store(Path(d) / f"toy{next(runs)}.zarr", n_per_class=10_000,
                                              seed=1), repeats)
    generate = timed(lambda: toy_dataset(10_000, seed=1), repeats)
    return {"jets": 20_000, "write": write, "generate_in_memory": generate, "budget_s": budget,
            "write_over_generate": round(write["best_s"] / generate["best_s"], 3),
            "best_over_budget": round(write["best_s"] / budget, 3)}


def lct_during_training(repeats: int) -> dict:
    from sklearn.linear_model import LogisticRegression

    from clrdist.eval.runner import evaluate_during_training

    budget = 10.0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40000, 64)).astype(np.float32)
    y = rng.integers(0, 2, 40000)
    x[y == 1, :4] += 0.5
    quick = timed(lambda: evaluate_during_training(x[:20000], y[:20000], x[20000:], y[20000:]),
                  repeats)
    sklearn = timed(lambda: LogisticRegression(max_iter=1000).fit(x[:20000], y[:20000])
                    .decision_function(x[20000:]), repeats)
    return {"samples": [20000, 20000], "dim": 64, "quick": quick, "sklearn_logistic": sklearn,
            "budget_s": budget, "quick_over_sklearn": round(quick["best_s"] / sklearn["best_s"], 3),
            "best_over_budget": round(quick["best_s"] / budget, 3)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    out = {"toy_store": toy_store(a.repeats), "lct_during_training": lct_during_training(a.repeats),
           "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
