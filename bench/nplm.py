"""NPLM benchmark: kernel-model toys per minute at reference 1e5 / data 1e4. Prints one JSON object.

Each toy is what ``clrdist.eval.nplm.run_toys`` does per toy: draw a reference and a data sample,
build the whitened Nystrom features (M Gaussian-kernel centres), minimise the NPLM loss by Newton
iterations and compute t. Background is a D-dimensional Gaussian standing in for a representation
(D = 16 by default). For each M, a few toys are timed (wall clock and CPU seconds of this process)
and extrapolated to toys per minute; Newton iterations per toy are reported too, so the cost per
iteration (~ N_R M^2 flops for the Hessian) can be scaled to other M. Measured in the same run:
``cost_ratio`` = seconds per toy at each M relative to the smallest M.

    python bench/nplm.py [--n-ref 100000] [--n-data 10000] [--dim 16] [--M 250,1000]
                         [--toys 2] [--device cpu|cuda] [--float32]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clrdist.eval.nplm import kernel_width, nplm_t_kernel  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-ref", type=int, default=100_000)
    p.add_argument("--n-data", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--M", default="250,1000", help="comma-separated numbers of centres")
    p.add_argument("--toys", type=int, default=2, help="timed toys per M (after one warm-up)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--float32", action="store_true", help="float32 instead of float64")
    a = p.parse_args(argv)
    dtype = torch.float32 if a.float32 else torch.float64
    dev = torch.device(a.device)
    rng = np.random.default_rng(0)
    pool = torch.as_tensor(rng.normal(size=(a.n_ref + 2 * a.n_data, a.dim)), dtype=dtype,
                           device=dev)
    sigma = kernel_width(pool[: a.n_ref])
    results = []
    for m in [int(x) for x in a.M.split(",")]:
        times, cpu, iters, ts = [], [], [], []
        for i in range(a.toys + 1):
            perm = torch.as_tensor(rng.permutation(len(pool))[: a.n_ref + a.n_data], device=dev)
            ref, data = pool[perm[: a.n_ref]], pool[perm[a.n_ref:]]
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            fit = nplm_t_kernel(ref, data, M=m, sigma=sigma, seed=i, dtype=dtype)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            if i > 0:  # the first toy warms up allocators / BLAS
                times.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
                iters.append(fit.iterations)
                ts.append(fit.t)
        s = float(np.median(times))
        results.append({"M": m, "seconds_per_toy": s, "cpu_seconds_per_toy": float(np.median(cpu)),
                        "toys_per_minute": 60.0 / s, "newton_iterations": float(np.mean(iters)),
                        "t_null_example": float(ts[0])})
    base = results[0]["seconds_per_toy"]
    for r in results:
        r["cost_ratio"] = r["seconds_per_toy"] / base
    out = {"bench": "nplm_kernel", "n_ref": a.n_ref, "n_data": a.n_data, "dim": a.dim,
           "dtype": str(dtype).replace("torch.", ""), "device": str(dev),
           "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
           "sigma": sigma, "lambda": 1e-6, "timed_toys_per_M": a.toys, "by_M": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
