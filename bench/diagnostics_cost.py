"""What the training diagnostics cost, as a share of the steps between two logging points.

    python -m bench.diagnostics_cost --out docs/results/diagnostics_cost.json

At DarkCLR size (configs/darkclr_svj.yaml: 128 wide, 512 feed-forward, 4 heads x 4 layers,
output 512; batch 256, 50 constituents) it times the loop's step (the views, forward, the loss,
backward, AdamW; DarkCLR's AnomalyCLR loss with its anomaly view) and ``clrdist.diagnostics.global_diagnostics`` with the loop's read of its
values, alternately in one process (the machine may be shared), medians over ``--repeats``.
The diagnostics run once per ``tracking.log_every`` steps (default 10), so their share is
diagnostics / (log_every x step); the target is <= 2%.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from bench.results import write_results
from clrdist.config import load_config
from clrdist.data.toy import toy_jets
from clrdist.diagnostics import global_diagnostics
from clrdist.factory import build_loss, build_model
from clrdist.physics.augment import build_view
from clrdist.train.inputs import view_inputs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "darkclr_svj.yaml"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--constituents", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out", default=None, help="results JSON (docs/results/diagnostics_cost.json)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_config(CONFIG, [f"data.n_particles={a.constituents}", "scaling.num_workers=1",
                               f"data.global_batch_size={a.batch}"])
    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr)
    loss_fn = build_loss(cfg.loss)
    views = [build_view(v, cfg.augment.strength, "torch") for v in cfg.augment.views]
    if cfg.augment.anomaly_view:  # DarkCLR: AnomalyCLR's third view, as the loop adds it
        views.append(build_view(cfg.augment.anomaly_view, cfg.augment.strength, "torch"))
    jets = [toy_jets(a.batch // 2, "top", seed=1, n_particles=a.constituents),
            toy_jets(a.batch - a.batch // 2, "qcd", seed=2, n_particles=a.constituents)]
    particles = np.concatenate([j["particles"] for j in jets])
    mask = np.concatenate([j["mask"] for j in jets])
    gen = torch.Generator().manual_seed(0)
    keep = {}

    def step():
        x, m = view_inputs(particles, mask, cfg, views, gen)
        rep, z = model(x, m)
        zs = z.chunk(len(views))
        loss = loss_fn(*zs)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        keep["zs"], keep["rep"] = [t.detach() for t in zs], rep.chunk(len(views))[0].detach()

    def diagnostics():
        diag = global_diagnostics(keep["zs"], keep["rep"])
        keep["diag"] = {k: float(v) for k, v in diag.items()}  # the loop's read, as it logs

    step()  # warm-up (allocations, kernels)
    diagnostics()
    steps, diags = [], []
    for _ in range(a.repeats):
        steps.append(timed(step))
        diags.append(timed(diagnostics))
    step_ms, diag_ms = 1e3 * statistics.median(steps), 1e3 * statistics.median(diags)
    share = diag_ms / (a.log_every * step_ms)
    size = (f"{cfg.model.model_dim}/{cfg.model.ff_dim}/{cfg.model.heads}x{cfg.model.layers}, "
            f"output {cfg.model.output_dim}, B={a.batch}, {a.constituents} constituents")
    rows = [{"name": "training step", "size": size, "ms": round(step_ms, 1)},
            {"name": "diagnostics (global_diagnostics + read)", "size": size,
             "ms": round(diag_ms, 2), "log_every": a.log_every,
             "share_of_steps_pct": round(100 * share, 3), "target_pct": 2.0}]
    numbers = {"threads": torch.get_num_threads(), "repeats": a.repeats, "rows": rows,
               "diagnostics": keep["diag"]}
    for r in rows:
        print(r)
    if a.out:
        write_results(a.out, numbers, argv)
    return numbers


if __name__ == "__main__":
    main()
