"""A trained model on its run's evaluation stores: the post-training evaluation.

The application's side of :mod:`clrdist.eval`: the config says which stores, encoders and
options; the library runs the evaluations on arrays. ``evaluate_trained(model, trained_cfg,
which)`` reads the labelled eval_train / eval_test stores (after
:func:`clrdist.eval_checks.check_final_stores`), encodes them into representations
(not projection-head outputs) and runs the evaluations in ``which`` through
:func:`clrdist.eval.runner.run_evaluations`, next to the same architecture untrained.
``eval.device`` (auto: the GPU when there is one) is where the encoders run and where the
evaluations that fit torch models (NPLM, anomaly AE, NAE, jet images, mimickers' AE) fit them.
``clrdist.pipeline`` loads the model from a checkpoint and logs the results into the MLflow run.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.data.store import SampleStore, StoreError, open_store
from clrdist.eval.held_out import check_labelled
from clrdist.eval.metrics import EvalResult
from clrdist.eval.registry import check_names
from clrdist.eval.runner import Context, run_evaluations
from clrdist.eval_checks import check_final_stores
from clrdist.factory import build_encoder, build_model, initial_model, supervised_parts
from clrdist.models.encode import Representation, resolve_device

# evaluations that fit torch models and take a ``device`` option
DEVICE_EVALUATIONS = ("nplm", "anomaly", "nae", "images", "mimic")
ENCODE_BATCH = 8192  # samples per encode call on a GPU (the CPU keeps the runner's default)


def collision_energy(*stores: SampleStore) -> float | None:
    """sqrt(s) in GeV recorded by the stores (provenance.ecm), None when none records it;
    refuses stores that record different energies."""
    found = {s.path: s.attrs.get("provenance", {}).get("ecm") for s in stores}
    values = {float(v) for v in found.values() if v is not None}
    if len(values) > 1:
        raise StoreError("evaluation stores record different collision energies: "
                         + ", ".join(f"{p} {v}" for p, v in found.items()))
    return values.pop() if values else None


def evaluate_trained(model: torch.nn.Module, trained_cfg: RunConfig, which: set[str], *,
                     cfg: RunConfig | None = None) -> dict[str, EvalResult]:
    """Run the evaluations in ``which`` on ``model`` (trained with ``trained_cfg``: its input
    transform, architecture and seed), on the evaluation stores and with the ``eval.options``
    of ``cfg`` (default: ``trained_cfg``). Returns ``{evaluation name: EvalResult}``."""
    check_names(which)
    cfg = cfg or trained_cfg
    store, test_store = check_final_stores(cfg)  # the test pair only, never the validation store
    limit = cfg.eval.lct_max_samples
    train_data = store.read_all(max_samples=limit)
    test_data = test_store.read_all(max_samples=limit)
    # the untrained reference: the same architecture at the run's seed and the next ones
    seeds = [trained_cfg.seed + i for i in range(cfg.eval.init_seeds)]
    with torch.random.fork_rng():
        untrained = [initial_model(trained_cfg.model, s) for s in seeds]
    device = resolve_device(cfg.eval.device)  # the GPU when there is one (eval.device: auto)
    model_factory, supervised_prepare = supervised_parts(trained_cfg)
    context = Context(
        batch_size=ENCODE_BATCH if device.type != "cpu" else Context.batch_size,
        seed=cfg.seed, feature_names=store.feature_names, kind=store.kind,
        label_names=store.label_names,  # per-signal metrics of lct / anomaly / nae / ...
        n_particles=trained_cfg.data.n_particles,
        ecm=collision_energy(store, test_store),  # the bump hunt's sqrt(s)
        init_encoders=[build_encoder(m, trained_cfg, device=device) for m in untrained],
        init_seeds=seeds,
        # the supervised baseline: a fresh encoder of the run's size on the run's inputs
        model_factory=model_factory, supervised_prepare=supervised_prepare,
        device=str(device),  # the supervised encoder, the ceiling and the fine-tuning train there
        known_classes=getattr(trained_cfg.loss, "known_classes", None))  # ORCA's
    if which & {"ceiling", "finetune"}:  # the labels of the jets the encoder was trained on
        _label_stores(context, model, trained_cfg, cfg)
    if trained_cfg.loss.name == "orca":  # ORCA's head is its classifier over known + novel classes
        context.head = lambda rep: _head_probabilities(model, rep)
        context.init_heads = [lambda rep, m=m: _head_probabilities(m, rep) for m in untrained]
    return run_evaluations(build_encoder(model, trained_cfg, device=device),
                           train_data=train_data, test_data=test_data, which=set(which),
                           context=context, options=on_device(cfg.eval.options, which, device))


def on_device(options: Mapping[str, Mapping[str, Any]], which: Iterable[str],
              device: torch.device) -> dict[str, dict[str, Any]]:
    """``eval.options`` with ``device`` set for the evaluations in ``which`` that fit torch
    models (:data:`DEVICE_EVALUATIONS`) unless the options name one; unchanged on the CPU."""
    out = {name: dict(kw) for name, kw in options.items()}
    if device.type != "cpu":
        for name in set(which) & set(DEVICE_EVALUATIONS):
            out.setdefault(name, {}).setdefault("device", str(device))
    return out


def _label_stores(context: Context, model: torch.nn.Module, trained_cfg: RunConfig,
                  cfg: RunConfig) -> None:
    """The training store's labelled jets, the validation store (early stopping) and a fresh
    copy of the trained encoder, for the ceiling and the fine-tuning."""
    for key in ("train_store", "val_store"):
        if not getattr(cfg.data, key):
            raise StoreError(f"data.{key}: the ceiling and --finetune need it (labelled)")
        check_labelled(getattr(cfg.data, key), f"data.{key}")
    context.label_train_data = open_store(cfg.data.train_store).read_all()
    context.val_data = open_store(cfg.data.val_store).read_all()

    def pretrained() -> Representation:
        # a fresh encoder is built first only for its draws from torch's generator, which the
        # fine-tuning's head and dropout then continue from (the recorded numbers depend on it)
        rep = Representation(build_model(trained_cfg.model))
        rep.model = copy.deepcopy(model).cpu().train()  # label_efficiency moves it to its device
        return rep
    context.pretrained = pretrained


@torch.no_grad()
def _head_probabilities(model: torch.nn.Module, rep: np.ndarray) -> Any:
    """softmax of the projection head on representations (n, D) -> (n, K) numpy."""
    dev = next(model.head.parameters()).device
    probs = torch.softmax(model.head(torch.as_tensor(rep, dtype=torch.float32, device=dev)), 1)
    return probs.cpu().numpy()
