"""Does the model's size close DarkCLR's gap to 0.76? (issue 20, item 4)

    python -m bench.darkclr_size --train data/darkclr_budget/qcd_train20k.zarr \
        --eval data/darkclr_budget/svj_eval.zarr --sizes 32x1,64x2,128x4 --train-seeds 2 \
        --steps 1400 --threads 2 --out docs/results/darkclr_size.json

The CPU recipe (``configs/darkclr_svj_cpu.yaml``: AnomalyCLR loss, its views, lr 1e-3, the
schedule sized for ``--steps``) at several transformer sizes, each trained for the same number of
steps on the same QCD jets (``bench.darkclr_budget.train_recipe``) at ``--train-seeds`` seeds and
scored by |z| on the same test half of the evaluation store (``bench.svj_sample.halves``). Next
to each size, on the same jets: the same encoder untrained (``--init-seeds``: mean, std, max)
and trained with the labels (cross-fitted on the whole store, the ceiling of that size;
``--no-supervised`` leaves it out: minutes at 128x4); once, the raw observables (jet mass,
multiplicity) and the jet-image autoencoder; and the published value.

Label-free diagnostics (``--diagnose``, on by default), for every model scored, on the test
half's background (QCD) jets only: ``drop_auc``, |z| of each jet through the run's anomaly view
against the same jet through no view (does |z| flag what the loss pushes away? above 0.5: yes),
``view_drop_auc``, the same against the jet through a physical view (the pair the loss sees),
and ``mult_corr`` / ``mass_corr``, the rank correlation of |z| with the jet's multiplicity and
mass (what |z| tracks). Once per size (``count_cue``): the constituents the model sees in the
jet, in a physical view and in the anomaly view, and how well that count alone tells the anomaly
view from the physical one. The jets go through the views once per size (``probe_inputs``).

``--score-at 1400,2800`` also scores every training run at those earlier steps of the same
schedule (sized for ``--steps``): the curve of one long run, listed per seed and averaged in
``trained_auc_by_steps``; the row's ``trained_*`` numbers are always those at ``--steps``. With
``--out`` the results file is rewritten after every score (``"complete": false`` until the end; the
row in progress keeps its scores at ``--steps`` under ``seeds`` and the others under ``earlier``,
as the final file does), so a long run stopped midway keeps what it measured.

Sizes (``SIZES``): ``64x2`` is the CPU recipe as configured (64 wide, 2 layers, feed-forward 128,
head [64] -> 64); ``32x1`` the same shape halved; ``128x4`` DarkCLR's own size (128 wide,
4 layers, feed-forward 512, head [512] -> 512).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from bench.darkclr_budget import (
    PUBLISHED,
    eval_inputs,
    norms,
    run_config,
    score_metrics,
    scored,
    seed_summary,
    train_recipe,
)
from bench.results import write_results
from bench.svj_sample import ceiling, encoder_free_scores, halves
from clrdist.data.store import open_store
from clrdist.eval.mimic import jet_mass_pt
from clrdist.factory import build_views, initial_model
from clrdist.physics.augment import View
from clrdist.train.inputs import view_inputs

SIZES = {
    "32x1": ["model.model_dim=32", "model.ff_dim=64", "model.layers=1", "model.head_dims=[32]",
             "model.output_dim=32"],
    "64x2": [],
    "128x4": ["model.model_dim=128", "model.ff_dim=512", "model.layers=4",
              "model.head_dims=[512]", "model.output_dim=512"],
}


DIAGNOSTICS = ("drop_auc", "view_drop_auc", "mult_corr", "mass_corr")  # what diagnostics() returns


def probe_inputs(cfg, qcd: dict, seed: int = 0) -> dict:
    """The background jets ``qcd`` (a store dict) as the model sees them, made once per config:
    through no view ("plain"), the first physical view ("view") and the anomaly view ("anomaly"),
    each (x, mask); with the jets' multiplicity ("mult") and mass ("mass")."""
    if cfg.augment.anomaly_view is None:
        raise ValueError(f"{cfg.name}: --diagnose needs augment.anomaly_view")
    views = build_views(cfg, fixed=False)
    out = {name: view_inputs(qcd["particles"], qcd["mask"], cfg, [view],
                             torch.Generator().manual_seed(seed))
           for name, view in (("plain", View([])), ("view", views[0]), ("anomaly", views[-1]))}
    return {**out, "mult": np.asarray(qcd["mask"]).sum(1),
            "mass": jet_mass_pt(qcd["particles"], qcd["mask"])[:, 0]}


def _auc_apart(lower: np.ndarray, higher: np.ndarray) -> float:
    """AUC of a score for ``higher`` (positives) against ``lower``."""
    y = np.r_[np.zeros(len(lower)), np.ones(len(higher))]
    return score_metrics(y, np.concatenate([lower, higher]))["auc"]


def diagnostics(model: torch.nn.Module, probe: dict) -> dict[str, float]:
    """Label-free, on ``probe_inputs``: the AUC of |z| for each jet through the anomaly view
    against the same jet through no view ("drop_auc") and through the first physical view, the
    pair the loss contrasts ("view_drop_auc": free of what the views do to every jet, such as a
    translation the test jets never get), and the Spearman correlation of |z| with multiplicity
    ("mult_corr") and jet mass ("mass_corr")."""
    plain, physical, viewed = (norms(model, *probe[k])["rep"] for k in ("plain", "view", "anomaly"))
    return {"drop_auc": _auc_apart(plain, viewed), "view_drop_auc": _auc_apart(physical, viewed),
            "mult_corr": float(spearmanr(plain, probe["mult"]).statistic),
            "mass_corr": float(spearmanr(plain, probe["mass"]).statistic)}


def count_cue(probe: dict) -> dict[str, float]:
    """What the anomaly view gives away by its count alone, on ``probe_inputs``: the mean number
    of constituents the model sees in the jet itself ("plain_mult"), in the first physical view
    ("view_mult") and in the anomaly view ("anomaly_mult"), and the AUC of that count separating
    the anomaly view from the physical one ("anomaly_count_auc"; 0 or 1: the loss's task is solved
    by counting)."""
    counts = {k: probe[k][1].sum(1).numpy() for k in ("plain", "view", "anomaly")}
    return {**{f"{k}_mult": float(v.mean()) for k, v in counts.items()},
            "anomaly_count_auc": _auc_apart(counts["view"], counts["anomaly"])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="QCD training store (background only)")
    p.add_argument("--eval", required=True, help="semi-visible + QCD evaluation store")
    p.add_argument("--sizes", default="32x1,64x2,128x4", help=f"of {list(SIZES)}")
    p.add_argument("--steps", type=int, default=1400, help="training steps of every encoder")
    p.add_argument("--score-at", default="", help="earlier steps to score too (comma-separated)")
    p.add_argument("--train-seeds", type=int, default=2)
    p.add_argument("--init-seeds", type=int, default=5)
    p.add_argument("--supervised", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ae-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the halves' order and the image AE")
    p.add_argument("--diagnose", action=argparse.BooleanOptionalAction, default=True,
                   help="label-free diagnostics of every model scored (drop_auc, correlations)")
    p.add_argument("--set", action="append", default=[], help="config override for every size")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        p.error(f"--sizes: unknown {unknown}; known: {list(SIZES)}")
    if a.train_seeds < 1:
        p.error("--train-seeds must be at least 1")
    try:
        score_at = sorted({int(v) for v in a.score_at.split(",") if v.strip()})
    except ValueError:
        p.error(f"--score-at: {a.score_at!r} is not a comma-separated list of steps")
    if any(not 0 < v < a.steps for v in score_at):
        p.error(f"--score-at: every step must lie between 0 and --steps ({a.steps}): {score_at}")
    configs = {s: run_config([*SIZES[s], *a.set]) for s in sizes}  # bad overrides fail here
    torch.set_num_threads(a.threads)

    ev = open_store(a.eval).read_all()
    fit, test = halves(ev, a.seed)
    labels = np.asarray(test["label"]).reshape(-1)
    qcd = {k: np.asarray(test[k])[labels == 0] for k in ("particles", "mask")}
    names = {"mass": "raw: jet mass", "multiplicity": "raw: multiplicity",
             "image_ae": "jet-image AE"}
    rows: list[dict] = [{"name": names[k], **m} for k, m in
                        encoder_free_scores(fit, test, a.seed, a.ae_epochs).items()]
    print(rows, flush=True)

    train = open_store(a.train).read_all()

    def result(done: list[dict], complete: bool) -> dict:
        return {"config": "configs/darkclr_svj_cpu.yaml", "overrides": a.set, "sizes": sizes,
                "train_jets": len(train["mask"]), "steps": a.steps, "score_at": score_at,
                "train_seeds": a.train_seeds, "n_test_sig": int((labels >= 1).sum()),
                "n_test_bkg": int((labels == 0).sum()), "published": PUBLISHED,
                "complete": complete, "rows": done}

    def save(done: list[dict], complete: bool = False) -> None:
        if a.out:
            write_results(a.out, result(done, complete), argv)

    def apart(scores: list[dict]) -> dict[str, list[dict]]:  # the last step's, the earlier ones
        return {"seeds": [s for s in scores if s["steps"] == a.steps],
                "earlier": [s for s in scores if s["steps"] != a.steps]}

    def score(model, x, m, probe) -> dict[str, float]:  # the semi-visible scores, the diagnostics
        return {**scored(model, x, m, labels), **(diagnostics(model, probe) if probe else {})}

    for size in sizes:
        cfg = configs[size]
        x, m = eval_inputs(cfg, test)
        probe = probe_inputs(cfg, qcd, a.seed) if a.diagnose else None  # the same for every seed
        row = {"name": size, "model_dim": cfg.model.model_dim, "layers": cfg.model.layers,
               "params": sum(t.numel() for t in initial_model(cfg.model, 0).parameters()),
               **(count_cue(probe) if probe else {})}
        inits = [score(initial_model(cfg.model, s), x, m, probe) for s in range(a.init_seeds)]
        if inits:
            init = seed_summary(inits)
            row.update(untrained_auc=init["rep_auc"], untrained_auc_std=init["rep_auc_std"],
                       untrained_auc_max=max(r["rep_auc"] for r in inits),
                       **{"untrained_inv_eps_b_at_0.2": init["rep_inv_eps_b_at_0.2"]},
                       **{f"untrained_{k}": init[k] for k in DIAGNOSTICS if k in init})
        seeds = []
        for seed in range(a.train_seeds):
            cfg_s = run_config([*SIZES[size], *a.set, f"seed={cfg.seed + seed}"])
            t0 = time.perf_counter()
            for step, model, info in train_recipe(cfg_s, train, [*score_at, a.steps]):
                got = score(model, x, m, probe)
                seeds.append({"seed": cfg_s.seed, "steps": step, "cpu_s": info["cpu_s"],
                              "wall_s": time.perf_counter() - t0, "loss": info["loss"], **got})
                print(size, seeds[-1], flush=True)
                save([*rows, {**row, **apart(seeds)}])
        by_steps = {str(n): float(np.mean([s["rep_auc"] for s in seeds if s["steps"] == n]))
                    for n in [*score_at, a.steps]}
        seeds, earlier = apart(seeds).values()
        auc = np.array([s["rep_auc"] for s in seeds])
        row.update(trained_auc=float(auc.mean()), trained_auc_min=float(auc.min()),
                   trained_auc_max=float(auc.max()),
                   trained_auc_seed_std=float(auc.std(ddof=1)) if len(auc) > 1 else 0.0,
                   **{"trained_inv_eps_b_at_0.2": float(np.mean(
                       [s["rep_inv_eps_b_at_0.2"] for s in seeds]))},
                   trained_head_auc=float(np.mean([s["head_auc"] for s in seeds])),
                   train_cpu_s=float(np.mean([s["cpu_s"] for s in seeds])), seeds=seeds)
        if score_at:
            row.update(trained_auc_by_steps=by_steps, earlier=earlier)
        if a.supervised:
            t0 = time.perf_counter()
            ms = ceiling(cfg, fit, test)
            row.update(supervised_auc=ms["auc"], supervised_s=time.perf_counter() - t0,
                       **{"supervised_inv_eps_b_at_0.2": ms["inv_eps_b_at_0.2"]})
        rows.append(row)
        save(rows)
        print({k: v for k, v in row.items() if k not in ("seeds", "earlier")}, flush=True)
    rows.append({"name": "published (DarkCLR: 128x4, 100k jets, 150 epochs)",
                 "trained_auc": PUBLISHED["auc"],
                 "trained_inv_eps_b_at_0.2": PUBLISHED["inv_eps_b_at_0.2"]})
    save(rows, complete=True)
    return result(rows, complete=True)


if __name__ == "__main__":
    main()
