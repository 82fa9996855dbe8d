"""Glue between a trained checkpoint, the evaluation stores and ``clrdist.eval``.

``evaluate_checkpoint`` loads the model, encodes the labelled evaluation stores (representations,
not projection-head outputs) and runs the requested evaluations; ``evaluate_run`` does the same
for an MLflow run id and logs the results into that run (what ``clrdist eval RUN_ID`` does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clrdist import tracking
from clrdist.config import EVALUATIONS, ConfigError, RunConfig
from clrdist.data.store import SampleStore, StoreError, open_store


def _units(store: SampleStore) -> set[tuple]:
    """What a store's samples were made from, as comparable identifiers: two stores that share
    no identifier cannot share a sample (splits of one parent are compared by index instead).

    Generated stores: one identifier per shard, (process, settings hash, Pythia seed): shards
    equal in all three make the same events whatever the store, selection or detector. Converted
    public files: their content hashes. Anything else (toy stores, generated stores from before
    per-shard provenance): the generator and its master seed."""
    prov = store.attrs.get("provenance", {})
    if prov.get("shards"):
        return {("shard", s["process"], s["settings_sha256"], int(s["pythia_seed"]))
                for s in prov["shards"]}
    if prov.get("sources"):
        return {("sha256", src["sha256"]) for src in prov["sources"]}
    return {("seed", str(prov.get("generator") or prov.get("source")), str(prov.get("seed")))}


def _describe(unit: tuple) -> str:
    if unit[0] == "shard":
        return f"{unit[1]} shard with Pythia seed {unit[3]} and the same settings"
    if unit[0] == "sha256":
        return f"source file sha256:{unit[1][:16]}..."
    return f"generator {unit[1]} with seed {unit[2]}"


def check_held_out(train_store: str | SampleStore, *eval_stores: str | SampleStore) -> None:
    """Refuse stores that may share samples, pairwise over training and evaluation stores.

    Splits of one parent (``clrdist data split``) are checked sample by sample from their
    recorded indices, whatever the other stores are. Any other pair must be made from
    different shards / files / seeds (:func:`_units`): e.g. a training store generated with
    ``qcd --seed 0`` and evaluation splits of ``qcd top --seed 7`` pass, while ``qcd --seed 0``
    against ``top qcd --seed 0`` (the same QCD shards) is refused.
    """
    from clrdist.data.split import check_disjoint

    stores = [s if isinstance(s, SampleStore) else open_store(s)
              for s in (train_store, *eval_stores)]
    parents = [(s.attrs.get("provenance", {}).get("split") or {}).get("parent_content_sha256")
               for s in stores]
    for parent in {p for p in parents if p}:
        group = [s for s, p in zip(stores, parents, strict=True) if p == parent]
        if len(group) > 1:
            check_disjoint(*group)
    for i, a in enumerate(stores):
        for j in range(i + 1, len(stores)):
            b = stores[j]
            if parents[i] and parents[i] == parents[j]:
                continue  # checked by index above
            common = _units(a) & _units(b)
            if common:
                raise StoreError(
                    f"{b.path}: cannot prove it is disjoint from {a.path} (same source: "
                    f"{_describe(min(common))}); make held-out stores with `clrdist data split`")


def collision_energy(*stores: SampleStore) -> float | None:
    """sqrt(s) in GeV recorded by the stores (provenance.ecm), None when none records it;
    refuses stores that record different energies."""
    found = {s.path: s.attrs.get("provenance", {}).get("ecm") for s in stores}
    values = {float(v) for v in found.values() if v is not None}
    if len(values) > 1:
        raise StoreError("evaluation stores record different collision energies: "
                         + ", ".join(f"{p} {v}" for p, v in found.items()))
    return values.pop() if values else None


def check_final_stores(cfg: RunConfig) -> tuple[SampleStore, SampleStore]:
    """The (eval_train, eval_test) stores of the final evaluation, after refusing a test store
    that is, or may share samples with, the validation store (Tune selected on it), the
    training store or eval_train."""
    d = cfg.data
    if not (d.eval_train_store and d.eval_test_store):
        raise ConfigError("data.eval_train_store / data.eval_test_store: both are needed to evaluate")
    if d.val_store and Path(d.val_store).resolve() == Path(d.eval_test_store).resolve():
        raise ConfigError(f"data.eval_test_store: {d.eval_test_store} is the validation store "
                          "(data.val_store); the final numbers need a test store apart from it")
    store, test_store = open_store(d.eval_train_store), open_store(d.eval_test_store)
    check_held_out(d.train_store, store, test_store, *([d.val_store] if d.val_store else []))
    return store, test_store


def evaluate_checkpoint(checkpoint_path: str, which: set[str], *, cfg: RunConfig | None = None,
                        options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the evaluations in ``which`` on the eval stores of ``cfg`` (default: the checkpoint's)."""
    from clrdist.eval.runner import run_evaluations
    from clrdist.models import initial_model
    from clrdist.train.checkpoint import load_model, make_encoder

    unknown = set(which) - set(EVALUATIONS)
    if unknown:
        raise ConfigError(f"eval: unknown evaluation(s) {sorted(unknown)}; known: {list(EVALUATIONS)}")
    model, trained_cfg = load_model(checkpoint_path)
    cfg = cfg or trained_cfg
    store, test_store = check_final_stores(cfg)  # the test pair only, never the validation store
    limit = cfg.eval.lct_max_samples
    train_data = store.read_all(max_samples=limit)
    test_data = test_store.read_all(max_samples=limit)
    encode = make_encoder(model, trained_cfg)
    with torch.random.fork_rng():  # the untrained reference: the same architecture and seed
        untrained = initial_model(trained_cfg.model, trained_cfg.seed)
    opts: dict[str, Any] = {"seed": cfg.seed, "feature_names": store.feature_names,
                            "kind": store.kind, "n_particles": trained_cfg.data.n_particles,
                            "init_encode": make_encoder(untrained, trained_cfg),
                            "model_factory": lambda: _Representation(trained_cfg)}
    opts["ecm"] = collision_energy(store, test_store)  # the bump hunt's sqrt(s)
    opts["label_names"] = store.label_names  # per-signal metrics of nae / images / mimic / orca
    if trained_cfg.loss.name == "orca":  # ORCA's head is its classifier over known + novel classes
        opts["head"] = lambda rep: _head_probabilities(model, rep)
    for name, kwargs in cfg.eval.options.items():  # per-evaluation keyword arguments
        opts[name] = dict(kwargs)
    opts["baselines"] = {"supervised_prepare": lambda p, m: _prepare(p, m, trained_cfg),
                         **opts.get("baselines", {})}
    opts["orca"] = {"known": trained_cfg.loss.known_classes, **opts.get("orca", {})}
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


@torch.no_grad()
def _head_probabilities(model: torch.nn.Module, rep) -> Any:
    """softmax of the projection head on representations (n, D) -> (n, K) numpy."""
    return torch.softmax(model.head(torch.as_tensor(rep, dtype=torch.float32)), 1).numpy()


def _prepare(particles, mask, cfg: RunConfig):
    """The run's own input transform, as numpy arrays (for the supervised baseline)."""
    from clrdist.train.inputs import model_inputs

    x, m = model_inputs(particles, mask, cfg)
    return x.numpy(), m.numpy()


def evaluate_run(uri: str, run_id: str, which: set[str], *, latest: bool = False) -> dict[str, Any]:
    """Evaluate the checkpoint recorded in an MLflow run and log the results into that run;
    ``latest``: the newest checkpoint in the run's directory (an unfinished run's)."""
    from clrdist.config import config_from_dict
    from clrdist.train.checkpoint import latest_checkpoint

    run = tracking.get_run(uri, run_id)
    ckpt = run["tags"].get("clrdist.checkpoint")
    if latest or not ckpt:
        ray_dir = run["tags"].get("clrdist.ray_run_dir")
        found = latest_checkpoint(ray_dir) if ray_dir else None
        if not latest:
            raise ConfigError(f"run {run_id}: no final checkpoint (status {run['status']}); "
                              + (f"`clrdist eval {run_id} --latest` evaluates its latest one "
                                 f"(step {found[1]['step']})" if found else "and none on disk"))
        if found is None:
            raise ConfigError(f"run {run_id}: no checkpoint under {ray_dir or '(no clrdist.ray_run_dir tag)'}")
        ckpt = str(found[0])
        tracking.set_tags(uri, run_id, {"clrdist.evaluated_checkpoint": ckpt})
    cfg = config_from_dict(tracking.download_config(uri, run_id), source=f"run {run_id}")
    results = evaluate_checkpoint(ckpt, which, cfg=cfg)
    tracking.log_eval(uri, run_id, results)
    return results
