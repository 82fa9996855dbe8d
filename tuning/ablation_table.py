"""Turn a finished augmentation-ablation sweep into a table and a plot, next to its references.

    python tuning/ablation_table.py tuning/jetclr_ablation_cpu.yaml [--out docs/ablation]

Reads the sweep's MLflow parent run (from the Tune experiment folder), groups its trials by
augmentation set (named from the views' augmentations: none, translations, rotations,
soft+collinear, all), and reports per set the mean over seeds of the LCT AUC and 1/eps_B at
eps_S = 0.5 with their spread (the standard deviation over seeds; with one seed, the bootstrap
error). References on the same eval_train / eval_test stores: the same encoder untrained (each
trial's ``lct_init_*``), jet mass + N-subjettiness (``baseline_jet_obs_*``), the raw inputs
(``lct_raw_*``) and a supervised encoder of the same size trained here once with early stopping
(the ceiling). Each set's row also carries its final validation LCT (``val_lct_auc``, the
metric the sweep ranks by): a recipe is chosen on that column, never on the test one.
Writes ``ablation.md``, ``ablation.json`` and ``ablation.png`` to ``--out``, the rows with the
command, machine and date to ``--results`` (docs/results/ablation.json, from which
``python -m bench.tables`` makes the docs table), and logs them to the parent run; prints the
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_results  # noqa: E402
from clrdist import tracking  # noqa: E402
from clrdist.config import config_from_dict  # noqa: E402
from clrdist.errors import ClrdistError  # noqa: E402
from clrdist.tune import STATE_FILE, load_sweep  # noqa: E402

# JetCLR (arXiv:2108.04253) Table 2: top tagging, LCT, eps_S = 0.5
PUBLISHED = {"none": (15, 0.905), "translations": (19, 0.916), "rotations": (21, 0.930),
             "soft+collinear": (89, 0.970), "all": (181, 0.980)}
ORDER = ("none", "translations", "rotations", "soft+collinear", "all")


def set_name(views: list) -> str:
    """The published name of an augmentation set, from the first view's augmentation names."""
    names = {a["name"] for a in views[0]} if views else set()
    known = {frozenset(): "none", frozenset({"translate"}): "translations",
             frozenset({"rotate"}): "rotations",
             frozenset({"smear_soft", "collinear_split"}): "soft+collinear",
             frozenset({"rotate", "translate", "smear_soft", "collinear_split"}): "all"}
    return known.get(frozenset(names), "+".join(sorted(names)))


def _mean_err(values: list[float], errors: list[float]) -> tuple[float, float]:
    v = np.asarray(values, float)
    if len(v) > 1:
        return float(v.mean()), float(v.std(ddof=1))
    return float(v[0]), float(errors[0]) if errors and np.isfinite(errors[0]) else float("nan")


def summarise(trials: list[tuple[list, dict]]) -> dict[str, dict]:
    """{set name: {n, auc, auc_err, inv, inv_err}} plus the references, from the finished
    trials' (augment.views, metrics)."""
    groups: dict[str, list[dict]] = {}
    for views, metrics in trials:
        groups.setdefault(set_name(views), []).append(metrics)
    rows: dict[str, dict] = {}

    def row(ms: list[dict], prefix: str) -> dict | None:
        ms = [m for m in ms if f"{prefix}_auc" in m]
        if not ms:
            return None
        auc, auc_err = _mean_err([m[f"{prefix}_auc"] for m in ms],
                                 [m.get(f"{prefix}_auc_std", np.nan) for m in ms])
        inv, inv_err = _mean_err([m[f"{prefix}_inv_eps_b_at_0.5"] for m in ms],
                                 [m.get(f"{prefix}_inv_eps_b_at_0.5_std", np.nan) for m in ms])
        return {"n": len(ms), "auc": auc, "auc_err": auc_err, "inv": inv, "inv_err": inv_err}

    for name in sorted(groups, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        if (r := row(groups[name], "lct")) is not None:
            vals = [m["val_lct_auc"] for m in groups[name] if "val_lct_auc" in m]
            if vals:  # the selection column: the last epoch's validation LCT
                r["val_auc"], r["val_auc_err"] = _mean_err(vals, [np.nan])
            rows[name] = r
    every = [m for ms in groups.values() for m in ms]
    for label, prefix in (("untrained encoder", "lct_init"), ("raw constituents", "lct_raw"),
                          ("jet mass + N-subjettiness (BDT)", "baseline_jet_obs")):
        if (r := row(every, prefix)) is not None:
            rows[label] = r
    return rows


def supervised_reference(cfg) -> dict:
    """A supervised encoder of the trials' architecture on the eval stores (early stopping)."""
    from clrdist.data.store import open_store
    from clrdist.eval.baselines import run_baselines
    from clrdist.factory import build_model, input_transform
    from clrdist.models.encode import Representation, numpy_inputs

    tr = open_store(cfg.data.eval_train_store).read_all()
    te = open_store(cfg.data.eval_test_store).read_all()
    m = run_baselines(tr, te, seed=cfg.seed, which=["supervised"], figures=False,
                      model_factory=lambda: Representation(build_model(cfg.model)),
                      supervised_prepare=lambda p, k: numpy_inputs(p, k, input_transform(cfg))).metrics
    return {"n": 1, "auc": m["baseline_supervised_auc"], "auc_err": float("nan"),
            "inv": m["baseline_supervised_inv_eps_b_at_0.5"], "inv_err": float("nan"),
            "epochs": m["baseline_supervised_epochs"]}


def markdown(rows: dict[str, dict]) -> str:
    out = ["| augmentations | trials | LCT AUC | 1/eps_B (eps_S = 0.5) | published AUC | published 1/eps_B |",
           "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        pub = PUBLISHED.get(name)
        err = lambda e, f: "" if not np.isfinite(e) else f" +- {e:{f}}"  # noqa: E731
        out.append(f"| {name} | {r['n']} | {r['auc']:.4f}{err(r['auc_err'], '.4f')} | "
                   f"{r['inv']:.1f}{err(r['inv_err'], '.1f')} | {pub[1] if pub else ''} | "
                   f"{pub[0] if pub else ''} |")
    return "\n".join(out)


def results_rows(rows: dict[str, dict]) -> list[dict]:
    """Flat rows for docs/results/ablation.json, the published values beside each set."""
    out = []
    for name, r in rows.items():
        pub = PUBLISHED.get(name, (None, None))
        clean = {k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in r.items()}
        out.append({"name": name, **clean, "published_auc": pub[1], "published_inv": pub[0]})
    return out


def plot(rows: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, pub_i, ylabel in ((axes[0], "inv", 0, r"$1/\epsilon_B$ at $\epsilon_S = 0.5$"),
                                   (axes[1], "auc", 1, "AUC")):
        vals = [rows[n][key] for n in names]
        errs = [rows[n][f"{key}_err"] if np.isfinite(rows[n][f"{key}_err"]) else 0 for n in names]
        ax.errorbar(x, vals, yerr=errs, fmt="o", capsize=3, label="clrdist (this machine)")
        pub = [(i, PUBLISHED[n][pub_i]) for i, n in enumerate(names) if n in PUBLISHED]
        if pub:
            ax.plot(*zip(*pub, strict=True), "s", mfc="none", label="JetCLR (published)")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_ylabel(ylabel)
        if key == "inv":
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", help="the sweep YAML that ran")
    ap.add_argument("--out", default="docs/ablation", help="folder for ablation.{md,json,png}")
    ap.add_argument("--results", default="docs/results/ablation.json",
                    help="the rows with command, machine and date, for bench.tables")
    ap.add_argument("--no-supervised", action="store_true", help="skip the supervised ceiling")
    args = ap.parse_args(argv)
    try:
        spec = load_sweep(args.sweep)
        state = Path(spec.storage_path) / spec.name / STATE_FILE
        if not state.is_file():
            raise ClrdistError(f"{state}: no such file; has the sweep {spec.name!r} run here?")
        info = json.loads(state.read_text())
        uri, parent = info["tracking_uri"], info["parent_run_id"]
        trials = [t for t in tracking.child_runs(uri, parent) if t["status"] == "FINISHED"]
        if not trials:
            raise ClrdistError(f"sweep {spec.name!r}: no finished trials in run {parent}")
    except ClrdistError as e:
        print(f"ablation_table: error: {e}", file=sys.stderr)
        return 2
    configs = [tracking.download_config(uri, t["run_id"]) for t in trials]
    rows = summarise([(c["augment"]["views"], t["metrics"]) for c, t in zip(configs, trials, strict=True)])
    if not args.no_supervised:
        cfg = config_from_dict(configs[0], source=f"run {trials[0]['run_id']}",
                               stored=True)
        rows["supervised, same encoder"] = supervised_reference(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows)
    (out / "ablation.md").write_text(table + "\n")
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "ablation.png")
    write_results(args.results, {"sweep": args.sweep, "rows": results_rows(rows)},
                  argv=sys.argv[1:] if argv is None else argv)
    tracking.log_json(uri, parent, rows, "ablation/ablation.json")
    tracking.log_artifact_file(uri, parent, out / "ablation.png", "ablation")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
