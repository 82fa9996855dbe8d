"""Throughput of the training loop's step (``clrdist.train.step.train_step``) against the naive
JetCLR-style reference (``bench/reference_jetclr.py``), side by side in one process.

    python -m bench.train_step --out docs/results/train_step.json

One step = two augmented views of B jets (the public code's order: collinear filling twice,
rotation, soft smearing, translation), forward, NT-Xent (tau 0.1, float32), backward, clipping,
AdamW, the NaN guard: exactly what ``clrdist.train.loop`` runs, through the same function. The
reference is fp32 (its only mode). Ours runs at ``fp32`` and at the default ``auto`` policy
(``clrdist.precision``: bf16 autocast where the CPU has native bf16, on GPUs), so the printed
ratios compare like with like: ours fp32 / reference fp32, and ours default / reference default,
each row naming its precision. The sides alternate within every repeat (the machine may be
shared); medians are reported. ``jets_per_s`` counts input jets (each yields two views).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np
import torch

from bench import reference_jetclr as ref
from clrdist.config import load_config
from clrdist.factory import build_loss, build_views, initial_model
from clrdist.physics.augment import apply_views
from clrdist.physics.frame import to_model_frame
from clrdist.precision import resolve
from clrdist.runtime import tune_malloc
from clrdist.train.engine import LocalEngine, LossGuard
from clrdist.train.step import default_sync_free, prepare_model, seed_step, train_step

PT_SCALE = 600.0


def jetclr_view(fill: float) -> list[dict]:
    """The public code's order: collinear filling (twice), rotation, soft smearing, translation."""
    split = {"name": "collinear_split", "params": {"fill": fill}}
    return [split, split, {"name": "rotate"}, {"name": "smear_soft"}, {"name": "translate"}]


def store_jets(n: int, n_particles: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Half top-like, half QCD-like toy jets as a store batch (pT GeV, absolute eta, phi)."""
    from clrdist.data.toy import toy_jets

    parts = [toy_jets(n // 2 + n % 2, "top", seed=seed, n_particles=n_particles),
             toy_jets(n // 2, "qcd", seed=seed + 1, n_particles=n_particles)]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("particles", "mask", "label")}


def synthetic_jets(n: int, n_particles: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same toy jets in the model frame: (n, P, 3) [pT GeV, d_eta, d_phi], (n, P) bool."""
    b = store_jets(n, n_particles, seed)
    x = torch.as_tensor(b["particles"], dtype=torch.float32)
    m = torch.as_tensor(b["mask"], dtype=torch.bool)
    return to_model_frame(x, m), m


def run_config(a, precision: str):
    """The RunConfig the loop would run: the bench's sizes, JetCLR's views and loss."""
    views = json.dumps([jetclr_view(a.fill)] * 2).replace('"', "")
    return load_config(None, [
        f"model.model_dim={a.model_dim}", f"model.ff_dim={a.ff_dim}", f"model.heads={a.heads}",
        f"model.layers={a.layers}", "model.dropout=0.1", "model.log_pt_bias=true",
        "model.pooling=pt_sum", "model.norm_first=false", "model.input_features=pt",
        "model.input_dim=3", f"model.head_dims=[{a.model_dim}]", f"model.output_dim={a.model_dim}",
        f"model.buckets={a.buckets}", f"model.compile={str(a.compile).lower()}",
        f"data.n_particles={a.constituents}", f"data.batch_size={a.batch}",
        f"data.pt_scale={PT_SCALE}", "augment.slots=null", f"augment.views={views}",
        "loss.name=nt_xent", "loss.temperature=0.1", "optim.lr=5e-5",
        f"scaling.precision={precision}"])


class Ours:
    """The loop's step on one device: LocalEngine + train_step, views and precision as the loop
    sets them up."""

    def __init__(self, a, device: torch.device, precision: str):
        self.cfg = cfg = run_config(a, precision)
        self.precision = resolve(cfg.scaling.precision, device)
        sync_free = default_sync_free(device)
        model = prepare_model(initial_model(cfg.model, 0), sync_free=sync_free,
                              compile=cfg.model.compile)
        self.engine = LocalEngine(model, cfg, total_steps=10**6, device=device)
        self.engine.train()
        self.loss = build_loss(cfg.loss)
        self.views = build_views(cfg, fixed=sync_free)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.guard = LossGuard(device)
        self.device = device
        self.n = 0

    def step(self, batch) -> None:
        self.precision.apply_global()
        seed_step(self.gen, self.cfg.seed, 0, self.n)  # as the loop does before every step
        self.n += 1
        train_step(self.engine, self.loss, self.views, batch, self.gen, self.cfg, self.precision,
                   step=self.n, guard=self.guard, device=self.device)


class Reference:
    def __init__(self, a):
        torch.manual_seed(0)
        self.model = ref.ReferenceTransformer(3, a.model_dim, a.ff_dim, a.heads, a.layers,
                                              (a.model_dim,), a.model_dim, 0.1).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=5e-5)
        self.rng = np.random.default_rng(0)
        self.fill = a.fill

    def step(self, batch: np.ndarray) -> None:
        v1, v2 = (ref.augment_view(batch, self.rng, self.fill) for _ in range(2))
        x = torch.from_numpy(np.concatenate([v1, v2])).float()
        x[:, 0] /= PT_SCALE
        _, z = self.model(x)
        loss = ref.contrastive_loss(*z.chunk(2), 0.1)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()


def model_flops_per_step(mult: torch.Tensor, a) -> float:
    """Useful model FLOPs of one step (forward + backward = 3 x forward) on the real constituents
    of both views: per token and layer 2 (4 d^2 + 2 d ff) for the projections and feed-forward,
    4 n d for attention scores and values (n = the sample's multiplicity); embedding and head ignored.
    """
    n = mult.double()
    d, ff = a.model_dim, a.ff_dim
    per_layer = n * 2 * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    return float(3 * 2 * a.layers * per_layer.sum())  # x2: two views


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    if platform.system() == "Linux":
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dim", type=int, default=128)
    p.add_argument("--ff-dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--constituents", type=int, default=50)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat and side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fill", type=float, default=0.5,
                   help="collinear filling up to max(n, fill * P) slots, both sides (1: fill all)")
    p.add_argument("--buckets", type=int, default=8, help="model.buckets (multiplicity groups)")
    p.add_argument("--compile", action="store_true", help="model.compile: true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides (0: torch's default; 1 is steadiest on a shared CPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak (e.g. 989 for H100 bf16 dense) to report model FLOP utilisation")
    p.add_argument("--json", action="store_true", help="(accepted for old commands: the output is JSON)")
    p.add_argument("--out", default=None, help="write the JSON here too (docs/results/train_step.json)")
    a = p.parse_args(argv)
    tune_malloc()  # both sides: one process, the thresholds training workers use
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)

    batch = store_jets(a.batch, a.constituents)
    x, mask = synthetic_jets(a.batch, a.constituents)
    batch_np = np.ascontiguousarray(x.numpy().transpose(0, 2, 1)).astype(np.float64)  # (B, 3, P)
    dev_batch = {k: torch.as_tensor(v).to(device) for k, v in batch.items()}
    ours = {p: Ours(a, device, p) for p in ("fp32", "auto")}
    reference = Reference(a)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(side):
        if side == "reference":
            return lambda: reference.step(batch_np)

        def f():
            ours[side].step(dev_batch)
            sync()
        return f

    xd, md = x.to(device), mask.to(device)

    def aug_ours():  # the augmentation of both views alone (what the step's views cost)
        apply_views(ours["fp32"].views, xd, md, ours["fp32"].gen)
        sync()

    def aug_ref():
        for _ in range(2):
            ref.augment_view(batch_np, reference.rng, a.fill)

    for f in (aug_ours, aug_ref):
        f()
    aug = {"ours": [], "reference": []}
    for _ in range(a.repeats):
        aug["ours"].append(timed(aug_ours, 5 * a.steps))
        aug["reference"].append(timed(aug_ref, a.steps))
    aug_rate = {k: a.batch / statistics.median(v) for k, v in aug.items()}

    sides = ["fp32", "auto", "reference"]
    for side in sides:  # warm-up (allocator, oneDNN kernels, compile)
        for _ in range(2):
            run(side)()
    times: dict[str, list[float]] = {s: [] for s in sides}
    for _ in range(a.repeats):  # alternate, so every side sees the same machine load
        for side in sides:
            times[side].append(timed(run(side), a.steps))
    med = {s: statistics.median(v) for s, v in times.items()}
    rate = {s: a.batch / med[s] for s in sides}
    flops = model_flops_per_step(torch.as_tensor(batch["mask"]).sum(1), a)
    auto_name = ours["auto"].precision.name

    def row(name, side, precision):
        r = {"name": name, "precision": precision, "jets_per_s": round(rate[side], 1),
             "step_ms": round(1e3 * med[side], 2)}
        if side != "reference":
            r["model_tflops_per_s"] = round(flops / med[side] / 1e12, 4)
            if a.peak_tflops:
                r["mfu"] = round(r["model_tflops_per_s"] / a.peak_tflops, 4)
        return r

    out = {
        "command": "python -m bench.train_step " + " ".join(shlex.quote(s) for s in
                                                             (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "config": {"model_dim": a.model_dim, "ff_dim": a.ff_dim, "layers": a.layers,
                   "heads": a.heads, "batch": a.batch, "constituents": a.constituents,
                   "fill": a.fill, "buckets": a.buckets, "compile": a.compile,
                   "device": str(device), "threads": torch.get_num_threads(),
                   "steps": a.steps, "repeats": a.repeats,
                   "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "rows": [
            row("clrdist fp32", "fp32", "fp32"),
            row("clrdist default (precision auto)", "auto", auto_name),
            row("reference (bench/reference_jetclr.py)", "reference", "fp32"),
            {"name": "ratio: clrdist fp32 / reference fp32", "precision": "fp32 vs fp32",
             "ratio": round(rate["fp32"] / rate["reference"], 2)},
            {"name": "ratio: clrdist default / reference default",
             "precision": f"{auto_name} vs fp32",
             "ratio": round(rate["auto"] / rate["reference"], 2)},
            {"name": "augmentation of both views: clrdist / reference", "precision": "fp32",
             "jets_per_s": round(aug_rate["ours"]), "reference_jets_per_s": round(aug_rate["reference"]),
             "ratio": round(aug_rate["ours"] / aug_rate["reference"], 1),
             "backend": ours["fp32"].views[0].backend or "auto"},
        ],
    }
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    return out


if __name__ == "__main__":
    main()
