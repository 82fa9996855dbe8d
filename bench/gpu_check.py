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
  against jets seen, next to the untrained encoder and the raw inputs.
- ``nplm``: one NPLM kernel toy at reference 1e5, M = 1000 (timed), and a batch of toys.

No Ray, no MLflow: imports are lazy and limited to torch, numpy, scikit-learn and the package;
zarr, numcodecs, pydantic and PyYAML come from the wheels of ``bench/gpu_wheels.sh``
(bench/gpu_wheels/cpXY/*.whl, unpacked into a temporary folder on sys.path when they are not
importable). docs/gpu.md has the device command and the targets (issue 19 item 8).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "bench" / "gpu_wheels"
STAGES = ("env", "parity", "throughput", "loader", "syncs", "quality", "nplm")
# seconds of the default 470 s budget each stage may use (scaled with --budget)
SHARE = {"env": 20, "parity": 40, "throughput": 130, "loader": 40, "syncs": 20, "quality": 190,
         "nplm": 30}
# dense peak TFLOP/s (bf16, tf32, fp32) by device name: the MFU denominators
PEAKS = {"H200": (989.0, 494.7, 66.9), "H100 PCIe": (756.0, 378.0, 51.2),
         "H100": (989.0, 494.7, 66.9), "A100": (312.0, 156.0, 19.5)}


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


# ---------------------------------------------------------------------------------------------
# helpers


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def machine(dev) -> dict:
    import torch

    out = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "torch": torch.__version__, "python": platform.python_version(), "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda)
    return out


def peaks(dev) -> tuple[float, float, float] | None:
    import torch

    if dev.type != "cuda":
        return None
    name = torch.cuda.get_device_name(dev)
    return next((v for k, v in PEAKS.items() if k in name), None)


def sizes(quick: bool) -> dict[str, list[str]]:
    """Config overrides per model size: DarkCLR and JetCLR as published, or tiny (--quick)."""
    if quick:
        tiny = ["model.model_dim=16", "model.ff_dim=32", "model.layers=1", "model.heads=2",
                "model.head_dims=[16]", "model.output_dim=16", "data.n_particles=16"]
        return {"darkclr": tiny, "jetclr": tiny}
    return {"darkclr": [], "jetclr": []}


def run_config(name: str, overrides: list[str], batch: int, precision: str | None = None):
    """configs/{jetclr_toptag,darkclr_svj}.yaml with the batch size (and precision) set."""
    from clrdist.config import RunConfig, load_config

    path = ROOT / "configs" / {"darkclr": "darkclr_svj.yaml", "jetclr": "jetclr_toptag.yaml"}[name]
    extra = [f"data.batch_size={batch}", "data.global_batch_size=null", "optim.epochs=1"]
    if precision is not None and "precision" in RunConfig.model_fields["scaling"].annotation.model_fields:
        extra.append(f"scaling.precision={precision}")
    return load_config(path, overrides=[*overrides, *extra])


def toy_batch(n: int, n_particles: int, seed: int = 0) -> dict:
    """Top + QCD toy jets (pT in GeV, absolute eta / phi) as store-like numpy arrays."""
    import numpy as np

    from clrdist.data.toy import toy_dataset

    d = toy_dataset(n, seed=seed, n_particles=n_particles)
    return {k: np.ascontiguousarray(v[:n]) for k, v in d.items()}


class Stepper:
    """The product's training step (``clrdist.train.step.train_step`` with ``LocalEngine``)
    on one device; until that module exists, the same stages written out here
    (``source`` says which ran)."""

    def __init__(self, cfg, dev, precision: str, *, seed: int = 0, sync_free: bool | None = None):
        import torch

        from clrdist.factory import build_loss, initial_model

        self.cfg, self.dev, self.n = cfg, dev, 0
        self.gen = torch.Generator(device=dev).manual_seed(seed)
        model = initial_model(cfg.model, seed)
        self.loss_fn = build_loss(cfg.loss).to(dev)
        try:
            from clrdist import precision as prec
            from clrdist.factory import build_views
            from clrdist.train import step as product
            from clrdist.train.engine import LocalEngine, LossGuard

            self.source = "clrdist.train.step"
            self.precision = prec.resolve({"tf32": "fp32"}.get(precision, precision), dev)
            sync_free = product.default_sync_free(dev) if sync_free is None else sync_free
            self.views = build_views(cfg, fixed=sync_free)
            model = product.prepare_model(model, sync_free=sync_free)
            # fused AdamW (CUDA's default) keeps its step counts on the device
            self.engine = LocalEngine(model, cfg, total_steps=10**6, device=dev,
                                      fused=True if sync_free else None)
            self.guard = LossGuard(dev)  # the loop's NaN guard, part of the step
            self.model = self.engine.module
            self._product = product
        except ImportError:
            from clrdist.physics.augment import build_view

            self.source = "bench.gpu_check (clrdist.train.step not available)"
            a = cfg.augment
            specs = [*a.views] + ([a.anomaly_view] if a.anomaly_view else [])
            self.views = [build_view(v, a.strength) for v in specs]
            self.model = model.to(dev).train()
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr)
            self.autocast = torch.bfloat16 if precision == "bf16" else None
            self._product = None
        torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")
        torch.backends.cudnn.allow_tf32 = precision in ("tf32", "bf16")

    def __call__(self, batch: dict):
        import torch

        if self._product is not None:
            self._product.seed_step(self.gen, self.cfg.seed, 0, self.n)  # as the loop does
            self.n += 1
            return self._product.train_step(self.engine, self.loss_fn, self.views, batch,
                                            self.gen, self.cfg, self.precision, step=self.n,
                                            guard=self.guard, device=self.dev)
        from clrdist.train.inputs import view_inputs

        self.n += 1
        x, m = view_inputs(batch["particles"], batch["mask"], self.cfg, self.views, self.gen,
                           device=self.dev)
        with torch.autocast(self.dev.type, dtype=self.autocast or torch.float32,
                            enabled=self.autocast is not None):
            _, z = self.model(x, m)
        terms = self.loss_fn(*z.float().chunk(len(self.views)))
        self.opt.zero_grad(set_to_none=True)
        terms["loss"].backward()
        self.opt.step()
        return terms

    def multiplicity(self, batch: dict) -> object:
        """The augmented views' multiplicities (V B,) of one batch (for the FLOP count)."""
        import torch

        from clrdist.train.inputs import view_inputs

        g = torch.Generator(device=self.dev).manual_seed(1)
        _, m = view_inputs(batch["particles"], batch["mask"], self.cfg, self.views, g,
                           device=self.dev)
        return m.sum(1)


def model_flops(mult, cfg) -> float:
    """Forward + backward (3 x forward) FLOPs of the encoder on the real constituents of all
    views: per token and layer 2 (4 d^2 + 2 d ff), attention 4 n d per token."""
    n = mult.double()
    d, ff, layers = cfg.model.model_dim, cfg.model.ff_dim, cfg.model.layers
    per_layer = n * 2 * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    return float(3 * layers * per_layer.sum())


def on_device(batch: dict, dev) -> dict:
    import torch

    out = {}
    for k, v in batch.items():
        t = torch.from_numpy(v)
        if dev.type == "cuda":
            t = t.pin_memory()
        out[k] = t.to(dev, non_blocking=True)
    return out


def time_steps(step, batch, dev, *, warmup: int, max_steps: int, max_s: float) -> dict:
    for _ in range(warmup):
        step(batch)
    sync(dev)
    t0, n = time.perf_counter(), 0
    while n < max_steps and (n == 0 or time.perf_counter() - t0 < max_s):
        step(batch)
        n += 1
        if n % 4 == 0:
            sync(dev)
    sync(dev)
    dt = (time.perf_counter() - t0) / n
    return {"steps": n, "seconds_per_step": dt}


# ---------------------------------------------------------------------------------------------
# stages: each takes (args, dev, budget seconds) and returns a dict


def stage_env(a, dev, budget):
    import torch

    out = {"machine": machine(dev), "cuda_available": torch.cuda.is_available(),
           "wheels_used": a.wheels_used}
    n = 256 if a.quick else 8192
    rates = {}
    for name, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True),
                              ("fp32", torch.float32, False)):
        if dev.type == "cpu" and name == "tf32":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        x = torch.randn(n, n, device=dev, dtype=dtype)
        y = torch.randn(n, n, device=dev, dtype=dtype)
        x @ y
        sync(dev)
        t0, reps = time.perf_counter(), 0
        while reps < 3 or (time.perf_counter() - t0 < min(2.0, budget / 6) and reps < 200):
            x @ y
            reps += 1
            if reps % 10 == 0:
                sync(dev)
        sync(dev)
        rates[f"matmul_{name}_tflops"] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = False
    out.update(rates, matmul_n=n, peak_tflops_bf16_tf32_fp32=peaks(dev))
    return out


def stage_parity(a, dev, budget):
    """CPU vs device: loss and every gradient of one forward + backward (dropout off, the same
    augmented inputs); rel_grad = max over parameters of |g_dev - g_cpu| / |g_cpu|."""
    import copy

    import torch

    from clrdist.factory import build_loss, initial_model
    from clrdist.train.inputs import view_inputs

    rows = []
    B = 8 if a.quick else 32
    for size, over in sizes(a.quick).items():
        cfg = run_config(size, [*over, "model.dropout=0.0"], B)
        batch = toy_batch(B, cfg.data.n_particles)
        from clrdist.physics.augment import build_view

        specs = [*cfg.augment.views] + ([cfg.augment.anomaly_view] if cfg.augment.anomaly_view else [])
        views = [build_view(v, cfg.augment.strength) for v in specs]
        x, m = view_inputs(batch["particles"], batch["mask"], cfg, views,
                           torch.Generator().manual_seed(0))
        base = initial_model(cfg.model, 0).train()
        loss_fn = build_loss(cfg.loss)
        for precision in ("fp32", "bf16"):
            res = {}
            for where in ("cpu", dev.type):
                d = torch.device("cpu") if where == "cpu" else dev
                model = copy.deepcopy(base).to(d)
                ac = torch.bfloat16 if precision == "bf16" else None
                with torch.autocast(d.type, dtype=ac or torch.float32, enabled=ac is not None):
                    _, z = model(x.to(d), m.to(d))
                loss = loss_fn.to(d)(*z.float().chunk(len(views)))["loss"]
                loss.backward()
                res[where] = (float(loss.detach()), {k: p.grad.detach().cpu().double()
                                            for k, p in model.named_parameters()
                                            if p.grad is not None})
            (l0, g0), (l1, g1) = res["cpu"], res[dev.type]
            rel = max(float((g1[k] - g0[k]).norm() / g0[k].norm().clamp_min(1e-30)) for k in g0)
            rows.append({"name": f"{size}_{precision}", "size": size, "precision": precision,
                         "batch": B, "loss_cpu": l0, "loss_device": l1,
                         "loss_rel_diff": abs(l1 - l0) / max(abs(l0), 1e-30),
                         "max_rel_grad_diff": rel})
    return {"rows": rows}


def stage_throughput(a, dev, budget):
    import torch

    batches = [16] if a.quick else [128, 512, 1024, 2048, 4096]
    precisions = ["fp32", "bf16"] if dev.type == "cpu" else ["bf16", "tf32", "fp32"]
    pk = peaks(dev)
    rows, t_end = [], time.perf_counter() + (float("inf") if a.quick else budget)
    grid = [(size, precision, B) for precision in precisions  # bf16 first: the targets
            for size in ("jetclr", "darkclr") for B in batches]
    for size, precision, B in grid:
        over = sizes(a.quick)[size]
        if time.perf_counter() > t_end:
            rows.append({"name": f"{size}_{precision}_{B}", "skipped": "budget"})
            continue
        row = {"name": f"{size}_{precision}_{B}", "size": size, "precision": precision,
               "batch": B}
        try:
            cfg = run_config(size, over, B, precision if precision != "tf32" else "fp32")
            step = Stepper(cfg, dev, precision)
            batch = on_device(toy_batch(B, cfg.data.n_particles), dev)
            t = time_steps(step, batch, dev, warmup=1 if a.quick else 2,
                           max_steps=3 if a.quick else 20, max_s=2.0)
            flops = model_flops(step.multiplicity(batch), cfg)
            row.update(t, jets_per_s=B / t["seconds_per_step"],
                       model_tflops_per_s=flops / t["seconds_per_step"] / 1e12,
                       gflop_per_jet=flops / B / 1e9, step_source=step.source)
            if pk:
                peak = pk[{"bf16": 0, "tf32": 1, "fp32": 2}[precision]]
                row["mfu"] = row["model_tflops_per_s"] / peak
        except Exception as e:  # out of memory at a large batch, ...: the next runs
            row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        finally:
            step = batch = None
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
    return {"rows": rows}


def stage_loader(a, dev, budget):
    """Stream -> device -> step against the step alone on one resident batch."""

    from clrdist.data.store import open_store
    from clrdist.data.stream import ShardedStream

    B = 32 if a.quick else 256
    cfg = run_config("darkclr", sizes(a.quick)["darkclr"], B, "bf16")
    n_jets = B * (8 if a.quick else 100)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_store_"))
    from clrdist.data.toy import write_toy_store

    store_path = write_toy_store(tmp / "jets.zarr", n_per_class=n_jets // 2, seed=3,
                                 n_particles=cfg.data.n_particles)
    store = open_store(store_path)
    step = Stepper(cfg, dev, "bf16")
    resident = on_device(toy_batch(B, cfg.data.n_particles), dev)
    alone = time_steps(step, resident, dev, warmup=2, max_steps=10**6,
                       max_s=min(5.0, budget / 4))
    stream = ShardedStream(store, batch_size=B, seed=0, num_threads=2)
    stream.set_epoch(0)
    try:  # the training loop's path: pinned copies one batch ahead
        from clrdist.data.prefetch import DevicePrefetcher

        batches, path = DevicePrefetcher(dev)(stream), "DevicePrefetcher"
    except ImportError:
        batches = (on_device({k: b[k] for k in ("particles", "mask", "label")}, dev)
                   for b in stream)
        path = "bench.gpu_check.on_device"
    sync(dev)
    t0, n = time.perf_counter(), 0
    for batch in batches:
        step(batch)
        n += 1
        if time.perf_counter() - t0 > budget / 2:
            break
    sync(dev)
    streamed = (time.perf_counter() - t0) / max(n, 1)
    return {"batch": B, "steps_streamed": n, "device_path": path, "step_alone_s": alone["seconds_per_step"],
            "stream_step_s": streamed, "ratio": alone["seconds_per_step"] / streamed,
            "jets_per_s_alone": B / alone["seconds_per_step"], "jets_per_s_streamed": B / streamed}


def stage_syncs(a, dev, budget):
    import torch

    from clrdist.syncs import count_syncs

    B = 16 if a.quick else 256
    out = {}
    for size in ("darkclr", "jetclr"):
        cfg = run_config(size, sizes(a.quick)[size], B, "bf16")
        step = Stepper(cfg, dev, "bf16", sync_free=True)  # the GPU settings, on any device
        batch = on_device(toy_batch(B, cfg.data.n_particles), dev)
        step(batch)  # warm-up: lazy initialisation may read once
        with count_syncs() as c:
            step(batch)
        row = {"dispatch_syncs_per_step": c.count, "dispatch_ops": c.summary(),
               "step_source": step.source}
        if dev.type == "cuda":
            sync(dev)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    for _ in range(3):
                        step(batch)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            msgs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
            row["cuda_syncs_per_step"] = len(msgs) / 3
            row["cuda_sync_examples"] = sorted(set(m.splitlines()[0] for m in msgs))[:10]
        out[size] = row
    key = "cuda_syncs_per_step" if dev.type == "cuda" else "dispatch_syncs_per_step"
    out["syncs_per_step"] = max(out[s][key] for s in ("darkclr", "jetclr"))
    return out


def stage_quality(a, dev, budget):
    """Train the demo-sized encoder on toy jets for the budget; validation LCT AUC (linear
    classifier on eval-train representations, scored on validation) against jets seen, next
    to the untrained encoder and the raw inputs."""
    import numpy as np

    from clrdist.config import LossConfig
    from clrdist.eval.baselines import raw_inputs
    from clrdist.eval.lct import linear_scores
    from clrdist.eval.metrics import roc_metrics
    from clrdist.factory import build_encoder, initial_model

    cfg = run_config("darkclr", sizes(a.quick)["darkclr"], 32 if a.quick else 256, "bf16")
    cfg = cfg.model_copy(update={"loss": LossConfig(**{**cfg.loss.model_dump(), "name": "nt_xent"}),
                                 "augment": cfg.augment.model_copy(update={"anomaly_view": None})})
    n_eval = 200 if a.quick else 10000
    tr, va = toy_batch(n_eval, cfg.data.n_particles, 7), toy_batch(n_eval, cfg.data.n_particles, 8)

    def lct(encode) -> float:
        r_tr, r_va = encode(tr), encode(va)
        s = linear_scores(r_tr, tr["label"], r_va, seed=0)
        return roc_metrics(va["label"], s, "lct")[0]["lct_auc"]

    raw = roc_metrics(va["label"], linear_scores(raw_inputs(tr, "jet"), tr["label"],
                                                 raw_inputs(va, "jet"), seed=0), "raw")[0]["raw_auc"]
    untrained = [lct(build_encoder(initial_model(cfg.model, s), cfg, device=dev))
                 for s in range(3 if a.quick else 5)]
    step = Stepper(cfg, dev, "bf16")
    B = cfg.data.batch_size
    n_batches = 16 if a.quick else 200  # 51200 training jets on a GPU, resident there
    pool = on_device(toy_batch(B * n_batches, cfg.data.n_particles, 9), dev)
    train_s = budget * (0.7 if a.quick else 0.6)  # the rest: the LCTs and their references
    curve, seen, t0 = [], 0, time.perf_counter()

    evaluating = [0.0]  # seconds spent on the LCTs: not training time

    def trained_s() -> float:
        return time.perf_counter() - t0 - evaluating[0]

    def point() -> dict:
        t = time.perf_counter()
        row = {"jets_seen": seen, "train_seconds": trained_s(),
               "val_lct_auc": lct(build_encoder(step.model, cfg, device=dev))}
        step.model.train()
        evaluating[0] += time.perf_counter() - t
        return row

    checkpoints = np.linspace(0, train_s, 6)[1:]
    i = 0
    while trained_s() < train_s:
        s = (i % n_batches) * B
        step({k: v[s:s + B] for k, v in pool.items()})
        seen += B
        i += 1
        if len(curve) < len(checkpoints) - 1 and trained_s() >= checkpoints[len(curve)]:
            curve.append(point())
    curve.append(point())  # the end of training
    return {"rows": curve, "untrained_auc_mean": float(np.mean(untrained)),
            "untrained_auc_seeds": untrained, "raw_auc": raw, "jets_seen": seen,
            "final_val_lct_auc": curve[-1]["val_lct_auc"] if curve else None}


def stage_nplm(a, dev, budget):
    import numpy as np
    import torch

    from clrdist.eval.nplm import kernel_width, nplm_t_kernel, run_toys

    n_ref, n_data, M, D = (2000, 200, 100, 8) if a.quick else (100_000, 10_000, 1000, 16)
    rng = np.random.default_rng(0)
    pool = torch.as_tensor(rng.normal(size=(n_ref + 2 * n_data, D)), dtype=torch.float64,
                           device=dev)
    sigma = kernel_width(pool[:n_ref])
    out = {"n_ref": n_ref, "n_data": n_data, "M": M, "dim": D}
    for i in range(2):  # the first warms up
        sync(dev)
        t0 = time.perf_counter()
        fit = nplm_t_kernel(pool[:n_ref], pool[n_ref:n_ref + n_data], M=M, sigma=sigma, seed=i)
        sync(dev)
        out.update(seconds_per_toy=time.perf_counter() - t0, t=fit.t,
                   iterations=fit.iterations, converged=fit.converged)
    bkg = rng.normal(size=(20000, D))
    t0 = time.perf_counter()
    n_r, n_d, m, n = (1000, 200, 50, 4) if a.quick else (5000, 1000, 200, 64)
    ts = run_toys(bkg, None, n_ref=n_r, n_data=n_d, n_toys=n, M=m, device=dev)
    sync(dev)
    out.update(batched_toys=len(ts), batched_seconds=time.perf_counter() - t0,
               batched_setting=f"N_R {n_r}, N_D {n_d}, M {m}")
    return out


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
