"""How much does the semi-visible-jet sample decide DarkCLR's score? (issue 20, item 4)

    python -m bench.svj_sample --train data/darkclr_budget/qcd_train20k.zarr \
        --eval m20=data/darkclr_budget/svj_eval.zarr --eval m10=data/svj_m10.zarr \
        --steps 1400 --out docs/results/svj_sample.json

One DarkCLR-recipe encoder (``configs/darkclr_svj_cpu.yaml``) trained once on the QCD store
(``bench.darkclr_budget.train_recipe``, ``--steps`` steps, the schedule sized for them); each
``--eval NAME=STORE`` (semi-visible + QCD jets of other generator settings, the QCD jets the
same for every store) is cut in halves in a seeded random order. On the second half every score
is measured the same way: |z| of the trained encoder, |z| of the same encoder untrained
(``--init-seeds``, mean +- std), the raw observables (jet mass, constituent multiplicity), the
jet-image autoencoder (``clrdist.eval.jetimages``, fitted on the first half's QCD jets: a
density score that does not depend on the contrastive training) and the ceiling of that sample
(the same encoder trained with its labels, cross-fitted on the whole store). The store's
generator settings (r_inv, Z' mass, extra Pythia settings) come from its provenance.

If the published 0.76 belongs to a sample where semi-visible jets are easier to tell apart, the
density score and |z| move together with the sample while the ceiling shows how separable each
sample is at all.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.darkclr_budget import (
    CONFIG,
    PUBLISHED,
    eval_inputs,
    run_config,
    score_metrics,
    scored,
    seed_summary,
    supervised_crossfit,
    train_recipe,
)
from bench.results import write_results
from clrdist.data.store import open_store
from clrdist.eval.jetimages import image_ae_scores
from clrdist.eval.mimic import jet_mass_pt
from clrdist.factory import initial_model


def halves(d: dict, seed: int) -> tuple[dict, dict]:
    """A store dict cut in two halves of a seeded random order."""
    order = np.random.default_rng(seed).permutation(len(d["label"]))
    a, b = order[: len(order) // 2], order[len(order) // 2:]
    return ({k: v[a] for k, v in d.items()}, {k: v[b] for k, v in d.items()})


def encoder_free_scores(fit: dict, test: dict, seed: int, ae_epochs: int
                        ) -> dict[str, dict[str, float]]:
    """The scores of ``test``'s jets that no encoder makes ({"auc", "inv_eps_b_at_0.2"} each): the
    jet mass, the multiplicity, and the jet-image autoencoder fitted on ``fit``'s QCD jets."""
    labels = np.asarray(test["label"]).reshape(-1)
    out = {"mass": score_metrics(labels, jet_mass_pt(test["particles"], test["mask"])[:, 0]),
           "multiplicity": score_metrics(labels, np.asarray(test["mask"]).sum(1))}
    ae = image_ae_scores({k: v[fit["label"] == 0] for k, v in fit.items()}, test, seed=seed,
                         epochs=ae_epochs).metrics
    out["image_ae"] = {"auc": ae["images_ae_auc"],
                       "inv_eps_b_at_0.2": ae["images_ae_inv_eps_b_at_0.2"]}
    return out


def ceiling(cfg, fit: dict, test: dict) -> dict[str, float]:
    """The ceiling of a sample at ``cfg``'s size: the same encoder trained with the labels,
    cross-fitted on both halves, scored ({"auc", "inv_eps_b_at_0.2"}) on ``test``'s jets."""
    both = {k: np.r_[fit[k], test[k]] for k in ("particles", "mask", "label")}
    sup = supervised_crossfit(cfg, both, cfg.seed)[len(fit["label"]):]
    return score_metrics(np.asarray(test["label"]).reshape(-1), sup)


def settings(store) -> dict:
    """The generator settings of a store that decide its semi-visible jets (provenance: r_inv,
    the Z' mass, the detector, the jet definition, the Hidden Valley lines of the svj shards'
    Pythia settings)."""
    prov = store.attrs.get("provenance", {})
    out = {k: prov[k] for k in ("r_inv", "svj_zprime_mass", "detector", "jet") if k in prov}
    out["hidden_valley"] = [line for line in prov.get("settings", {}).get("svj", [])
                            if line.startswith(("HiddenValley:", "49001", "49002"))]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="QCD training store (background only)")
    p.add_argument("--eval", action="append", required=True, metavar="NAME=STORE",
                   help="a semi-visible + QCD evaluation store (repeatable)")
    p.add_argument("--steps", type=int, default=1400, help="training steps of the one encoder")
    p.add_argument("--init-seeds", type=int, default=5)
    p.add_argument("--ae-epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the halves' order and the image AE")
    p.add_argument("--set", action="append", default=[], help="config override (key=value)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = run_config(a.set)
    samples = {}
    for spec in a.eval:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            p.error(f"--eval {spec!r}: expected NAME=STORE")
        samples[name] = path

    rows: list[dict] = []
    evals = {}
    for name, path in samples.items():
        store = open_store(path)
        d = store.read_all()
        fit, test = halves(d, a.seed)
        labels = np.asarray(test["label"]).reshape(-1)
        x, m = eval_inputs(cfg, test)
        evals[name] = (x, m, labels)
        row = {"name": name, "store": path, "settings": settings(store),
               "n_test_sig": int((labels >= 1).sum()), "n_test_bkg": int((labels == 0).sum())}
        t0 = time.perf_counter()
        for key, mm in encoder_free_scores(fit, test, a.seed, a.ae_epochs).items():
            row[f"{key}_auc"], row[f"{key}_inv_eps_b_at_0.2"] = mm["auc"], mm["inv_eps_b_at_0.2"]
        row["image_ae_s"] = time.perf_counter() - t0
        init = seed_summary([scored(initial_model(cfg.model, s), x, m, labels)
                             for s in range(a.init_seeds)])
        row.update({f"untrained_{k}": v for k, v in init.items()})
        t0 = time.perf_counter()
        mm = ceiling(cfg, fit, test)
        row["supervised_auc"], row["supervised_inv_eps_b_at_0.2"] = mm["auc"], mm["inv_eps_b_at_0.2"]
        row["supervised_s"] = time.perf_counter() - t0
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    train = open_store(a.train).read_all()
    for step, model, info in train_recipe(cfg, train, [a.steps]):
        for row in rows:
            got = scored(model, *evals[row["name"]])
            row.update({f"trained_{k}": v for k, v in got.items()}, trained_steps=step,
                       trained_cpu_s=info["cpu_s"])
            print(row["name"], {k: round(v, 3) for k, v in got.items()}, flush=True)
    result = {"config": CONFIG, "overrides": a.set, "train_jets": len(train["mask"]),
              "steps": a.steps, "published": PUBLISHED, "rows": rows}
    if a.out:
        write_results(a.out, result, argv)
    return result


if __name__ == "__main__":
    main()
