"""Glue between a trained checkpoint, the evaluation stores and ``clrdist.eval``.

``evaluate_checkpoint`` loads the model, encodes the labelled evaluation stores (representations,
not projection-head outputs) and runs the requested evaluations; ``evaluate_run`` does the same
for an MLflow run id and logs the results into that run (what ``clrdist eval RUN_ID`` does).
"""

from __future__ import annotations

from typing import Any

import torch

from clrdist import tracking
from clrdist.config import EVALUATIONS, ConfigError, RunConfig
from clrdist.data.store import SampleStore, StoreError, open_store


def _sources(store: SampleStore) -> set[str]:
    """What a store's samples were made from, as comparable identifiers."""
    prov = store.attrs.get("provenance", {})
    if prov.get("sources"):  # converted public files: their content hashes
        return {f"sha256:{src['sha256']}" for src in prov["sources"]}
    keys = ("source", "generator", "processes", "seed")  # generated or toy: generator + seed
    return {"generated:" + ":".join(str(prov.get(k)) for k in keys)}


def check_held_out(train_store: str | SampleStore, *eval_stores: str | SampleStore) -> None:
    """Refuse evaluation stores that may share samples with each other or with training.

    Splits of one parent are checked sample by sample from their recorded indices; otherwise
    the stores must come from different sources (different files, or generator seeds).
    """
    from clrdist.data.split import check_disjoint

    stores = [s if isinstance(s, SampleStore) else open_store(s)
              for s in (train_store, *eval_stores)]
    splits = [s.attrs.get("provenance", {}).get("split") for s in stores]
    if all(splits) and len({r["parent_content_sha256"] for r in splits}) == 1:
        check_disjoint(*stores)
        return
    for i, a in enumerate(stores):
        for b in stores[i + 1:]:
            common = _sources(a) & _sources(b)
            if common:
                raise StoreError(
                    f"{b.path}: cannot prove it is disjoint from {a.path} (same source "
                    f"{sorted(common)[0]}); make held-out stores with `clrdist data split`")


def evaluate_checkpoint(checkpoint_path: str, which: set[str], *, cfg: RunConfig | None = None,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the evaluations in ``which`` on the eval stores of ``cfg`` (default: the checkpoint's)."""
    from clrdist.eval.runner import run_evaluations
    from clrdist.train.checkpoint import load_model, make_encoder

    unknown = set(which) - set(EVALUATIONS)
    if unknown:
        raise ConfigError(f"eval: unknown evaluation(s) {sorted(unknown)}; known: {list(EVALUATIONS)}")
    model, trained_cfg = load_model(checkpoint_path)
    cfg = cfg or trained_cfg
    if not (cfg.data.eval_train_store and cfg.data.eval_test_store):
        raise ConfigError("data.eval_train_store / data.eval_test_store: both are needed to evaluate")
    store, test_store = open_store(cfg.data.eval_train_store), open_store(cfg.data.eval_test_store)
    check_held_out(cfg.data.train_store, store, test_store)
    limit = cfg.eval.lct_max_samples
    train_data = store.read_all(max_samples=limit)
    test_data = test_store.read_all(max_samples=limit)
    encode = make_encoder(model, trained_cfg)
    opts: dict[str, Any] = {"seed": cfg.seed, "feature_names": store.feature_names,
                            "kind": store.kind,
                            "model_factory": lambda: _Representation(trained_cfg)}
    for name, kwargs in cfg.eval.options.items():  # per-evaluation keyword arguments
        opts[name] = dict(kwargs)
    opts["baselines"] = {"supervised_prepare": lambda p, m: _prepare(p, m, trained_cfg),
                         **opts.get("baselines", {})}
    opts.update(options or {})
    return run_evaluations(encode, train_data=train_data, test_data=test_data, which=set(which),
                           options=opts)


class _Representation(torch.nn.Module):
    """A fresh encoder of the trained run's size, ``(x, mask) -> representation``: the
    supervised baseline trains it on the labels."""

    def __init__(self, cfg: RunConfig):
        from clrdist.models import build_model

        super().__init__()
        self.model = build_model(cfg.model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.represent(x, mask)


def _prepare(particles, mask, cfg: RunConfig):
    """The run's own input transform, as numpy arrays (for the supervised baseline)."""
    from clrdist.train.inputs import model_inputs

    x, m = model_inputs(particles, mask, cfg)
    return x.numpy(), m.numpy()


def evaluate_run(uri: str, run_id: str, which: set[str]) -> dict[str, Any]:
    """Evaluate the checkpoint recorded in an MLflow run and log the results into that run."""
    from clrdist.config import config_from_dict

    run = tracking.get_run(uri, run_id)
    ckpt = run["tags"].get("clrdist.checkpoint")
    if not ckpt:
        raise ConfigError(f"run {run_id}: has no clrdist.checkpoint tag (did training finish?)")
    cfg = config_from_dict(tracking.download_config(uri, run_id), source=f"run {run_id}")
    results = evaluate_checkpoint(ckpt, which, cfg=cfg)
    tracking.log_eval(uri, run_id, results)
    return results
