"""Do ORCA and DINO learn? Each against its untrained encoder on Pythia jets, on its own metrics.

Pythia 8 jets (pT 550-650 GeV, anti-kT R = 0.8) of QCD (label 0), top (1) and W (2) are
generated in this process (``generate_shard``, no Ray) from ``--seed`` (29: a seed no tuning run
or choice read), split in halves: training and test. DINO's linear classifier test (LCT, top vs
QCD) is fitted on the training half's labels (DINO never saw them) and scored on the test half.
Both losses train the demo's encoder (transformer 64 wide, 2 layers, log-pT inputs, soft
smearing + collinear splitting) in one process, at ``--train-seeds`` training seeds:

- ORCA: QCD is the known class (half its rows labelled per step), top and W are unlabelled; 3
  cosine heads (1 known + 2 novel). Metrics on the test half: known accuracy (QCD on its head),
  novel clustering accuracy (top and W, Hungarian), and the novel-head probability's AUC
  (top + W vs QCD). A model that calls everything known has known accuracy 1 and novel
  clustering accuracy 0.5: only both together say ORCA learnt.
- DINO: all three processes unlabelled, two student-only local views. Metric: LCT AUC (top vs
  QCD) on the representation of the teacher (the evaluated network) and of the student.

References in the same run on the same jets: the same architecture untrained at ``--init-seeds``
init seeds (their mean, std and max), and for DINO the raw inputs' LCT and the same encoder
trained with the training half's top / QCD labels (the supervised baseline's
``train_supervised``: early stopping on a held-out fifth), its test AUC.

    python -m bench.selfsup --jets 1000 --steps 600 --out docs/results/selfsup.json

tests/test_orca.py runs the same functions at a smaller size.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_results  # noqa: E402
from clrdist.config import load_config  # noqa: E402
from clrdist.eval.baselines import train_supervised  # noqa: E402
from clrdist.eval.metrics import auc  # noqa: E402
from clrdist.eval.openworld import openworld_evaluation  # noqa: E402
from clrdist.eval.runner import evaluate_during_training  # noqa: E402
from clrdist.factory import (  # noqa: E402
    build_encoder,
    build_loss,
    build_views,
    initial_model,
    input_transform,
    supervised_parts,
)
from clrdist.models.encode import model_inputs  # noqa: E402
from clrdist.train.inputs import view_inputs  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
PROCESSES = ("qcd", "top", "w")  # labels 0, 1, 2
COMMON = ["augment.slots=null", "optim.lr=0.001", "optim.warmup_steps=20", "model.dropout=0.0"]
ORCA = COMMON + ["loss.name=orca", "loss.known_classes=[0]", "loss.gather=false",
                 "model.head=cosine", "model.head_dims=[64]", "model.output_dim=3"]
# DINO: two student-only local views that drop half the constituents (DINO's multi-crop, for
# jets), 256 prototypes, teacher momentum 0.99 throughout (teacher_momentum_end 0.99: DINO's
# cosine schedule to 1 freezes the teacher of a run of a few hundred steps near its early
# students). Chosen with training seeds 0 and 1 on the 1000-jet sample of Pythia seed 23 (the LCT
# on its test half; docs/selfsup.md): the documented numbers use --seed 29, which no choice read.
LOCAL_VIEWS = "[[{name: drop, params: {p: 0.5}}], [{name: drop, params: {p: 0.5}}]]"
DINO = COMMON + ["loss.name=dino", "loss.gather=false", "loss.teacher_momentum=0.99",
                 "loss.teacher_momentum_end=0.99", f"augment.local_views={LOCAL_VIEWS}",
                 "model.head=dino", "model.head_dims=[64]", "model.output_dim=256"]


@functools.lru_cache(maxsize=2)
def pythia_jets(n_per_process: int, seed: int) -> dict[str, np.ndarray]:
    """``n_per_process`` jets of each of QCD, top, W from Pythia, in this process, shuffled:
    {"particles": (n, 50, 3) pT GeV / eta / phi, "mask": (n, 50), "label": (n,)}. Cached: do not
    modify the arrays."""
    from clrdist.data.generation.events import generate_shard
    from clrdist.data.generation.plan import GenerationConfig, make_plan

    parts, labels = [], []
    for label, proc in enumerate(PROCESSES):
        plan = make_plan(GenerationConfig(processes=[proc], n_jets=n_per_process, seed=seed,
                                          shard_size=n_per_process))
        parts.append(generate_shard(plan.shards[0]))
        labels.append(np.full(n_per_process, label, np.int64))
    order = np.random.default_rng(seed).permutation(3 * n_per_process)
    return {"particles": np.concatenate([p["particles"] for p in parts])[order],
            "mask": np.concatenate([p["mask"] for p in parts])[order],
            "label": np.concatenate(labels)[order]}


def halves(jets: dict) -> tuple[dict, dict]:
    n = len(jets["label"]) // 2
    return ({k: v[:n] for k, v in jets.items()}, {k: v[n:] for k, v in jets.items()})


def config(which: str):
    return load_config(DEMO, {"orca": ORCA, "dino": DINO}[which])


def train(cfg, jets: dict, steps: int, seed: int = 0
          ) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``steps`` optimiser steps of ``cfg.loss`` on ``jets`` (batch ``data.batch_size``, the
    run's views: ``augment.views``, then DINO's student-only ``augment.local_views``); returns
    (the evaluated network, the trained one), in eval mode: DINO's teacher and student, ORCA's
    one network twice."""
    torch.manual_seed(seed)
    model = initial_model(cfg.model, seed)
    loss_fn = build_loss(cfg.loss)
    loss_fn.attach(model, steps)
    views = build_views(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    B, V = cfg.data.batch_size, len(views)
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = cfg.optim.lr * min(1.0, (step + 1) / max(1, cfg.optim.warmup_steps))
        idx = np.sort(rng.choice(len(jets["label"]), B, replace=False))
        x, m = view_inputs(jets["particles"][idx], jets["mask"][idx], cfg, views, gen)
        rep, z = model(x, m)
        extra = {"inputs": (x, m), "reps": rep.chunk(V)} if loss_fn.needs_inputs else {}
        out = loss_fn(*z.chunk(V), labels=torch.as_tensor(jets["label"][idx]), **extra)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        loss_fn.after_step(model)
    return loss_fn.eval_model(model).eval(), model.eval()  # DINO: the teacher first


@torch.no_grad()
def orca_metrics(model: torch.nn.Module, cfg, test: dict) -> dict[str, float]:
    x, m = model_inputs(test["particles"], test["mask"], input_transform(cfg))
    probs = torch.softmax(model.eval()(x, m)[1].double(), 1).numpy()  # as clrdist eval --orca
    res = openworld_evaluation(probs, test["label"], known=cfg.loss.known_classes,
                               label_names={1: "top", 2: "w"}).metrics
    return {k: res[k] for k in ("orca_known_acc", "orca_novel_cluster_acc", "orca_all_cluster_acc",
                                "orca_anomaly_auc")}


def lct_auc(model: torch.nn.Module | None, cfg, fit: dict, score: dict,
            signal: int = 1) -> float:
    """LCT of ``signal`` (1 top, 2 W) against QCD: fitted on ``fit``'s jets of the two classes,
    scored on ``score``'s; ``model`` None: the raw inputs (flattened model inputs)."""
    fit, score = ({k: v[np.isin(s["label"], (0, signal))] for k, v in s.items()}
                  for s in (fit, score))
    if model is None:
        inputs = input_transform(cfg)
        rep = lambda s: model_inputs(s["particles"], s["mask"], inputs)[0].flatten(1).numpy()  # noqa: E731
    else:
        rep = build_encoder(model, cfg)
    return float(evaluate_during_training(rep(fit), fit["label"], rep(score),
                                          score["label"])["lct_auc"])


def supervised_auc(cfg, fit: dict, score: dict, seed: int = 0, signal: int = 1) -> float:
    """The ceiling: the same encoder trained with ``fit``'s ``signal`` / QCD labels (early
    stopping on a held-out fifth of them), its classifier's AUC on ``score``'s jets of the two."""
    fit, score = ({k: v[np.isin(s["label"], (0, signal))] for k, v in s.items()}
                  for s in (fit, score))
    factory, prepare = supervised_parts(cfg)
    model = train_supervised(fit, factory, seed=seed, prepare=prepare)
    return auc((score["label"] > 0).astype(int), model.scores(score))


def spread(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "max": float(v.max()), "min": float(v.min())}


def result_row(name: str, trained: list[float], untrained: list[float],
               raw: float | None = None, supervised: float | None = None) -> dict:
    """One metric's row: the trained seeds' and the untrained seeds' spreads, the raw inputs, the
    supervised encoder."""
    t, u = spread(trained), spread(untrained)
    return {"name": name, "trained_mean": t["mean"], "trained_std": t["std"],
            "trained_min": t["min"], "trained_seeds": list(trained),
            "untrained_mean": u["mean"], "untrained_std": u["std"],
            "untrained_max": u["max"], "raw": raw, "supervised": supervised}


def measure(n_jets: int, steps: int, seed: int, init_seeds: int, train_seeds: int = 2) -> dict:
    """Both losses and their references on one sample; flat rows for the results file. Trained
    rows: mean and std over ``train_seeds`` training seeds (init, batches and views), each seed's
    value kept; untrained rows: over ``init_seeds`` init seeds."""
    train_set, test = halves(pythia_jets(n_jets, seed))
    rows = []
    orca_cfg = config("orca")
    trained = [orca_metrics(train(orca_cfg, train_set, steps, s)[0], orca_cfg, test)
               for s in range(train_seeds)]
    untrained = [orca_metrics(initial_model(orca_cfg.model, s), orca_cfg, test)
                 for s in range(init_seeds)]
    for key in ("orca_known_acc", "orca_novel_cluster_acc", "orca_all_cluster_acc",
                "orca_anomaly_auc"):
        rows.append(result_row(f"ORCA {key.removeprefix('orca_')}", [m[key] for m in trained],
                               [m[key] for m in untrained]))
    dino_cfg = config("dino")
    # the LCT is fitted on the training half (DINO never saw its labels), scored on the test half
    nets = [train(dino_cfg, train_set, steps, s) for s in range(train_seeds)]
    for signal, name in ((1, "top"), (2, "W")):
        untrained = [lct_auc(initial_model(dino_cfg.model, s), dino_cfg, train_set, test, signal)
                     for s in range(init_seeds)]
        raw = lct_auc(None, dino_cfg, train_set, test, signal)
        sup = supervised_auc(dino_cfg, train_set, test, signal=signal)
        for i, who in enumerate(("teacher", "student")):  # the teacher is what clrdist evaluates
            trained = [lct_auc(n[i], dino_cfg, train_set, test, signal) for n in nets]
            rows.append(result_row(f"DINO LCT AUC ({name} vs QCD), {who}", trained, untrained,
                                   raw, sup))
    return {"jets_per_process": n_jets, "steps": steps, "batch": orca_cfg.data.batch_size,
            "data_seed": seed, "train_seeds": train_seeds, "init_seeds": init_seeds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jets", type=int, default=1000, help="jets per process (QCD, top, W)")
    ap.add_argument("--steps", type=int, default=600, help="optimiser steps per loss")
    ap.add_argument("--seed", type=int, default=29,
                    help="Pythia seed of the jets (23 chose the DINO settings: not for results)")
    ap.add_argument("--init-seeds", type=int, default=5, help="untrained encoders (init seeds)")
    ap.add_argument("--train-seeds", type=int, default=2, help="trained models (training seeds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", default=None, help="results JSON (docs/results/selfsup.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = measure(args.jets, args.steps, args.seed, args.init_seeds, args.train_seeds)
    if args.out:
        write_results(args.out, res, argv=sys.argv[1:] if argv is None else argv)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
