"""The device check's stages: each takes (args, dev, budget seconds) and returns a dict for
results.json. ``bench/gpu_check.py`` lists what each measures and runs them.

Imports of torch and the package stay inside the functions: ``bench.gpu_check`` unpacks its
wheels before anything needs them.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

from bench.gpu_check_tools import (
    Stepper,
    machine,
    model_flops,
    on_device,
    peaks,
    run_config,
    sizes,
    sync,
    time_steps,
    toy_batch,
)


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
    from clrdist.eval.baselines import raw_inputs, train_supervised
    from clrdist.eval.lct import linear_scores
    from clrdist.eval.metrics import roc_metrics
    from clrdist.factory import build_encoder, initial_model, supervised_parts

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
    # the supervised reference of clrdist eval, trained on the device (eval.device)
    t_sup = time.perf_counter()
    factory, prepare = supervised_parts(cfg)
    sup = train_supervised(tr, factory, device=str(dev), prepare=prepare,
                           max_epochs=3 if a.quick else 30)
    supervised = {"supervised_auc": roc_metrics(va["label"], sup.scores(va), "s")[0]["s_auc"],
                  "supervised_epochs": sup.info["epochs"],
                  "supervised_device": str(next(sup.model.parameters()).device),
                  "supervised_s": time.perf_counter() - t_sup}
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
            "untrained_auc_seeds": untrained, "raw_auc": raw, **supervised, "jets_seen": seen,
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
