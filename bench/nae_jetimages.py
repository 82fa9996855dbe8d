"""The DarkCLR comparison row "NAE on jet images": image AE and NAE anomaly scores on a jet store
with background (label 0) and signal (label > 0) jets, e.g. Pythia semi-visible vs QCD jets
(``clrdist data generate svj qcd --jets N --out svj_qcd.zarr``). Prints one JSON object.

The store's background is split in halves (fit / test, by position: stores are shuffled); the
signal jets are all test jets. Reports AUC and 1/eps_B at eps_S = 0.2 (DarkCLR's working point)
for the plain image autoencoder and the NAE (with the AUC's standard error from the sample sizes),
their settings, and the wall time of each. With ``--mimic`` it also grows the EFP mimickers (HLN,
PNN) of the image AE and reports, per signal label (e.g. top and W against QCD, as Bradshaw et
al.), their AUCs, ADO with the AE and the EFPs selected in order.

    python bench/nae_jetimages.py STORE [--max-jets 4000] [--ae-epochs 30] [--nae-steps 200]
                                  [--langevin-steps 20] [--batch-size 128] [--mimic]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clrdist.data.store import open_store  # noqa: E402
from clrdist.eval.jetimages import image_ae_scores  # noqa: E402
from clrdist.eval.mimic import mimic_evaluation  # noqa: E402
from clrdist.eval.nae import nae_evaluation  # noqa: E402


def auc_std_error(a: float, n_sig: int, n_bkg: int) -> float:
    """Standard error of an AUC ``a`` from its sample sizes alone (Hanley and McNeil 1982)."""
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    return float(np.sqrt((a * (1 - a) + (n_sig - 1) * (q1 - a * a) + (n_bkg - 1) * (q2 - a * a))
                         / (n_sig * n_bkg)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store")
    ap.add_argument("--max-jets", type=int, default=4000)
    ap.add_argument("--ae-epochs", type=int, default=30)
    ap.add_argument("--nae-steps", type=int, default=200)
    ap.add_argument("--langevin-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mimic", action="store_true", help="also grow the EFP mimickers")
    ap.add_argument("--mimic-jets", type=int, default=2000, help="test jets the mimickers use")
    ap.add_argument("--dmax", type=int, default=4, help="largest EFP degree")
    ap.add_argument("--auc-tol", type=float, default=0.01,
                    help="mimickers stop growing once their AUC is within this of the AE's "
                         "(negative: grow on the ADO alone, up to --max-efps)")
    ap.add_argument("--max-efps", type=int, default=6)
    ap.add_argument("--no-nae", action="store_true", help="skip the NAE")
    args = ap.parse_args()

    store = open_store(args.store)
    d = store.read_all(max_samples=args.max_jets)
    bkg = np.flatnonzero(d["label"] == 0)
    fit = bkg[: len(bkg) // 2]
    # the test jets in random order: the mimickers take the first --mimic-jets of them
    test = np.random.default_rng(args.seed).permutation(
        np.r_[bkg[len(bkg) // 2:], np.flatnonzero(d["label"] > 0)])
    tr = {k: v[fit] for k, v in d.items()}
    te = {k: v[test] for k, v in d.items()}
    out = {"store": args.store, "n_fit": int(len(fit)), "n_test_bkg": int(len(bkg) - len(fit)),
           "n_test_sig": int((d["label"] > 0).sum()), "ae_epochs": args.ae_epochs,
           "nae_steps": args.nae_steps, "langevin_steps": args.langevin_steps}
    t = time.perf_counter()
    ae = image_ae_scores(tr, te, seed=args.seed, epochs=args.ae_epochs).metrics
    out["ae_s"] = time.perf_counter() - t
    out["ae_auc"], out["ae_inv_eps_b_at_0.2"] = ae["images_ae_auc"], ae["images_ae_inv_eps_b_at_0.2"]
    out["ae_auc_err"] = auc_std_error(out["ae_auc"], out["n_test_sig"], out["n_test_bkg"])
    if args.mimic:
        t = time.perf_counter()
        res = mimic_evaluation(tr, te, seed=args.seed, dmax=args.dmax, max_samples=args.mimic_jets,
                               label_names=store.label_names, images={"epochs": args.ae_epochs},
                               auc_tol=args.auc_tol, max_efps=args.max_efps)
        out["mimic_auc_tol"], out["mimic_max_efps"] = args.auc_tol, args.max_efps
        out["mimic_s"] = time.perf_counter() - t
        out["mimic"] = {k: v for k, v in res.metrics.items() if "auc" in k or "ado" in k
                        or "n_efps" in k or "inv_eps_b_at_0.2" in k}
        out["mimic_efps"] = {k: [r.get("efp") for r in rows if r.get("efp")]
                             for k, rows in res.tables.items()}
    if args.no_nae:
        print(json.dumps(out, indent=1))
        return
    t = time.perf_counter()
    lv = {"z_steps": args.langevin_steps, "x_steps": args.langevin_steps}
    nae = nae_evaluation(None, tr["label"], None, te["label"], train_data=tr, test_data=te,
                         on=("images",), seed=args.seed, ae_epochs=args.ae_epochs,
                         nae_steps=args.nae_steps, batch_size=args.batch_size,
                         langevin=lv).metrics
    out["nae_s"] = time.perf_counter() - t
    out["nae_auc"] = nae["nae_images_auc"]
    out["nae_auc_err"] = auc_std_error(out["nae_auc"], out["n_test_sig"], out["n_test_bkg"])
    out["nae_inv_eps_b_at_0.2"] = nae["nae_images_inv_eps_b_at_0.2"]
    out["nae_e_pos"], out["nae_e_neg"] = nae["nae_images_e_pos"], nae["nae_images_e_neg"]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
