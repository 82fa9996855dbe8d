"""Throughput of one contrastive training step, clrdist vs the naive JetCLR-style reference.

    python -m bench.train_step --model-dim 128 --ff-dim 512 --layers 4 --heads 4 --batch 256 \
        --constituents 50 --json

One step = two augmented views of B jets, forward, NT-Xent, backward, Adam step. Both sides
see the same synthetic jets (clrdist.data.toy, top + QCD, pT in GeV) and the same model sizes;
they are timed alternately in the same process (the machine may be shared and noisy) and the
median over repeats is reported. ``jets_per_s`` counts input jets (each yields two views);
``aug_jets_per_s`` is the same for the augmentation of both views alone (both sides: the two
augmented views, before pT scaling and concatenation, which belong to the step).
``--batch-sweep 256,1024,4096`` adds ``aug_sweep``: augmentation alone at those batch sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from bench import reference_jetclr as ref
from clrdist.config import AugmentSpec, LossConfig, ModelConfig
from clrdist.losses import build_loss
from clrdist.models import build_model
from clrdist.physics import kernel
from clrdist.physics.augment import apply_views, build_view, get_backend
from clrdist.physics.frame import scale_pt, to_model_frame
from clrdist.runtime import tune_malloc

PT_SCALE = 600.0


def jetclr_view(fill: float) -> list[AugmentSpec]:
    """The public code's order: collinear filling (twice), rotation, soft smearing, translation."""
    split = AugmentSpec(name="collinear_split", params={"fill": fill})
    return [split, split, AugmentSpec(name="rotate"), AugmentSpec(name="smear_soft"),
            AugmentSpec(name="translate")]


def synthetic_jets(n: int, n_particles: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Half top-like, half QCD-like toy jets in the model frame: (n, P, 3) [pT GeV, eta, phi]."""
    from clrdist.data.toy import toy_jets

    parts = [toy_jets(n // 2 + n % 2, "top", seed=seed, n_particles=n_particles),
             toy_jets(n // 2, "qcd", seed=seed + 1, n_particles=n_particles)]
    x = torch.as_tensor(np.concatenate([p["particles"] for p in parts]), dtype=torch.float32)
    m = torch.as_tensor(np.concatenate([p["mask"] for p in parts]), dtype=torch.bool)
    return to_model_frame(x, m), m


def bf16_supported() -> bool:
    flags = open("/proc/cpuinfo").read() if platform.system() == "Linux" else ""
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Ours:
    def __init__(self, a, device):
        cfg = ModelConfig(model_dim=a.model_dim, ff_dim=a.ff_dim, heads=a.heads, layers=a.layers,
                          dropout=0.1, log_pt_bias=True, pooling="pt_sum", norm_first=False,
                          head_dims=[a.model_dim], output_dim=a.model_dim, buckets=a.buckets)
        torch.manual_seed(0)
        self.model = build_model(cfg).to(device).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=5e-5)
        self.loss = build_loss(LossConfig(name="nt_xent", temperature=0.1))
        self.views = [build_view(jetclr_view(a.fill)), build_view(jetclr_view(a.fill))]
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.bf16 = a.bf16_used
        self.device = device

    def augment(self, x, mask):
        return apply_views(self.views, x, mask, self.gen)

    def step(self, x, mask):
        outs = self.augment(x, mask)
        xv = torch.cat([scale_pt(o[0], PT_SCALE) for o in outs])
        mv = torch.cat([o[1] for o in outs])
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            _, z = self.model(xv, mv)
        loss = self.loss(*z.float().chunk(2))["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


class Reference:
    def __init__(self, a):
        torch.manual_seed(0)
        self.model = ref.ReferenceTransformer(3, a.model_dim, a.ff_dim, a.heads, a.layers,
                                              (a.model_dim,), a.model_dim, 0.1).train()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=5e-5)
        self.rng = np.random.default_rng(0)
        self.fill = a.fill

    def augment(self, batch):
        return [ref.augment_view(batch, self.rng, self.fill) for _ in range(2)]

    def step(self, batch):
        v1, v2 = self.augment(batch)
        x = torch.from_numpy(np.concatenate([v1, v2])).float()
        x[:, 0] /= PT_SCALE
        _, z = self.model(x)
        loss = ref.contrastive_loss(*z.chunk(2), 0.1)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def model_flops_per_step(mult: torch.Tensor, a) -> float:
    """Useful model FLOPs of one step (forward + backward = 3 x forward) on the real constituents
    of both views: per token and layer 2 (4 d^2 + 2 d ff) for the projections and feed-forward,
    4 n d for attention scores and values (n = the sample's multiplicity); embedding and head ignored.
    """
    n = mult.double()
    d, ff = a.model_dim, a.ff_dim
    per_layer = n * 2 * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    return float(3 * 2 * a.layers * per_layer.sum())  # x2: two views


def aug_sweep(a, batches: list[int], device, sync) -> list[dict]:
    """Augmentation of both views alone, ours vs the reference, alternating, at several batch sizes."""
    rows = []
    for B in batches:
        x, mask = synthetic_jets(B, a.constituents)
        batch_np = np.ascontiguousarray(x.numpy().transpose(0, 2, 1)).astype(np.float64)
        xd, md = x.to(device), mask.to(device)
        ours, reference = Ours(a, device), Reference(a)

        def ours_aug(ours=ours, xd=xd, md=md):
            ours.augment(xd, md)
            sync()

        def ref_aug(reference=reference, batch_np=batch_np):
            reference.augment(batch_np)

        n = max(2, (a.aug_steps * 256) // B)
        ours_aug(), ref_aug()
        t, tr = [], []
        for _ in range(a.repeats):
            t.append(timed(ours_aug, n))
            tr.append(timed(ref_aug, max(1, n // 5)))
        med, med_r = statistics.median(t), statistics.median(tr)
        rows.append({"batch": B, "aug_jets_per_s": B / med, "ref_aug_jets_per_s": B / med_r,
                     "aug_speedup": med_r / med})
    return rows


def timed(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dim", type=int, default=128)
    p.add_argument("--ff-dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--constituents", type=int, default=50)
    p.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    p.add_argument("--aug-steps", type=int, default=10, help="timed augmentations per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fill", type=float, default=0.5,
                   help="collinear filling up to max(n, fill * P) slots, both sides (1: fill all)")
    p.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                   help="bf16 autocast for clrdist's model (auto: where the CPU has AVX512-BF16/AMX)")
    p.add_argument("--buckets", type=int, default=8, help="multiplicity buckets in the encoder")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for both sides (0: torch's default; 1 is steadiest on a shared CPU)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="device peak (e.g. 989 for H100 bf16 dense) to report model FLOP utilisation")
    p.add_argument("--batch-sweep", default="",
                   help="comma-separated batch sizes: also time the augmentation alone at each")
    p.add_argument("--no-tune-malloc", action="store_true",
                   help="leave glibc's malloc thresholds alone (clrdist.runtime; training workers set them)")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    a = p.parse_args(argv)
    malloc_tuned = False if a.no_tune_malloc else tune_malloc()  # both sides: one process
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    a.bf16_used = a.bf16 == "on" or (a.bf16 == "auto" and (device.type == "cuda" or bf16_supported()))

    x, mask = synthetic_jets(a.batch, a.constituents)
    batch_np = np.ascontiguousarray(x.numpy().transpose(0, 2, 1)).astype(np.float64)  # (B, 3, P)
    xd, md = x.to(device), mask.to(device)
    ours, reference = Ours(a, device), Reference(a)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def ours_aug():
        ours.augment(xd, md)
        sync()

    def ours_step():
        ours.step(xd, md)
        sync()

    for _ in range(2):  # warm-up (allocator, compile, oneDNN kernels)
        ours_step()
        reference.step(batch_np)
    res = {k: [] for k in ("aug", "ref_aug", "step", "ref_step")}
    for _ in range(a.repeats):  # alternate, so both see the same machine load
        res["aug"].append(timed(ours_aug, a.aug_steps))
        res["ref_aug"].append(timed(lambda: reference.augment(batch_np), max(1, a.aug_steps // 5)))
        res["step"].append(timed(ours_step, a.steps))
        res["ref_step"].append(timed(lambda: reference.step(batch_np), a.steps))
    med = {k: statistics.median(v) for k, v in res.items()}
    out = {
        "jets_per_s": a.batch / med["step"],
        "aug_jets_per_s": a.batch / med["aug"],
        "ref_jets_per_s": a.batch / med["ref_step"],
        "ref_aug_jets_per_s": a.batch / med["ref_aug"],
        "step_speedup": med["ref_step"] / med["step"],
        "aug_speedup": med["ref_aug"] / med["aug"],
        "batch": a.batch, "constituents": a.constituents, "model_dim": a.model_dim,
        "ff_dim": a.ff_dim, "layers": a.layers, "heads": a.heads, "device": str(device),
        "bf16": a.bf16_used, "buckets": a.buckets, "fill": a.fill,
        "threads": torch.get_num_threads(), "repeats": a.repeats, "malloc_tuned": malloc_tuned,
        "aug_backend": ("kernel" if device.type == "cpu" and get_backend() != "torch"
                        and kernel.available() else "torch"),
        "torch": torch.__version__,
    }
    if a.batch_sweep:
        out["aug_sweep"] = aug_sweep(a, [int(b) for b in a.batch_sweep.split(",")], device, sync)
    out["load_avg"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    flops = model_flops_per_step(mask.sum(1), a)
    out["model_tflops_per_s"] = flops / med["step"] / 1e12
    if a.peak_tflops:
        out["mfu"] = out["model_tflops_per_s"] / a.peak_tflops
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v:.4g}" if isinstance(v, float) else f"{k:>20}: {v}")
    return out


if __name__ == "__main__":
    main()
