"""The prepared device check: what the first lent GPU measures, in at most 8 minutes.

    python -m bench.gpu_check --out DIR [--budget 470] [--stages env,parity,...] [--device cuda]
    python -m bench.gpu_check --device cpu --quick --out DIR     # every stage, tiny, <= 2 min

Stages (each writes DIR/results.json when it ends; a stage that fails is recorded with its
traceback and the next one runs; a stage that would overrun the budget is skipped):

- ``env``: torch / CUDA versions, the device, the achievable matmul rate in bf16, TF32 and fp32.
- ``parity``: the same weights and the same augmented inputs on the CPU and the device: loss
  and gradients (fp32 and bf16) at DarkCLR size (128 / 512 / 4 x 4) and JetCLR size (1000 wide,
  4 x 4), small batch.
- ``throughput``: the product's training step (``clrdist.train.step.train_step``), jets/s and
  MFU (model FLOPs counted on the augmented multiplicities) for fp32 / TF32 / bf16, batch
  128 ... 4096, at the JetCLR and DarkCLR configurations (configs/*.yaml).
- ``loader``: the real stream -> device path (a Zarr store written here, ``ShardedStream``,
  pinned copies) against the step alone on a resident batch: ``ratio``.
- ``syncs``: host syncs per step on the device: ``torch.cuda.set_sync_debug_mode("warn")``'s
  warnings counted, and the dispatch counter ``clrdist.syncs.count_syncs``
  (``syncs_per_step``, top level).
- ``quality``: a short training (3 minutes on a GPU) on generated toy jets: validation LCT AUC
  against jets seen, next to the untrained encoder, the raw inputs and the supervised reference
  of ``clrdist eval`` trained on the device (``supervised_auc``, ``supervised_device``).
- ``nplm``: one NPLM kernel toy at reference 1e5, M = 1000 (timed), and a batch of toys.

No Ray, no MLflow: imports are lazy and limited to torch, numpy, scikit-learn and the package;
zarr, numcodecs, pydantic and PyYAML come from the wheels of ``bench/gpu_wheels.sh``
(bench/gpu_wheels/cpXY/*.whl, unpacked into a temporary folder on sys.path when they are not
importable). docs/gpu.md has the device command and the targets (issue 19 item 8).

The stages live in ``bench/gpu_check_stages.py``, the tools they share (the device's facts, the
configs, toy batches, the product's step as ``Stepper``) in ``bench/gpu_check_tools.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from bench.gpu_check_stages import (
    stage_env,
    stage_loader,
    stage_nplm,
    stage_parity,
    stage_quality,
    stage_syncs,
    stage_throughput,
)
from bench.gpu_check_tools import ROOT, machine

WHEELS = ROOT / "bench" / "gpu_wheels"
STAGES = ("env", "parity", "throughput", "loader", "syncs", "quality", "nplm")
# seconds of the default 470 s budget each stage may use (scaled with --budget)
SHARE = {"env": 20, "parity": 40, "throughput": 130, "loader": 40, "syncs": 20, "quality": 190,
         "nplm": 30}


def use_wheels(folder: Path = WHEELS) -> list[str]:
    """Unpack this interpreter's wheels from ``folder``/cpXY into a temporary directory and put
    it first on sys.path, for the packages that are not importable already. Returns the wheel
    names used."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted((folder / tag).glob("*.whl")) if (folder / tag).is_dir() else []
    missing = []
    for wheel in found:
        if wheel.name.startswith("typing_extensions-"):  # pydantic needs a recent one: always
            missing.append(wheel)
            continue
        module = {"pyyaml": "yaml", "google_crc32c": "google_crc32c"}.get(
            wheel.name.split("-")[0].lower(), wheel.name.split("-")[0].lower())
        try:
            __import__(module)
        except ImportError:
            missing.append(wheel)
    if not missing:
        return []
    target = Path(tempfile.mkdtemp(prefix="gpu_wheels_"))
    for wheel in missing:
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
    sys.path.insert(0, str(target))
    return [w.name for w in missing]


STAGE_FUNCS = {"env": stage_env, "parity": stage_parity, "throughput": stage_throughput,
               "loader": stage_loader, "syncs": stage_syncs, "quality": stage_quality,
               "nplm": stage_nplm}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder for results.json")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for all stages (default 470; 90 with --quick)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    p.add_argument("--device", default=None, help="cuda (default when there is one) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI on a CPU)")
    a = p.parse_args(argv)
    stages = [s for s in a.stages.split(",") if s]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        p.error(f"--stages: unknown {unknown}; known: {list(STAGES)}")
    a.budget = a.budget or (90.0 if a.quick else 470.0)
    a.wheels_used = use_wheels()
    import torch

    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if a.quick and dev.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"command": "python -m bench.gpu_check " + " ".join(argv if argv is not None
                                                                  else sys.argv[1:]),
               "machine": machine(dev), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "budget_s": a.budget, "quick": a.quick, "stages": {}, "syncs_per_step": None}
    t_start = time.perf_counter()
    scale = a.budget / sum(SHARE.values())
    for name in stages:
        left = a.budget - (time.perf_counter() - t_start)
        share = SHARE[name] * scale
        if left < min(share, 10.0) and not a.quick:
            results["stages"][name] = {"status": "skipped", "reason": f"{left:.0f} s left"}
        else:
            t0 = time.perf_counter()
            try:
                res = STAGE_FUNCS[name](a, dev, min(share, left))
                res = {"status": "ok", **res}
            except Exception as e:  # recorded; the next stage runs
                res = {"status": "error", "error": f"{type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-4000:]}
                if dev.type == "cuda":
                    with contextlib.suppress(Exception):
                        torch.cuda.empty_cache()
            res["seconds"] = round(time.perf_counter() - t0, 2)
            results["stages"][name] = res
            if name == "syncs" and res["status"] == "ok":
                results["syncs_per_step"] = res["syncs_per_step"]
        results["seconds"] = round(time.perf_counter() - t_start, 2)
        tmp = out_dir / "results.json.tmp"
        tmp.write_text(json.dumps(results, indent=1, default=str))
        tmp.replace(out_dir / "results.json")  # whole after every stage
        print(f"[gpu_check] {name}: {results['stages'][name]['status']} "
              f"({results['stages'][name].get('seconds', 0)} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
