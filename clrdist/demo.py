"""``make demo`` / ``clrdist demo``: the whole path of clrdist at small scale, CPU only.

Pythia 8 top/QCD jets (toy jets without pythia8mc, or with --data toy) -> Zarr store -> disjoint
train / val / eval-train / eval-test splits -> 2-worker Ray Train (DDP, all-gathered NT-Xent,
validation LCT on val) -> after training, on the same eval-train / eval-test samples: the linear
classifier test of the trained representation, of the same encoder untrained and of the raw
constituents, jet mass + N-subjettiness, EFPs, a supervised encoder of the same size, the
idealised CWoLa scan and NPLM -> MLflow, and a summary table that says whether training beat
the untrained encoder at five init seeds (its verdict compares the trained LCT with their
spread).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from clrdist.cluster import ensure_ray
from clrdist.config import load_config
from clrdist.data.generation import pythia_available
from clrdist.data.toy import write_toy_store
from clrdist.errors import ClrdistError
from clrdist.logs import quiet_console
from clrdist.precision import resolve

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def demo_config(out: Path, *, epochs: int | None, workers: int, tracking_uri: str,
                extra: Sequence[str] = ()):
    """configs/demo.yaml when present (a source checkout), else the built-in defaults; ``extra``:
    more ``key=value`` overrides."""
    overrides = [
        f"data.{name}_store={out / f'{name}.zarr'}" for name in SPLITS
    ] + [*([f"optim.epochs={epochs}"] if epochs else []),
        f"scaling.num_workers={workers}",
        f"checkpoint.storage_path={out / 'ray'}",
        f"tracking.uri={tracking_uri}",
        *extra,
    ]
    return load_config(DEMO_CONFIG if DEMO_CONFIG.is_file() else None, overrides)


# Jets per class by data source: a Pythia jet costs far more CPU than a toy jet (README,
# Performance: generation), so the Pythia demo is smaller; both fit `make demo` in 10 minutes on
# 2 cores including the install.
DEFAULT_JETS = {"pythia": 10000, "toy": 15000}


def choose_data(data: str) -> tuple[str, str]:
    """("pythia" | "toy", why) for data = "auto" | "pythia" | "toy"."""
    if data == "toy":
        return "toy", "asked for the toy generator"
    if pythia_available():
        return "pythia", "Pythia 8 + FastJet top and QCD jets (pythia8mc is installed)"
    if data == "pythia":
        raise ClrdistError("demo --data pythia: pythia8mc is not installed "
                           "(pip install 'clrdist[generation]')")
    return "toy", "pythia8mc is not installed (pip install 'clrdist[generation]'), so toy jets"


def make_jets(source: str, path: Path, n_per_class: int, seed: int, workers: int,
              slots: int) -> None:
    """Top and QCD jets with up to ``slots`` constituents each (room for collinear splits)."""
    if source == "pythia":
        # lazy: Ray (~0.6 s) loads when the demo generates, not when its helpers are imported
        from clrdist.generation_fanout import generate_store

        generate_store(["top", "qcd"], n_per_class, path, seed=seed, workers=workers,
                       n_particles=slots, overwrite=True)
    else:
        write_toy_store(path, n_per_class=n_per_class, seed=seed, n_particles=slots,
                        overwrite=True)


# the evaluation sets are large enough for bootstrap errors of ~0.004 on the LCT AUC
SPLITS = {"train": 0.5, "val": 0.1, "eval_train": 0.2, "eval_test": 0.2}

# (row label, LCT / baseline prefix, reference tag of the searches) of the summary table: the
# representation, then its references on the same eval_train / eval_test samples
ROWS = (
    ("contrastive, trained", "lct", ""),
    ("contrastive, trained", "lct_trained", None),  # over the training seeds (--train-seeds)
    ("same encoder, untrained", "lct_init", "_init"),
    ("raw constituents", "lct_raw", "_raw"),
    ("jet mass + N-subjettiness (BDT)", "baseline_jet_obs", None),
    ("EFPs, degree <= 5 (linear)", "baseline_efp", None),
    # its searches read its representation (<search>_sup_*), of jets including those it trained on
    ("supervised, same encoder, 4/5 of eval_train labels", "baseline_supervised", "_sup"),
    ("supervised ceiling, same encoder, training-store labels", "ceiling_supervised", None),
)


def _err_key(key: str) -> str:
    """The bootstrap (or repeat) error's metric name: ``<key>_std``; the CWoLa scan names it
    before the fraction (``cwola_linear_auc_std_f_0.1``)."""
    head, sep, tail = key.rpartition("_f_")
    return f"{head}_std_f_{tail}" if sep and key.startswith("cwola") else f"{key}_std"


def _cell(m: dict[str, float], key: str, fmt: str) -> str:
    """value +- error (bootstrap, or CWoLa's repeats); for the untrained reference over several
    init seeds, the mean +- the seeds' std and [min, max]."""
    v = m.get(key)
    if v is None:
        return "-"
    if f"{key}_seed_std" in m:
        return (f"{format(v, fmt)} +- {format(m[key + '_seed_std'], fmt)} "
                f"[{format(m[key + '_min'], fmt)}, {format(m[key + '_max'], fmt)}]")
    err = m.get(_err_key(key))
    return format(v, fmt) + (f" +- {format(err, fmt)}" if err is not None else "")


COLUMNS = (  # (header, metric suffix after the row's prefix, format); searches: reference tag
    ("LCT AUC", "auc", ".4f"),
    ("1/eps_B at eps_S=0.5", "inv_eps_b_at_0.5", ".1f"),
    ("CWoLa AUC (f=0.1)", "cwola{tag}_linear_auc_f_0.1", ".3f"),
    ("NPLM median Z (empirical)", "nplm{tag}_z_emp_median", ".2f"),
)


def summary_rows(m: dict[str, float]) -> list[dict[str, str]]:
    """The summary table as rows of formatted cells ({"name": ..., header: cell}), the same for
    the console and for ``summary.json`` (whose ``rows`` the README's table is made from)."""
    rows = []
    for label, prefix, tag in ROWS:
        if f"{prefix}_auc" not in m:
            continue
        n = int(m.get("lct_init_n_seeds", 1))
        row = {"name": label + (f" ({n} init seeds)" if tag == "_init" and n > 1 else "")
               + (f" ({int(m['lct_trained_n_seeds'])} training seeds)"
                  if prefix == "lct_trained" else "")}
        for header, key, fmt in COLUMNS:
            if "{tag}" in key:
                row[header] = "-" if tag is None else _cell(m, key.format(tag=tag), fmt)
            else:
                row[header] = _cell(m, f"{prefix}_{key}", fmt)
        rows.append(row)
    return rows


def summary_table(m: dict[str, float], title: str) -> Table:
    """LCT AUC and 1/eps_B at eps_S = 0.5, the idealised CWoLa AUC (linear, f = 0.1) and the
    NPLM median Z of each row, the untrained one over its init seeds."""
    table = Table(title=title)
    table.add_column("", justify="left")
    for header, _, _ in COLUMNS:
        table.add_column(header, justify="right")
    for row in summary_rows(m):
        table.add_row(*row.values())
    return table


def cwola_line(m: dict[str, float]) -> str | None:
    """The idealised CWoLa AUC (linear) of the representation at f = 0.01, 0.1 and 1, each with
    its repeats' std; None without the scan."""
    keys = [k for k in ("cwola_linear_auc_f_0.01", "cwola_linear_auc_f_0.1",
                        "cwola_linear_auc_f_1") if k in m]
    if not keys:
        return None
    return "CWoLa (idealised, linear): AUC " + ", ".join(
        f"{_cell(m, k, '.3f')} at f = {k.rsplit('_', 1)[1]}" for k in keys)


def nplm_line(m: dict[str, float]) -> str | None:
    """The NPLM median Z of the representation and the raw inputs: the chi2 Z when both are
    calibrated, else the empirical Z (``nplm_z_emp_median``, always there, the table's column);
    None without NPLM. The chi2 line says how it differs from the table's empirical Z."""
    if "nplm_z_emp_median" not in m:
        return None
    chi2 = "nplm_z_chi2_median" in m and ("nplm_raw_z_emp_median" not in m
                                          or "nplm_raw_z_chi2_median" in m)
    key, name = ("z_chi2_median", "chi2") if chi2 else ("z_emp_median", "empirical, as in the table")
    if chi2:
        # lazy: eval.nplm loads scipy and scikit-learn (~2 s), only once NPLM has run
        from clrdist.eval.nplm import z_empirical_max

        n_null = int(m.get("nplm_n_toys_null", 0) + m.get("nplm_n_toys_dof", 0))
        if n_null:
            name += (f"; the table's empirical Z cannot exceed {z_empirical_max(n_null):.2f} "
                     f"with {n_null} null toys")
    def z(prefix: str) -> str:  # the median and its bootstrap error over the signal toys
        err = m.get(f"{prefix}_{key}_std")
        return f"{m.get(f'{prefix}_{key}', float('nan')):.2f}" + \
            (f" +- {err:.2f}" if err is not None else "")

    return f"NPLM median Z ({name}): representation {z('nplm')}, raw inputs {z('nplm_raw')}"


def add_training_seeds(m: dict[str, float], runs: Sequence[Mapping[str, float]]) -> None:
    """Put the LCT of the runs at several training seeds (the demo's run first) into ``m``:
    ``lct_trained_auc`` / ``lct_trained_inv_eps_b_at_0.5`` (mean, ``_seed_std`` ddof 1, ``_min``,
    ``_max``), ``lct_trained_n_seeds`` and ``lct_trained_auc_worst_lower``, the lowest AUC less
    its bootstrap error, which :func:`learned` reads."""
    m["lct_trained_n_seeds"] = float(len(runs))
    for key in ("auc", "inv_eps_b_at_0.5"):
        v = np.array([r[f"lct_{key}"] for r in runs], dtype=np.float64)
        m[f"lct_trained_{key}"] = float(v.mean())
        m[f"lct_trained_{key}_seed_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        m[f"lct_trained_{key}_min"], m[f"lct_trained_{key}_max"] = float(v.min()), float(v.max())
    m["lct_trained_auc_worst_lower"] = min(r["lct_auc"] - r.get("lct_auc_std", 0.0) for r in runs)


def learned(m: dict[str, float]) -> bool:
    """The trained LCT beats every untrained init seed: its AUC less its bootstrap error is above
    the best untrained seed's AUC (no untrained seed passes this: its own AUC less its error is
    below it), at every training seed when there are several (:func:`add_training_seeds`). With
    one init seed, above that seed's AUC plus its bootstrap error."""
    lower = m.get("lct_trained_auc_worst_lower", m["lct_auc"] - m.get("lct_auc_std", 0.0))
    if "lct_init_auc_max" in m and m.get("lct_init_n_seeds", 1) > 1:
        return lower > m["lct_init_auc_max"]
    return lower > m["lct_init_auc"] + m.get("lct_init_auc_std", 0.0)


def verdict(m: dict[str, float], *, markup: bool = True) -> str:
    """One line: the trained LCT against the untrained seeds' distribution (``markup``: with the
    console's colours)."""
    n = int(m.get("lct_init_n_seeds", 1))
    spread = (f"untrained {m['lct_init_auc']:.4f} +- {m.get('lct_init_auc_seed_std', 0):.4f} "
              f"(mean +- std of {n} init seeds, max {m.get('lct_init_auc_max', m['lct_init_auc']):.4f}, "
              f"bootstrap +- {m.get('lct_init_auc_std', 0):.4f})")
    n_train = int(m.get("lct_trained_n_seeds", 1))
    each = f" at each of {n_train} training seeds" if n_train > 1 else ""
    head, colour = ((f"the trained representation beats every untrained initialisation{each}",
                     "green") if learned(m) else
                    (f"the trained representation does NOT beat every untrained "
                     f"initialisation{each}", "red"))
    if markup:
        head = f"[{colour}]{head}[/{colour}]"
    sd = m.get("lct_init_auc_seed_std") or 0.0
    gap = (m["lct_auc"] - m["lct_init_auc"]) / sd if sd > 0 else float("nan")
    trained = f"LCT AUC {m['lct_auc']:.4f} +- {m.get('lct_auc_std', 0):.4f}"
    if n_train > 1:
        trained += (f" (the run above; {n_train} training seeds: "
                    f"{m['lct_trained_auc']:.4f} +- {m['lct_trained_auc_seed_std']:.4f}, min "
                    f"{m['lct_trained_auc_min']:.4f})")
        gap = (m["lct_trained_auc"] - m["lct_init_auc"]) / sd if sd > 0 else float("nan")
    return (f"{head}: {trained} vs {spread}; {gap:.1f} seed standard deviations above the "
            "untrained mean")


# what each training seed's run reports (the first run reports everything)
SEED_METRICS = ("lct_auc", "lct_auc_std", "lct_inv_eps_b_at_0.5", "lct_inv_eps_b_at_0.5_std")

LOG_FILE = "demo.log"  # in out_dir: Ray's, MLflow's and FastJet's output


def run_demo(out_dir: str = "demo_out", n_per_class: int | None = None, epochs: int | None = None,
             workers: int = 2, tracking_uri: str = "sqlite:///mlflow.db", seed: int = 0,
             data: str = "auto", verbose: bool = False, train_seeds: int = 1) -> dict:
    """The demo; its console shows clrdist's output, everything else goes to ``out_dir/demo.log``
    (``verbose``: everything on the console). ``train_seeds`` > 1: the same training at the
    next seeds too, each evaluated with the LCT only; the verdict needs every one of them."""
    if train_seeds < 1:
        raise ClrdistError(f"demo --train-seeds: {train_seeds}; at least 1")
    with quiet_console(Path(out_dir) / LOG_FILE, verbose=verbose) as log:
        return _run_demo(log, out_dir, n_per_class, epochs, workers, tracking_uri, seed, data,
                         train_seeds)


def _run_demo(log, out_dir: str, n_per_class: int | None, epochs: int | None, workers: int,
              tracking_uri: str, seed: int, data: str, train_seeds: int) -> dict:
    # lazy: zarr, torch and MLflow (~3 s) load when the demo runs, not when its helpers are imported
    from clrdist.data.split import split_store
    from clrdist.pipeline import train_and_evaluate

    console = Console()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source, why = choose_data(data)
    n_per_class = n_per_class or DEFAULT_JETS[source]
    jets = out / f"{source}.zarr"
    cfg = demo_config(out, epochs=epochs, workers=workers, tracking_uri=tracking_uri)
    slots = cfg.augment.slots or cfg.data.n_particles

    console.rule("[bold]clrdist demo")
    if log.path:
        console.print(f"Ray, MLflow and FastJet output goes to {log.path} (clrdist -v demo: "
                      "to the console)")
    ensure_ray(cfg.scaling.num_workers * cfg.scaling.cpus_per_worker)  # one local Ray cluster for generation and training
    log.follow_ray()  # Ray workers' output: [clrdist] lines here, the rest to the log file
    console.print(f"1/4 jets: {n_per_class} top + {n_per_class} QCD, {why} -> {jets}")
    make_jets(source, jets, n_per_class, seed, workers, slots)
    console.print("2/4 disjoint splits: " + " / ".join(f"{k} {v:.0%}" for k, v in SPLITS.items()))
    split_store(jets, SPLITS, out_dir=out, seed=seed, overwrite=True)
    console.print(f"3/4 training: {workers} Ray Train workers (DDP, gloo), {cfg.optim.epochs} "
                  f"epochs, global batch {cfg.data.batch_size * workers}, NT-Xent "
                  f"tau={cfg.loss.temperature}; validation LCT every {cfg.eval.every_epochs} epochs; "
                  f"precision {resolve(cfg.scaling.precision, 'cpu').name} "
                  f"(scaling.precision: {cfg.scaling.precision})")
    result = train_and_evaluate(cfg, on_trained=lambda _: console.print(
        "4/4 evaluation (after training, same samples): LCT of the trained encoder, of the "
        f"untrained one at {cfg.eval.init_seeds} init seeds and of the raw inputs, jet mass + "
        "N-subjettiness, EFPs, a supervised encoder, the CWoLa scan, NPLM (each search next to "
        "the untrained encoder, the raw inputs and the supervised encoder)"))

    m = result.metrics
    seed_runs = [{"seed": cfg.seed, "run_id": result.run_id,
                  **{k: m[k] for k in SEED_METRICS if k in m}}]
    for extra_seed in range(cfg.seed + 1, cfg.seed + train_seeds):
        console.print(f"   training seed {extra_seed} ({extra_seed - cfg.seed + 1} of "
                      f"{train_seeds}): the same training, evaluated with the LCT only")
        again = train_and_evaluate(demo_config(
            out, epochs=epochs, workers=workers, tracking_uri=tracking_uri,
            extra=[f"seed={extra_seed}",
                   *(f"eval.{name}=false" for name in cfg.eval.requested() if name != "lct")]))
        seed_runs.append({"seed": extra_seed, "run_id": again.run_id,
                          **{k: again.metrics[k] for k in SEED_METRICS if k in again.metrics}})
    if train_seeds > 1:
        add_training_seeds(m, seed_runs)
    summary = {
        "run_id": result.run_id,
        "training_seeds": seed_runs,
        "data": source,
        "n_per_class": n_per_class,
        "learned": learned(m),
        "rows": summary_rows(m),
        # the lines under the table, as the console shows them (the README's come from here)
        "lines": [{"name": name, "text": text} for name, text in (
            ("verdict", verdict(m, markup=False)), ("CWoLa", cwola_line(m)),
            ("NPLM", nplm_line(m))) if text],
        **{k: v for k, v in sorted(m.items())
           # the physics numbers, not their sample counts (lct_n_train, nplm_n_toys, ...)
           if k.split("_")[0] in ("lct", "baseline", "ceiling", "cwola", "nplm") and "n" not in k.split("_")},
        "store": str(jets),
        "checkpoint": result.checkpoint_path,
        "tracking_uri": result.tracking_uri,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    summary["lines"].append({"name": "wall time", "text": f"{summary['seconds']} s"})
    console.print(summary_table(m, f"clrdist demo: {source}, {n_per_class} top + {n_per_class} "
                                   "QCD jets (eval_test, bootstrap errors)"))
    console.print(verdict(m))
    for line in (cwola_line(m), nplm_line(m)):
        if line:
            console.print(line)
    console.print(f"MLflow run {result.run_id}")
    console.print(f"wall time {summary['seconds']} s; stores in {out}; checkpoint "
                  f"{summary['checkpoint']}")
    console.print(f"Browse the run:  mlflow ui --backend-store-uri {result.tracking_uri}  "
                  "(serves on 127.0.0.1:5000)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
