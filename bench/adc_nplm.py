"""Metzger et al.'s claim measured: NPLM on a contrastive 4-d embedding of ADC2021-like events vs
the raw 57 features vs the same encoder untrained. Writes docs/results/adc_nplm.json and a PNG
per signal (median Z against the injected signal count) in ``--out-dir``.

    python -m bench.adc_nplm --background data/adc_background.zarr --signals data/adc_signals.zarr
        [--config configs/adc2021_dense_masking_cpu.yaml] [--epochs 30] [--supcon]
        [--n-ref 2000] [--n-data 400] [--n-sig 10,30,100,300] [--toys-null 40] [--toys-sig 10]
        [--init-seeds 5] [--no-supervised] [--out-dir bench_out/adc_nplm]
        [--json docs/results/adc_nplm.json]

Steps, all on the same events in one run:

1. The background store (SM mix, label 0) is cut in two halves (it is stored in random order):
   the first trains the encoder, the second is the NPLM background pool. Signal events (labels
   >= 1) are never seen by the self-supervised training. With ``--supervised`` (the default)
   each signal is cut in two at random: one part (``--sup-fraction``) trains that signal's
   supervised reference, the rest is the injection pool of *every* representation.
2. The encoder of ``--config`` (dense 57-96-64-48-4, naive masking, NT-Xent at tau 0.9; with
   ``--supcon`` the SupCon loss with the background's sub-process as the label) trains in this
   process for ``--epochs`` epochs (Adam, linear warm-up).
3. Representations of the pool and the signals: the trained encoder's 4-d output, the raw 57
   model inputs (pT / pt_scale, eta, phi per slot), the untrained encoder for
   ``--init-seeds`` initialisations, and per signal the supervised reference: the same encoder
   (its 4-d output) trained with a linear head on the training-half SM events against that
   signal's fitting part (``clrdist.eval.baselines.train_supervised``, early stopping): what a
   4-d representation of this size does for NPLM when it knows the signal.
4. NPLM (``clrdist.eval.nplm.run_toys``, Gaussian-kernel model, M centres, one kernel width per
   representation; the penalty lam, unless ``--lam``, the smallest that keeps the fitting toys
   chi2-like, ``clrdist.eval.nplm.choose_lambda``, as ``clrdist eval`` does): the chi2's degrees
   of freedom are fitted on one set of reference-only toys and checked (KS) on an independent
   second set; signal-injected toys at each ``--n-sig`` give
   Z = Phi^-1(F_chi2(t; dof)) per toy; the median Z per point.
5. The signal count at median Z = 3 (log-linear interpolation between grid points) per
   representation and signal, with a bootstrap uncertainty (toys resampled, dof refitted), and
   the headline ratio raw / embedding (bootstrap median and 16-84% half-width). Beyond the grid
   the count is reported as a lower bound (``n_sig_z3`` null, ``n_sig_z3_above`` the grid end).
   Where the null toys do not follow the fitted chi2 (KS p on the independent set small), the
   chi2 Z is not to be trusted; ``frac_above_nulls_at_N`` (the share of signal toys whose t
   exceeds every null toy) compares representations without the chi2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_results  # noqa: E402
from clrdist.config import load_config  # noqa: E402
from clrdist.data.store import open_store  # noqa: E402
from clrdist.eval.baselines import train_supervised  # noqa: E402
from clrdist.eval.nplm import calibrate_null, fit_dof, kernel_width, run_toys, z_chi2  # noqa: E402
from clrdist.factory import (  # noqa: E402
    build_encoder,
    build_loss,
    initial_model,
    input_transform,
    supervised_parts,
)
from clrdist.models.encode import model_inputs  # noqa: E402
from clrdist.physics.augment import build_view  # noqa: E402
from clrdist.train.inputs import view_inputs  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "adc2021_dense_masking_cpu.yaml"
Z_TARGET = 3.0
PUBLISHED_RATIO = "> 10"  # Metzger et al., arXiv:2502.15926 (docs/reference.md)


def masked_views(particles, mask, cfg, p: float, value: float, generator: torch.Generator,
                 n_views: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive masking with a sentinel: every number of every *real* object replaced by ``value``
    with probability p (empty slots stay zero), so a masked object is not an absent one."""
    x, m = model_inputs(particles, mask, input_transform(cfg))
    views = []
    for _ in range(n_views):
        hit = (torch.rand(x.shape, generator=generator) < p) & m[..., None]
        views.append(torch.where(hit, torch.full((), value), x))
    return torch.cat(views), torch.cat([m] * n_views)


def train_encoder(cfg, data: dict, *, epochs: int, seed: int, labels: np.ndarray | None,
                  log=print, mask_value: float | None = None) -> torch.nn.Module:
    """The config's encoder trained on ``data`` (a store's read_all()) in this process (with
    the config's anomaly view, when it has one, as the last view: AnomalyCLR)."""
    torch.manual_seed(seed)
    model = initial_model(cfg.model, seed)
    loss_fn = build_loss(cfg.loss)
    views = [build_view(v, cfg.augment.strength, "torch") for v in cfg.augment.views]
    if cfg.augment.anomaly_view:
        views.append(build_view(cfg.augment.anomaly_view, cfg.augment.strength, "torch"))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    B, n = cfg.data.batch_size, len(data["mask"])
    step = 0
    for epoch in range(epochs):
        model.train()
        order, losses = rng.permutation(n), []
        for i in range(0, n - B + 1, B):  # full batches only (BatchNorm, contrastive negatives)
            idx = np.sort(order[i:i + B])
            for g in opt.param_groups:
                g["lr"] = cfg.optim.lr * min(1.0, (step + 1) / max(1, cfg.optim.warmup_steps))
            if mask_value is None:
                x, m = view_inputs(data["particles"][idx], data["mask"][idx], cfg, views, gen)
            else:  # --mask-value: the sentinel masking of masked_views instead of the config's
                x, m = masked_views(data["particles"][idx], data["mask"][idx], cfg, 0.5,
                                    mask_value, gen, len(views))
            _, z = model(x, m)
            lab = None if labels is None else torch.as_tensor(labels[idx], dtype=torch.long)
            loss = loss_fn(*z.chunk(len(views)), labels=lab)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        if epoch % 5 == 0 or epoch == epochs - 1:
            log(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
    return model.eval()


def crossing(n_grid: np.ndarray, z_med: np.ndarray, target: float = Z_TARGET) -> float | None:
    """Signal count where the median Z first reaches ``target`` (log-linear interpolation); None
    when it stays below over the grid; the first grid point if already above there."""
    above = np.flatnonzero(z_med >= target)
    if len(above) == 0:
        return None
    k = int(above[0])
    if k == 0:
        return float(n_grid[0])
    x0, x1 = np.log(n_grid[k - 1]), np.log(n_grid[k])
    y0, y1 = z_med[k - 1], z_med[k]
    return float(np.exp(x0 + (target - y0) * (x1 - x0) / (y1 - y0)))


def nplm_curves(rep_bkg: np.ndarray, rep_sig: dict[int, np.ndarray], *, n_ref: int,
                n_data: int, n_sig: list[int], toys_null: int, toys_sig: int, M: int,
                seed: int, lam: float | None = None) -> dict:
    """Null toys (two independent sets), the dof and its KS check, and per signal the Z of
    every signal-injected toy at every grid point. ``lam`` None: the kernel penalty is chosen
    on the dof-fitting toys (``clrdist.eval.nplm.calibrate_null``, as ``clrdist eval`` does)."""
    z = (rep_bkg - rep_bkg.mean(0)) / np.maximum(rep_bkg.std(0), 1e-12)
    sigma = kernel_width(torch.as_tensor(z[:n_ref]), seed=seed)  # one width for every toy
    kw = dict(n_ref=n_ref, n_data=n_data, model="kernel", M=M, sigma=sigma)
    cal = calibrate_null(rep_bkg, n_toys_dof=toys_null, n_toys_check=toys_null, seed_dof=seed,
                         seed_check=seed + 1, lam=lam, **kw)
    kw["lam"] = cal.lam
    out = {"sigma": float(sigma), "lam": cal.lam, "lam_tried": cal.lam_tried, "dof": cal.dof,
           "t_null_fit": cal.t_dof, "t_null_check": cal.t_check, "ks_pvalue": cal.ks_pvalue,
           "t_sig": {}}
    for lab, sig in rep_sig.items():
        out["t_sig"][lab] = np.stack([
            run_toys(rep_bkg, sig, n_sig=ns, n_toys=toys_sig, seed=seed + 10 + 7 * k + 1000 * lab,
                     **kw)
            for k, ns in enumerate(n_sig)])  # (grid, toys)
    return out


def z3_with_bootstrap(curves: dict, lab: int, n_grid: np.ndarray, n_boot: int, rng
                      ) -> tuple[float | None, np.ndarray, np.ndarray]:
    """(count at median Z = 3, median Z per grid point, bootstrap counts (nan: beyond grid))."""
    t_sig, t0 = curves["t_sig"][lab], curves["t_null_fit"]
    z_med = np.median(z_chi2(t_sig, curves["dof"]), axis=1)
    boots = np.full(n_boot, np.nan)
    for b in range(n_boot):
        dof_b = fit_dof(t0[rng.integers(0, len(t0), len(t0))])
        t_b = t_sig[:, rng.integers(0, t_sig.shape[1], t_sig.shape[1])]
        c = crossing(n_grid, np.median(z_chi2(t_b, dof_b), axis=1))
        boots[b] = np.nan if c is None else c
    return crossing(n_grid, z_med), z_med, boots


def finite_mean(rows: list[np.ndarray]) -> np.ndarray:
    """Per column, the mean of the finite values (NaN where none is: a count beyond the grid)."""
    a = np.asarray(rows, dtype=float)
    ok = np.isfinite(a)
    return np.where(ok.any(0), np.where(ok, a, 0.0).sum(0) / np.maximum(ok.sum(0), 1), np.nan)


def _summary(boots: np.ndarray) -> tuple[float | None, float | None]:
    ok = boots[np.isfinite(boots)]
    if len(ok) < 0.5 * len(boots):
        return None, None
    lo, mid, hi = np.nanpercentile(boots, [16, 50, 84])
    return float(mid), float((hi - lo) / 2)


def plot_signal(path: Path, name: str, n_grid, curves: dict[str, np.ndarray]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for rep, z in curves.items():
        style = dict(color="0.6", lw=0.8, alpha=0.7) if rep.startswith("untrained") else {}
        label = None if rep.startswith("untrained") and rep != "untrained_0" else \
            ("untrained (each init)" if rep.startswith("untrained") else rep)
        ax.plot(n_grid, z, marker="o", ms=3, label=label, **style)
    ax.axhline(Z_TARGET, color="k", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("injected signal events")
    ax.set_ylabel("median Z (NPLM)")
    ax.set_title(name)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--background", required=True, help="store of SM events (label 0)")
    p.add_argument("--signals", required=True, help="store of signal events (labels >= 1)")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--supcon", action="store_true",
                   help="SupCon with the background's sub-process (feature process_id) as label")
    p.add_argument("--mask-value", type=float, default=None,
                   help="mask real objects' numbers with this value (p = 0.5) instead of zero, "
                        "e.g. -5: outside every input's range, so masked != absent")
    p.add_argument("--n-ref", type=int, default=2000)
    p.add_argument("--n-data", type=int, default=400)
    p.add_argument("--n-sig", default="10,30,100,300")
    p.add_argument("--toys-null", type=int, default=40, help="per null set (two sets)")
    p.add_argument("--toys-sig", type=int, default=10, help="per grid point and signal")
    p.add_argument("--M", type=int, default=200, help="kernel centres")
    p.add_argument("--lam", type=float, default=None,
                   help="kernel penalty (default: chosen on the null toys, as clrdist eval does)")
    p.add_argument("--init-seeds", type=int, default=5)
    p.add_argument("--train-seeds", type=int, default=2,
                   help="train the encoder at this many seeds (--seed, --seed + 1, ...): rows "
                        "embedding, embedding_1, ...")
    p.add_argument("--supervised", action=argparse.BooleanOptionalAction, default=True,
                   help="per signal, the same encoder trained with that signal's labels (on "
                        "--sup-fraction of its events; the rest is every row's injection pool)")
    p.add_argument("--sup-fraction", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=200)
    p.add_argument("--out-dir", default="bench_out/adc_nplm")
    p.add_argument("--json", default="docs/results/adc_nplm.json")
    p.add_argument("--tracking-uri", default=None,
                   help="also log the rows, the results file and one median-Z plot per signal "
                        "to this MLflow store (e.g. sqlite:///mlflow.db; experiment adc_nplm)")
    a = p.parse_args(argv)
    if not 0.0 < a.sup_fraction < 1.0:
        p.error(f"--sup-fraction must lie in (0, 1), got {a.sup_fraction}")
    t_start = time.perf_counter()
    torch.set_num_threads(1)
    overrides = ["loss.name=supcon"] if a.supcon else []
    cfg = load_config(a.config, overrides)
    bkg_store, sig_store = open_store(a.background), open_store(a.signals)
    bkg, sig = bkg_store.read_all(), sig_store.read_all()
    half = len(bkg["label"]) // 2
    train = {k: v[:half] for k, v in bkg.items()}
    pool = {k: v[half:] for k, v in bkg.items()}
    names = sig_store.label_names
    sig_labels = sorted(int(x) for x in np.unique(sig["label"]) if x >= 1)
    sig_fit = None
    if a.supervised:  # a seeded random part of every signal for the supervised reference only
        u = np.random.default_rng(a.seed + 77).random(len(sig["label"]))
        sig_fit = {k: v[u < a.sup_fraction] for k, v in sig.items()}
        sig = {k: v[u >= a.sup_fraction] for k, v in sig.items()}
    print(f"train {half} SM events, NPLM pool {len(pool['label'])}, signals (injection pool) "
          + ", ".join(f"{names[s]} {int((sig['label'] == s).sum())}" for s in sig_labels), flush=True)
    labels = None
    if a.supcon:
        labels = train["features"][:, bkg_store.feature_names.index("process_id")].astype(int)
    epochs = a.epochs if a.epochs is not None else cfg.optim.epochs
    t0 = time.perf_counter()
    models = [train_encoder(cfg, train, epochs=epochs, seed=a.seed + i, labels=labels,
                            mask_value=a.mask_value) for i in range(a.train_seeds)]
    t_train = time.perf_counter() - t0
    trained = ["embedding"] + [f"embedding_{i}" for i in range(1, a.train_seeds)]

    def rep_of(encode) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        return encode(pool), {s: encode({k: v[sig["label"] == s] for k, v in sig.items()})
                              for s in sig_labels}

    def raw(d: dict) -> np.ndarray:
        x, _ = model_inputs(d["particles"], d["mask"], input_transform(cfg))
        return x.reshape(len(x), -1).numpy().astype(np.float64)

    # (row name, background pool rep, {signal: its rep}); supervised: one encoder per signal
    reps = [(name, *rep_of(build_encoder(m, cfg))) for name, m in zip(trained, models, strict=True)]
    reps.append(("raw", *rep_of(raw)))
    for s in range(a.init_seeds):
        reps.append((f"untrained_{s}",
                     *rep_of(build_encoder(initial_model(cfg.model, 1000 + s), cfg))))
    t0 = time.perf_counter()
    sup_info = {}
    if sig_fit is not None:
        factory, prepare = supervised_parts(cfg)
        for s in sig_labels:
            fit_set = {k: np.concatenate([train[k], sig_fit[k][sig_fit["label"] == s]])
                       for k in ("particles", "mask", "label")}
            fit = train_supervised(fit_set, factory, seed=a.seed, prepare=prepare)
            sup_info[names[s]] = {k: float(v) for k, v in fit.info.items()}
            rb, rs = rep_of(fit.encode)
            reps.append(("supervised", rb, {s: rs[s]}))
            print(f"supervised / {names[s]}: {int((sig_fit['label'] == s).sum())} signal events, "
                  f"best epoch {fit.info.get('best_epoch')}", flush=True)
    t_sup = time.perf_counter() - t0
    n_grid = np.array([int(x) for x in a.n_sig.split(",")])
    rng = np.random.default_rng(a.seed)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, z_curves, boots_by = [], {s: {} for s in sig_labels}, {}
    t0 = time.perf_counter()
    for rep_name, rb, rs in reps:
        c = nplm_curves(rb, rs, n_ref=a.n_ref, n_data=a.n_data, n_sig=list(n_grid),
                        toys_null=a.toys_null, toys_sig=a.toys_sig, M=a.M, seed=a.seed,
                        lam=a.lam)
        tried = ", ".join(f"{k:g}: KS {ks:.3f} var/2dof {v:.2f}"
                          for k, (ks, v) in c["lam_tried"].items())
        print(f"{rep_name}: lam {c['lam']:g} ({tried}), dof {c['dof']:.1f}, KS p (independent "
              f"null toys) {c['ks_pvalue']:.3f}", flush=True)
        t_null_max = max(c["t_null_fit"].max(), c["t_null_check"].max())
        for s in rs:
            n3, z_med, boots = z3_with_bootstrap(c, s, n_grid, a.bootstrap, rng)
            z_curves[s][rep_name] = z_med
            boots_by[(rep_name, s)] = boots
            mid, err = _summary(boots)
            rows.append({"name": f"{rep_name} / {names[s]}", "representation": rep_name,
                         "signal": names[s], "dim": int(rb.shape[1]), "lam": c["lam"],
                         # every penalty tried: KS p of its fitting toys, var t / 2 dof (chi2: 1)
                         "lam_tried": {f"{k:g}": [round(ks, 4), round(v, 2)]
                                       for k, (ks, v) in c["lam_tried"].items()},
                         "dof": round(c["dof"], 2),
                         "ks_pvalue_independent": round(c["ks_pvalue"], 4),
                         "n_sig_z3": None if n3 is None else round(n3, 1),
                         "n_sig_z3_err": None if err is None else round(err, 1),
                         "n_sig_z3_above": None if n3 is not None else int(n_grid[-1]),
                         **{f"z_median_at_{n}": round(float(z), 2) for n, z in zip(n_grid, z_med, strict=True)},
                         # calibration-free: share of signal toys above every null toy (both sets)
                         **{f"frac_above_nulls_at_{n}": round(float(np.mean(t > t_null_max)), 3)
                            for n, t in zip(n_grid, c["t_sig"][s], strict=True)}})
            print(f"  {names[s]}: median Z {np.round(z_med, 2).tolist()} -> n(Z=3) "
                  f"{n3 if n3 is None else round(n3, 1)} +- {err}", flush=True)
    t_nplm = time.perf_counter() - t0
    # the headline, raw / embedding (each training seed), next to raw / untrained (the mean over
    # the inits) and raw / supervised (the label-trained reference)
    for s in sig_labels:
        refs = [*trained, *(["untrained"] if a.init_seeds else []),
                *(["supervised"] if sig_fit is not None else [])]
        for ref in refs:
            if ref != "untrained":
                b_ref = boots_by[(ref, s)]
            else:
                b_ref = finite_mean([boots_by[(f"untrained_{i}", s)] for i in range(a.init_seeds)])
            ratio = boots_by[("raw", s)] / b_ref
            mid, err = _summary(ratio)
            row = {"name": f"ratio raw / {ref} / {names[s]}", "representation": f"raw / {ref}",
                   "signal": names[s], "ratio": None if mid is None else round(mid, 2),
                   "ratio_err": None if err is None else round(err, 2)}
            if ref in trained:  # the published claim, on the rows it is about
                row["published"] = PUBLISHED_RATIO
            rows.append(row)
        plot_signal(out_dir / f"nplm_z_{names[s]}.png", names[s], n_grid, z_curves[s])
    result = {"config": a.config, "loss": cfg.loss.name, "epochs": epochs,
              "mask_value": a.mask_value,
              "train_events": half, "pool_events": int(len(pool["label"])),
              "n_ref": a.n_ref, "n_data": a.n_data, "M": a.M, "toys_null_per_set": a.toys_null,
              "toys_sig": a.toys_sig, "init_seeds": a.init_seeds,
              "train_seeds": a.train_seeds, "train_s": round(t_train, 1), "nplm_s": round(t_nplm, 1),
              "supervised": a.supervised, "sup_fraction": a.sup_fraction if a.supervised else None,
              "supervised_fits": sup_info, "supervised_s": round(t_sup, 1),
              "signal_pool_events": {names[s]: int((sig["label"] == s).sum()) for s in sig_labels},
              "total_s": round(time.perf_counter() - t_start, 1),
              "load_avg_1m": round(os.getloadavg()[0], 2),
              "published": f"Metzger et al. arXiv:2502.15926: raw / embedding {PUBLISHED_RATIO} (the "
                           "embedding needs more than 10x less signal than the raw 57 features "
                           "for the same NPLM significance)",
              "rows": rows}
    write_results(a.json, result, argv)
    print(f"wrote {a.json} and {out_dir}/nplm_z_*.png", flush=True)
    if a.tracking_uri:
        run_id = log_to_mlflow(a.tracking_uri, result, a.json,
                               [out_dir / f"nplm_z_{names[s]}.png" for s in sig_labels])
        print(f"MLflow run {run_id} in {a.tracking_uri} (experiment adc_nplm)", flush=True)
    return result


def metric_key(name: str) -> str:
    """A row's name as an MLflow metric key: 'raw / embedding / Ato4l' -> 'raw_embedding.Ato4l'."""
    *rep, signal = name.split(" / ")
    return "_".join(r.replace(" ", "_") for r in rep) + "." + signal


def log_to_mlflow(uri: str, result: dict, results_file: str, plots: list[Path]) -> str:
    """One MLflow run: the sizes as params, every row's n(Z=3) / ratio (with errors) and KS p
    as metrics, the results file and the per-signal median-Z plots as artifacts."""
    from clrdist import tracking

    params = {k: result[k] for k in ("config", "loss", "epochs", "mask_value", "train_events",
                                     "pool_events", "n_ref", "n_data", "M", "toys_null_per_set",
                                     "toys_sig", "init_seeds")}
    run_id = tracking.start_run(uri, "adc_nplm", params,
                                run_name=f"adc_nplm-{result['loss']}-{result['epochs']}ep")
    metrics = {}
    for row in result["rows"]:
        key = metric_key(row["name"])
        for field in ("n_sig_z3", "n_sig_z3_err", "ratio", "ratio_err", "lam",
                      "ks_pvalue_independent"):
            if row.get(field) is not None:
                metrics[f"{field}.{key}"] = float(row[field])
    tracking.log_metrics(uri, run_id, metrics)
    tracking.log_artifact_file(uri, run_id, results_file)
    for plot in plots:
        tracking.log_artifact_file(uri, run_id, plot, "figures")
    tracking.end_run(uri, run_id)
    return run_id


if __name__ == "__main__":
    main()
