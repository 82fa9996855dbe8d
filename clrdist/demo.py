"""``make demo`` / ``clrdist demo``: the whole path of clrdist at small scale, CPU only.

Pythia 8 top/QCD jets (toy jets without pythia8mc, or with --data toy) -> Zarr store -> disjoint train / eval-train / eval-test splits -> 2-worker Ray Train
(DDP, all-gathered NT-Xent) -> linear classifier test on frozen representations -> MLflow,
plus the same linear classifier on the raw constituents for comparison.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from clrdist.config import load_config

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def demo_config(out: Path, *, epochs: int, workers: int, tracking_uri: str):
    """configs/demo.yaml when present (a source checkout), else the built-in defaults."""
    overrides = [
        f"data.train_store={out / 'train.zarr'}",
        f"data.eval_train_store={out / 'eval_train.zarr'}",
        f"data.eval_test_store={out / 'eval_test.zarr'}",
        f"optim.epochs={epochs}",
        f"scaling.num_workers={workers}",
        f"checkpoint.storage_path={out / 'ray'}",
        f"tracking.uri={tracking_uri}",
    ]
    return load_config(DEMO_CONFIG if DEMO_CONFIG.is_file() else None, overrides)


def raw_baseline(train: dict, test: dict, n_particles: int, seed: int):
    """The same linear classifier test on the raw constituents: flattened, pT-ordered, centred
    on the jet (absolute eta, phi would only add noise), pT / 600 GeV."""
    from clrdist.eval.baselines import raw_features
    from clrdist.eval.lct import linear_classifier_test

    def flat(d):
        return raw_features(d["particles"], d["mask"], n_max=n_particles)

    return linear_classifier_test(flat(train), train["label"], flat(test), test["label"], seed=seed)


# Jets per class by data source: Pythia jets cost ~5 ms of CPU each (docs/generation.md), so the
# Pythia demo is smaller; both fit `make demo` in 10 minutes on 2 cores including the install.
DEFAULT_JETS = {"pythia": 6000, "toy": 15000}


def choose_data(data: str) -> tuple[str, str]:
    """("pythia" | "toy", why) for data = "auto" | "pythia" | "toy"."""
    from clrdist.data.generate import pythia_available

    if data == "toy":
        return "toy", "asked for the toy generator"
    if pythia_available():
        return "pythia", "Pythia 8 + FastJet top and QCD jets (pythia8mc is installed)"
    if data == "pythia":
        from clrdist.errors import ClrdistError

        raise ClrdistError("demo --data pythia: pythia8mc is not installed "
                           "(pip install 'clrdist[generation]')")
    return "toy", "pythia8mc is not installed (pip install 'clrdist[generation]'), so toy jets"


def make_jets(source: str, path: Path, n_per_class: int, seed: int, workers: int) -> None:
    if source == "pythia":
        from clrdist.data.generate import generate_store

        generate_store(["top", "qcd"], n_per_class, path, seed=seed, workers=workers,
                       overwrite=True)
    else:
        from clrdist.data.toy import write_toy_store

        write_toy_store(path, n_per_class=n_per_class, seed=seed, overwrite=True)


def run_demo(out_dir: str = "demo_out", n_per_class: int | None = None, epochs: int = 4,
             workers: int = 2, tracking_uri: str = "sqlite:///mlflow.db", seed: int = 0,
             data: str = "auto") -> dict:
    from clrdist import tracking
    from clrdist.data.split import split_store
    from clrdist.data.store import open_store
    from clrdist.train.trainer import ensure_ray, train

    console = Console()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    source, why = choose_data(data)
    n_per_class = n_per_class or DEFAULT_JETS[source]
    jets = out / f"{source}.zarr"
    cfg = demo_config(out, epochs=epochs, workers=workers, tracking_uri=tracking_uri)

    console.rule("[bold]clrdist demo")
    ensure_ray(cfg)  # one local Ray cluster for generation and training
    console.print(f"1/4 jets: {n_per_class} top + {n_per_class} QCD, {why} -> {jets}")
    make_jets(source, jets, n_per_class, seed, workers)
    console.print("2/4 disjoint splits: train 70% / eval-train 15% / eval-test 15%")
    split_store(jets, {"train": 0.7, "eval_train": 0.15, "eval_test": 0.15},
                out_dir=out, seed=seed, overwrite=True)
    console.print(f"3/4 training: {workers} Ray Train workers (DDP, gloo), {epochs} epochs, "
                  f"global batch {cfg.data.batch_size * workers}, NT-Xent tau={cfg.loss.temperature}")
    result = train(cfg)

    console.print("4/4 baseline: the same linear classifier on the raw constituents")
    ev_train = open_store(cfg.data.eval_train_store).read_all()
    ev_test = open_store(cfg.data.eval_test_store).read_all()
    raw = raw_baseline(ev_train, ev_test, cfg.data.n_particles, seed)
    raw_metrics = {f"baseline_raw_{k}": v for k, v in raw.metrics.items()}
    tracking.log_metrics(result.tracking_uri, result.run_id, raw_metrics)

    m = result.metrics
    summary = {
        "run_id": result.run_id,
        "lct_auc": m.get("lct_auc"),
        "lct_inv_eps_b_at_0.5": m.get("lct_inv_eps_b_at_0.5"),
        "raw_lct_auc": raw.metrics.get("lct_auc"),
        "raw_lct_inv_eps_b_at_0.5": raw.metrics.get("lct_inv_eps_b_at_0.5"),
        "data": source,
        "store": str(jets),
        "checkpoint": result.checkpoint_path,
        "tracking_uri": result.tracking_uri,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    table = Table(title="clrdist demo", show_header=False)
    table.add_row("data", f"{source}: {n_per_class} top + {n_per_class} QCD jets")
    table.add_row("MLflow run id", summary["run_id"])
    table.add_row("LCT AUC (representation)", f"{summary['lct_auc']:.4f}")
    table.add_row("LCT 1/eps_B at eps_S=0.5", f"{summary['lct_inv_eps_b_at_0.5']:.1f}")
    table.add_row("LCT AUC (raw constituents)", f"{summary['raw_lct_auc']:.4f}")
    table.add_row("raw 1/eps_B at eps_S=0.5", f"{summary['raw_lct_inv_eps_b_at_0.5']:.1f}")
    table.add_row("stores", str(out))
    table.add_row("checkpoint", summary["checkpoint"])
    table.add_row("MLflow database", result.tracking_uri)
    table.add_row("wall time", f"{summary['seconds']} s")
    console.print(table)
    db = result.tracking_uri
    console.print(f"Browse the run:  mlflow ui --backend-store-uri {db}  (serves on 127.0.0.1:5000)")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
