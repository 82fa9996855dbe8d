"""What the device check's stages share: the device's facts (``sync``, ``machine``, ``peaks``),
the configs at each size, toy batches and their copy to the device, the product's training step
(``Stepper``), its FLOP count and its timing. ``bench/gpu_check.py`` describes the check.

Imports of torch and the package stay inside the functions: ``bench.gpu_check`` unpacks its
wheels before anything needs them.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# dense peak TFLOP/s (bf16, tf32, fp32) by device name: the MFU denominators
PEAKS = {"H200": (989.0, 494.7, 66.9), "H100 PCIe": (756.0, 378.0, 51.2),
         "H100": (989.0, 494.7, 66.9), "A100": (312.0, 156.0, 19.5)}


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
