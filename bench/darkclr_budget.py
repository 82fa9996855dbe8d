"""DarkCLR's label-free anomaly score against training compute: is the small gain over the untrained
encoder a matter of compute, or a flaw? (issue 20, item 4)

    python -m bench.darkclr_budget --train data/darkclr_budget/qcd_train.zarr \
        --eval data/darkclr_budget/svj_eval.zarr --budgets 100,200,400,800 \
        --out docs/results/darkclr_budget.json

Trains the CPU recipe (``configs/darkclr_svj_cpu.yaml``: AnomalyCLR loss, two physical views and
the drop-30% anomaly view, transformer 64 wide) in this process, without Ray, through the loop's
own pieces: ``initial_model``, ``LocalEngine``, ``build_loss``, ``build_views`` and
``clrdist.train.step.train_step``. One run, the schedule sized for the largest budget; at each
budget (steps reached) the model is scored on the evaluation store (semi-visible vs QCD jets) by
|z| on the representation (what ``clrdist eval --anomaly`` scores) and, as the one cause tried, by
|h| on the projection-head output the loss actually sees. The same rows for the same architecture
untrained over ``--init-seeds`` seeds (mean +- std), and raw-input references on the same jets
(jet mass, constituent multiplicity). The ceiling of this sample: the same encoder trained with
the evaluation store's signal / background labels (``--supervised``, on by default), cross-fitted
in two halves so that every jet is scored by the model that did not see it (early stopping on a
fifth of each half). Metrics: AUC and 1/eps_B at eps_S = 0.2 (DarkCLR's working point).
CPU-seconds are this process's (``time.process_time``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import torch

from bench.results import write_results
from clrdist.config import load_config
from clrdist.data.store import open_store
from clrdist.eval.baselines import train_supervised
from clrdist.eval.metrics import binary_labels, eps_tag, roc_metrics
from clrdist.eval.mimic import jet_mass_pt
from clrdist.factory import (
    build_loss,
    build_views,
    initial_model,
    input_transform,
    supervised_parts,
)
from clrdist.models.encode import model_inputs
from clrdist.precision import resolve
from clrdist.train.engine import LocalEngine, LossGuard
from clrdist.train.step import prepare_model, seed_step, train_step

CONFIG = "configs/darkclr_svj_cpu.yaml"
PUBLISHED = {"auc": 0.76, "inv_eps_b_at_0.2": 73.0}  # DarkCLR, 100k jets, 150 epochs


def score_metrics(labels: np.ndarray, score: np.ndarray, eps_s: Sequence[float] = (0.2,)
                  ) -> dict[str, float]:
    """AUC and 1/eps_B at each ``eps_s`` of ``score`` (higher = more anomalous) against store
    labels (0 background, >= 1 signal, -1 dropped): {"auc", "inv_eps_b_at_0.2", ...}."""
    keep, y = binary_labels(labels)
    m, _ = roc_metrics(y, np.asarray(score, np.float64)[keep], "s", eps_s=tuple(eps_s))
    return {"auc": m["s_auc"], **{f"inv_eps_b_at_{eps_tag(e)}": m[f"s_inv_eps_b_at_{eps_tag(e)}"]
                                   for e in eps_s}}


def eval_inputs(cfg, ev: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The model inputs (x, mask) of a store dict: its first ``data.n_particles`` constituents
    through the run's input transform."""
    n = cfg.data.n_particles
    return model_inputs(torch.as_tensor(ev["particles"][:, :n], dtype=torch.float32),
                        torch.as_tensor(ev["mask"][:, :n]), input_transform(cfg))


def norms(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, batch: int = 512
          ) -> dict[str, np.ndarray]:
    """|z| of the representation ("rep") and |h| of the projection-head output ("head")."""
    out: dict[str, list[np.ndarray]] = {"rep": [], "head": []}
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            rep, z = model(x[i:i + batch], mask[i:i + batch])
            out["rep"].append(rep.float().norm(dim=1).numpy())
            out["head"].append(z.float().norm(dim=1).numpy())
    model.train()
    return {k: np.concatenate(v) for k, v in out.items()}


def scored(model, x, mask, labels) -> dict[str, float]:
    """{"rep_auc", "rep_inv_eps_b_at_0.2", "head_auc", ...} of one model on the evaluation jets."""
    return {f"{k}_{name}": v for k, s in norms(model, x, mask).items()
            for name, v in score_metrics(labels, s).items()}


def supervised_crossfit(cfg, ev: dict, seed: int = 0) -> np.ndarray:
    """Logits of every evaluation jet from the same encoder trained with the labels of the other
    half (two folds split at random, ``train_supervised``: early stopping on a fifth of each)."""
    factory, prepare = supervised_parts(cfg)
    fold = np.random.default_rng(seed).permutation(len(ev["label"])) % 2
    out = np.zeros(len(ev["label"]), np.float64)
    for k in (0, 1):
        fit = train_supervised({key: v[fold != k] for key, v in ev.items()}, factory,
                               seed=seed + k, prepare=prepare)
        out[fold == k] = fit.scores({key: v[fold == k] for key, v in ev.items()})
    return out


def seed_summary(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and sample std (``<key>_std``) over init seeds of every key."""
    out: dict[str, float] = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows], np.float64)
        out[k] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def run_config(overrides: Sequence[str] = ()):
    return load_config(CONFIG, list(overrides))


def train_recipe(cfg, train: dict, budgets: Sequence[int]):
    """Train ``cfg``'s recipe on ``train`` (a store dict) in this process, without Ray, through
    the loop's own pieces (``initial_model``, ``LocalEngine``, ``build_loss``, ``build_views``,
    ``train_step``), the schedule sized for the largest budget. At each budget (steps reached)
    yields ``(step, the evaluated model, {"cpu_s": training CPU-seconds so far, "loss": mean of
    the last 20 steps})``; the model keeps training after the caller has scored it."""
    budgets = sorted(budgets)
    device = torch.device("cpu")
    precision = resolve(cfg.scaling.precision, device)
    precision.apply_global()
    model = prepare_model(initial_model(cfg.model, cfg.seed), sync_free=False)
    engine = LocalEngine(model, cfg, total_steps=budgets[-1], device=device)
    engine.train()
    loss_fn = build_loss(cfg.loss)
    loss_fn.attach(engine.module, budgets[-1])
    views = build_views(cfg, fixed=False)
    gen = torch.Generator(device=device)
    guard = LossGuard(device)
    n_train, bs = len(train["mask"]), cfg.data.batch_size
    rng = np.random.default_rng(cfg.seed)
    step, cpu, losses = 0, 0.0, []
    while step < budgets[-1]:
        order = rng.permutation(n_train)
        for s in range(0, n_train - bs + 1, bs):
            idx = np.sort(order[s:s + bs])
            batch = {k: train[k][idx] for k in ("particles", "mask", "label")}
            t0 = time.process_time()
            seed_step(gen, cfg.seed, 0, step)  # as the loop does before every step
            out = train_step(engine, loss_fn, views, batch, gen, cfg, precision, step=step + 1,
                             guard=guard, device=device)
            cpu += time.process_time() - t0
            losses.append(float(out.terms["loss"].detach()))
            step += 1
            if step in budgets:
                guard.check()
                yield step, loss_fn.eval_model(engine.module), {
                    "cpu_s": cpu, "loss": float(np.mean(losses[-20:]))}
            if step >= budgets[-1]:
                break


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="QCD training store (background only)")
    p.add_argument("--eval", required=True, help="svj + qcd evaluation store (another seed)")
    p.add_argument("--budgets", default="100,200,400,800", help="steps at which to score")
    p.add_argument("--init-seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="config override (key=value)")
    p.add_argument("--supervised", action=argparse.BooleanOptionalAction, default=True,
                   help="the same encoder trained with the evaluation labels (cross-fitted)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    budgets = sorted(int(b) for b in a.budgets.split(","))
    cfg = run_config(a.set)

    train = open_store(a.train).read_all()
    ev = open_store(a.eval).read_all()
    labels = np.asarray(ev["label"]).reshape(-1)
    x_ev, m_ev = eval_inputs(cfg, ev)

    rows: list[dict] = []
    for name, s in (("raw: jet mass", jet_mass_pt(ev["particles"], ev["mask"])[:, 0]),
                    ("raw: multiplicity", np.asarray(ev["mask"]).sum(1))):
        m = score_metrics(labels, s)
        rows.append({"name": name, "rep_auc": m["auc"],
                     "rep_inv_eps_b_at_0.2": m["inv_eps_b_at_0.2"]})

    if a.supervised:
        t0 = time.process_time()
        m = score_metrics(labels, supervised_crossfit(
            cfg, {k: np.asarray(ev[k]) for k in ("particles", "mask", "label")}, cfg.seed))
        rows.append({"name": "supervised (same encoder, eval labels, 2-fold)",
                     "rep_auc": m["auc"], "rep_inv_eps_b_at_0.2": m["inv_eps_b_at_0.2"],
                     "cpu_s": time.process_time() - t0})
        print(rows[-1], flush=True)

    inits = []
    for seed in range(a.init_seeds):
        inits.append(scored(initial_model(cfg.model, seed), x_ev, m_ev, labels))
    rows.append({"name": f"untrained ({a.init_seeds} seeds)", "steps": 0, "jets_seen": 0,
                 "cpu_s": 0.0, **seed_summary(inits)})

    numbers = {"config": CONFIG, "overrides": a.set, "train_jets": len(train["mask"]),
               "eval_jets": int((labels >= 0).sum()), "eval_signal": int((labels >= 1).sum()),
               "threads": a.threads}
    published = {"name": "published (DarkCLR, 100k jets, 150 epochs)", "rep_auc": PUBLISHED["auc"],
                 "rep_inv_eps_b_at_0.2": PUBLISHED["inv_eps_b_at_0.2"]}

    # -- training: the loop's pieces on the CPU, one process ------------------------------------
    for step, trained, info in train_recipe(cfg, train, budgets):
        row = {"name": f"trained {step} steps", "steps": step, "jets_seen": step * cfg.data.batch_size,
               "epochs": step * cfg.data.batch_size / len(train["mask"]), **info,
               **scored(trained, x_ev, m_ev, labels)}
        rows.append(row)
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        if a.out:  # every budget reached is on disk, whatever stops the run later
            write_results(a.out, {**numbers, "rows": rows + [published]}, argv)
    rows.append(published)
    return {**numbers, "rows": rows}


if __name__ == "__main__":
    main()
