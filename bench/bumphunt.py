"""The CWoLa bump hunt on Pythia dijets: background-only checks and the LHCO-like resonance,
found blind, next to its references. Writes ``results.json`` (and prints it).

    python -m bench.bumphunt --quick --out DIR      # small sizes, ~10 minutes on 2 cores
    python -m bench.bumphunt --out DIR [--events DIR/events.npz]

Steps 1-3 live in bench/bumphunt_inputs.py, step 5's permutation test in
bench/bumphunt_flatness.py.

1. Events: QCD dijets and W' (3500) -> X (500) Y (100) -> qq qq at 13 TeV
   (``clrdist data generate resonance qcd``: R = 1.0, leading jet pT > 1.2 TeV, |eta| < 2.5),
   generated here with the same shard plan and seeds (shards of 1000; ``--events`` reuses a
   file this bench wrote, and the first events of a larger file are the events a smaller run
   makes: a shard's seed depends on the master seed, process and shard index only). The hunt
   runs in m_jj 2.8-6 TeV (below it, the pT cut's turn-on).
2. Encoder: each jet alone (the hardest 50 constituents), ``model.input_features: boost``
   (pT fractions, angles to the jet axis in units of the jet's angular size m/pT: no absolute
   scale, no absolute angle; ``--inputs ptfrac`` keeps the angles absolute), trained with the demo recipe on the
   QCD jets of the hunt sample (no labels; the signal is not in it) for ``--train-seconds``, at
   ``--train-seeds`` seeds (the first is hunted on; all enter the flatness check). An event's
   representation is the two jets' representations side by side.
3. Feature sets hunted on the same events: the trained representation as given and whitened
   per jet against the jet's own pT (``whiten_dijet_given_jet_pt``, fitted on each hunt's
   mixture: the hunted one, whose background-only hunt gets the whole-hunt toys), the untrained
   encoder (``--init-seeds`` seeds; the first also whitened), the raw substructure features of the CWoLa hunting paper (m_J and
   tau21 of the heavier and the lighter jet) and an idealised supervised classifier (gradient-
   boosted trees on those features with truth labels, cross-fitted in two halves: its score is
   the hunt's one feature). The sculpting guard (ln m_jj regression) is measured for each, and
   for an untrained encoder with absolute-pT inputs (``pt``), which it must refuse.
4. Hunts (clrdist.eval.bumphunt, blind): signal fractions 0 (the control), 0.1%, 0.3%, 1% of all
   events; local Z, global Z (smooth toys, extrapolated beyond them; for the representation's
   background-only hunt also whole-hunt toys with the classifier re-run), efficiency flatness;
   per feature set the fraction at which the local and global Z reach 3 (log-interpolated).
5. Flatness on background only (bench.bumphunt_flatness): each trained encoder and the first
   untrained one, as given and whitened, over ``FLATNESS_SEEDS`` hunt seeds against
   ``FLATNESS_PERMUTATIONS`` permutations of m_jj: an exact permutation test per efficiency.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bumphunt_flatness import (  # noqa: E402
    FLATNESS_PERMUTATIONS,
    FLATNESS_SEEDS,
    flatness_run,
    permutation_verdict,
)
from bench.bumphunt_inputs import (  # noqa: E402
    event_reps,
    generate,
    jets_of,
    substructure,
    supervised_scores,
    train_encoder,
)
from bench.results import write_results  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
MJJ_RANGE = (2800.0, 6000.0)
SQRT_S = 13000.0
FRACTIONS = (0.0, 0.001, 0.003, 0.01)
SIZES = {  # per mode: events, training seconds, toys, classifier folds, bins
    "quick": dict(n_qcd=10000, n_sig=1000, train_s=60.0, n_toys=40, n_full_toys=2, k=3, n_bins=12),
    "full": dict(n_qcd=24000, n_sig=3000, train_s=300.0, n_toys=200, n_full_toys=5, k=3, n_bins=12),
}
WHITE = ", pT-whitened"  # the feature set whitened per jet against the jet's pT
HUNTED = f"representation{WHITE}"  # what the background-only summary reports
ENCODER = ["model.input_dim=5", "data.n_particles=50",  # + model.input_features from --inputs
           "model.model_dim=32", "model.ff_dim=64", "model.head_dims=[32]", "model.output_dim=16"]


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the machine is shared: wall time
    depends on the load, CPU time much less)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# -- 4. hunts ------------------------------------------------------------------------------------

def hunt_one(task: dict) -> dict:
    """One blind hunt of one feature set at one injected fraction (a worker process)."""
    from clrdist.eval.bumphunt import hunt_mixture, mix_signal

    white = task.get("whiten", False)  # each jet whitened against its pT, over the mixture
    m, x, truth = mix_signal(task["mjj_b"], task["x_b"], task["mjj_s"], task["x_s"],
                             task["fraction"], seed=task["seed"],
                             jet_pt_bkg=task["pt_b"] if white else None,
                             jet_pt_sig=task["pt_s"] if white else None)
    t0 = time.perf_counter()
    met, res = hunt_mixture(m, x, truth, sqrt_s=SQRT_S, mjj_range=MJJ_RANGE, prefix="h",
                            seed=task["seed"], classifier=task["classifier"], k=task["k"],
                            n_bins=task["n_bins"], n_toys=task["n_toys"],
                            n_full_toys=task["n_full_toys"], allow_mjj_correlated=True,
                            decorrelate=task.get("decorrelate", "none"))
    in_range = (m >= MJJ_RANGE[0]) & (m < MJJ_RANGE[1])
    per_eps = {f"flatness_p_eps_{eps:g}": p for eps, p in res.flatness_p_by_eps.items()}
    row = {"name": f"{task['set']}, f = {task['fraction']:g} ({int(truth.sum())} signal events)",
           "features": task["set"], "fraction": task["fraction"], "n_sig": int(truth.sum()),
           "n_sig_in_range": int((truth & in_range).sum()),
           "n_bkg_in_range": int((~truth & in_range).sum()), "classifier": task["classifier"],
           **{k[2:]: (round(v, 4) if np.isfinite(v) else None) for k, v in met.items()},
           **{k: round(v, 4) for k, v in per_eps.items()},
           "passes_guard": bool(not res.mjj_corr_allowed), "seconds": round(time.perf_counter() - t0, 1)}
    return row


BKG_KEYS = ("max_local_z", "global_z", "global_z_full_toys", "flatness_p", "flatness_p_eps_0.1",
            "flatness_p_eps_0.01", "mjj_corr", "val_logloss", "val_logloss_ref", "n_failed_fits")


def background_rows(rows: list[dict]) -> list[dict]:
    """One row per feature set: its background-only (f = 0) hunt."""
    return [{"name": r["features"], **{k: r.get(k) for k in BKG_KEYS}}
            for r in rows if r["fraction"] == 0]


def at_3sigma(rows: list[dict], key: str) -> float | None:
    """The injected fraction at which ``key`` first reaches 3, interpolated in ln f between the
    scan points (None: not reached)."""
    pts = sorted((r["fraction"], r[key]) for r in rows if r["fraction"] > 0 and r[key] is not None)
    prev = None
    for f, z in pts:
        if z >= 3:
            if prev is None or prev[1] >= 3:
                return f
            (f0, z0) = prev
            return float(np.exp(np.log(f0) + (3 - z0) / (z - z0) * (np.log(f) - np.log(f0))))
        prev = (f, z)
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about 10 minutes on 2 cores)")
    ap.add_argument("--out", required=True, help="output folder (results.json, events.npz); "
                    "docs/results/bumphunt.json is a copy of a --quick run's results.json")
    ap.add_argument("--events", default=None, help="reuse an events.npz this bench wrote")
    ap.add_argument("--seed", type=int, default=1, help="generation master seed")
    ap.add_argument("--workers", type=int, default=2, help="processes (generation, hunts)")
    ap.add_argument("--train-seconds", type=float, default=None)
    ap.add_argument("--init-seeds", type=int, default=5, help="untrained encoders")
    ap.add_argument("--train-seeds", type=int, default=2,
                    help="encoders trained (seeds 0, 1, ...): the first is hunted on, every one "
                         "enters the flatness check")
    ap.add_argument("--inputs", choices=("ptfrac", "boost"), default="boost",
                    help="the encoder's model.input_features (both without an absolute scale; "
                         "boost also without an absolute angle)")
    args = ap.parse_args(argv)
    import torch

    from clrdist.config import load_config
    from clrdist.data.schema import GENERATED_DIJET_FEATURES
    from clrdist.eval.bumphunt import (
        MAX_MJJ_CORR,
        decorrelate_mjj,
        mjj_dependence,
        whiten_dijet_given_jet_pt,
    )
    from clrdist.factory import initial_model

    torch.set_num_threads(1)
    mode = "quick" if args.quick else "full"
    size = SIZES[mode]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timing = {}

    # 1. events
    t0 = time.perf_counter()
    if args.events:
        ev = dict(np.load(args.events))
        n_q, n_s = len(ev["qcd_mask"]), len(ev["resonance_mask"])
        if n_q < size["n_qcd"] or n_s < size["n_sig"]:
            raise SystemExit(f"bench.bumphunt: error: --events {args.events}: {n_q} QCD / {n_s} "
                             f"signal events, {mode} needs {size['n_qcd']} / {size['n_sig']}")
        ev = {k: v[:size["n_qcd"] if k.startswith("qcd") else size["n_sig"]] for k, v in ev.items()}
    else:
        ev = generate(size["n_qcd"], size["n_sig"], args.seed, args.workers)
        np.savez(out / "events.npz", **ev)
    timing["events_s"] = round(time.perf_counter() - t0, 1)
    names = list(GENERATED_DIJET_FEATURES)
    mjj_b, mjj_s = ev["qcd_features"][:, 0].astype(float), ev["resonance_features"][:, 0].astype(float)

    # 2. encoder: trained on the QCD jets (both jets of every event)
    t0 = time.perf_counter()
    encoder = [f"model.input_features={args.inputs}", *ENCODER]
    cfg = load_config(DEMO, encoder)
    p, m, half = jets_of(ev, "qcd")
    jets_p = np.concatenate([p[:, :half], p[:, half:]])
    jets_m = np.concatenate([m[:, :half], m[:, half:]])
    keep = jets_m.any(1)
    trained = [train_encoder(cfg, jets_p[keep], jets_m[keep], args.train_seconds or size["train_s"],
                             seed=s) for s in range(args.train_seeds)]
    model, train_info = trained[0]
    timing["train_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    col = {n: i for i, n in enumerate(names)}
    pts = {proc: ev[f"{proc}_features"][:, [col["pt_J1"], col["pt_J2"]]].astype(np.float64)
           for proc in ("qcd", "resonance")}

    def white(xb):  # each jet's features whitened against its own pT, over all QCD events
        return whiten_dijet_given_jet_pt(xb, pts["qcd"][:, 0], pts["qcd"][:, 1])

    sets: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    sets["representation"] = (event_reps(model, cfg, ev, "qcd"),
                              event_reps(model, cfg, ev, "resonance"), "linear")
    sets[HUNTED] = sets["representation"]  # whitened in each hunt, over its own mixture
    for s in range(args.init_seeds):
        init = initial_model(cfg.model, 100 + s)
        sets[f"untrained seed {100 + s}"] = (event_reps(init, cfg, ev, "qcd"),
                                             event_reps(init, cfg, ev, "resonance"), "linear")
    sets[f"untrained seed 100{WHITE}"] = sets["untrained seed 100"]
    raw_b, raw_s = substructure(ev["qcd_features"], names), substructure(ev["resonance_features"], names)
    sets["raw m_J, tau21"] = (raw_b, raw_s, "gbdt")
    sets["supervised"] = (*supervised_scores(raw_b, raw_s, seed=0), "linear")
    # the guard on inputs with an absolute scale: an untrained encoder reading pT / 600 GeV
    cfg_pt = load_config(DEMO, encoder + ["model.input_features=pt", "model.input_dim=3"])
    pt_rep = event_reps(initial_model(cfg_pt.model, 100), cfg_pt, ev, "qcd")
    # and on the other scale-free inputs: ptfrac (no absolute pT; angles absolute)
    other = "ptfrac" if args.inputs == "boost" else "boost"
    cfg_o = load_config(DEMO, encoder + [f"model.input_features={other}"])
    other_rep = event_reps(initial_model(cfg_o.model, 100), cfg_o, ev, "qcd")
    timing["encode_s"] = round(time.perf_counter() - t0, 1)

    # the guard's regression of ln m_jj on each feature set: as given, and after the hunt's
    # decorrelation (fitted here over all background events in range; each hunt window refits
    # it without its SR), which is what the hunt's classifiers see and the hunt's guard checks
    in_b = (mjj_b >= MJJ_RANGE[0]) & (mjj_b < MJJ_RANGE[1])

    def corr(x, decorrelated):  # gradient-boosted trees, as the hunt's guard
        m = mjj_b[in_b]
        xx = decorrelate_mjj(m, x[in_b], np.ones(len(m), bool)) if decorrelated else x[in_b]
        return round(mjj_dependence(m, xx).corr, 4)

    whitened = {name: white(xb) for name, (xb, _, _) in sets.items() if name.endswith(WHITE)}
    guard_sets = {**{name: whitened.get(name, xb) for name, (xb, _, _) in sets.items()},
                  "untrained, absolute-pT inputs (pt)": pt_rep,
                  f"untrained seed 100, {other} inputs": other_rep}
    guard = {name: corr(x, True) for name, x in guard_sets.items()}
    guard_raw = {name: corr(x, False) for name, x in guard_sets.items()}

    # 4. hunts, two processes
    t0 = time.perf_counter()
    tasks = [dict(set=name, fraction=f, mjj_b=mjj_b, x_b=xb, mjj_s=mjj_s, x_s=xs, seed=0,
                  classifier=clf, k=size["k"], n_bins=size["n_bins"], n_toys=size["n_toys"],
                  n_full_toys=size["n_full_toys"] if (name == HUNTED and f == 0) else 0,
                  whiten=name.endswith(WHITE), pt_b=pts["qcd"], pt_s=pts["resonance"])
             for name, (xb, xs, clf) in sets.items() for f in FRACTIONS]
    # the trained representation's background-only hunt with the optional decorrelation
    tasks.append({**tasks[0], "set": "representation, decorrelated", "decorrelate": "sideband",
                  "n_full_toys": 0})
    # 5. flatness: every trained encoder and the untrained one, as given and whitened, each
    # against FLATNESS_PERMUTATIONS permutations of m_jj
    reps_b = [sets["representation"][0]] + [event_reps(mm, cfg, ev, "qcd") for mm, _ in trained[1:]]
    flat_sets = {}
    for s, rb in enumerate(reps_b):
        flat_sets[f"representation, training seed {s}"] = rb
        flat_sets[f"representation, training seed {s}{WHITE}"] = whitened[HUNTED] if s == 0 else white(rb)
    flat_sets["untrained seed 100"] = sets["untrained seed 100"][0]
    flat_sets[f"untrained seed 100{WHITE}"] = whitened[f"untrained seed 100{WHITE}"]
    flat_tasks = [dict(name=name, mjj=mjj_b, x=x, perm=perm, mjj_range=MJJ_RANGE, sqrt_s=SQRT_S,
                       hunt_seeds=FLATNESS_SEEDS, n_bins=size["n_bins"], k=size["k"])
                  for name, x in flat_sets.items() for perm in range(FLATNESS_PERMUTATIONS + 1)]
    with ProcessPoolExecutor(args.workers) as ex:
        rows = list(ex.map(hunt_one, tasks))
        flatness = permutation_verdict(list(ex.map(flatness_run, flat_tasks)))
    timing["hunts_s"] = round(time.perf_counter() - t0, 1)

    by = {(r["features"], r["fraction"]): r for r in rows}
    bkg = by[HUNTED, 0.0]
    init_names = [n for n in sets if n.startswith("untrained") and not n.endswith(WHITE)]

    def init_stat(f, key):
        v = [by[n, f][key] for n in init_names if by[n, f][key] is not None]
        return (round(float(np.mean(v)), 3), round(float(np.std(v, ddof=1)), 3)) if len(v) > 1 else (None, None)

    injected = []
    for f in FRACTIONS:
        e = {"name": f"f = {f:g}", "fraction": f, "n_sig": by["representation", f]["n_sig"],
             "n_sig_in_range": by["representation", f]["n_sig_in_range"]}
        for key, label in (("representation", "rep"), (HUNTED, "white"),
                           (f"untrained seed 100{WHITE}", "untrained_white"),
                           ("raw m_J, tau21", "raw"), ("supervised", "sup")):
            e[f"{label}_local_z"] = by[key, f]["max_local_z"]
            e[f"{label}_global_z"] = by[key, f]["global_z"]
        e["untrained_local_z_mean"], e["untrained_local_z_sd"] = init_stat(f, "max_local_z")
        e["untrained_global_z_mean"], e["untrained_global_z_sd"] = init_stat(f, "global_z")
        injected.append(e)
    reach = []
    for name in sets:
        rs = [r for r in rows if r["features"] == name]
        reach.append({"name": name, "f_at_3sigma_local": at_3sigma(rs, "max_local_z"),
                      "f_at_3sigma_global": at_3sigma(rs, "global_z"), "mjj_corr": guard_raw[name]})
    results = {
        "mode": mode, "sizes": size, "generation_seed": args.seed, "mjj_range_gev": MJJ_RANGE,
        "sqrt_s_gev": SQRT_S, "encoder": {"overrides": encoder, **train_info},
        "training_seeds": [info for _, info in trained],
        "background_only": {
            "features": HUNTED, "max_local_z": bkg["max_local_z"],
            "global_z": bkg["global_z"], "global_p": bkg["global_p"],
            "global_from_fit": bool(bkg["global_from_fit"]), "n_eff": bkg["n_eff"],
            "toy_fit_ks_p": bkg["toy_fit_ks_p"], "global_z_full_toys": bkg.get("global_z_full_toys"),
            "n_full_toys": bkg.get("n_full_toys"), "efficiency_flatness_p": bkg["flatness_p"],
            **{k: v for k, v in bkg.items() if k.startswith("flatness_p_eps")},
            "mjj_corr": bkg["mjj_corr"], "n_failed_fits": bkg["n_failed_fits"],
            "val_logloss": bkg["val_logloss"], "val_logloss_ref": bkg["val_logloss_ref"]},
        "background_only_rows": background_rows(rows),
        "flatness": flatness,
        "injected": injected,
        "reach_3sigma": reach,
        "mjj_guard": [{"name": k, "mjj_corr_raw": guard_raw[k],
                       "refused_raw": bool(guard_raw[k] > MAX_MJJ_CORR), "mjj_corr": v,
                       "refused": bool(v > MAX_MJJ_CORR)} for k, v in guard.items()],
        "rows": rows,
        "timing": {**timing, "total_s": round(time.perf_counter() - t_start, 1),
                   "cpu_s": round(cpu_seconds(), 1), "load_average": list(os.getloadavg())},
    }
    write_results(out / "results.json", results, argv)
    print(json.dumps({k: results[k] for k in ("background_only", "flatness",
                                              "injected", "reach_3sigma", "mjj_guard", "timing")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
