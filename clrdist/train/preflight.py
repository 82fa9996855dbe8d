"""Preflight: everything a training can check before any cluster or run starts (stores valid
and sane, evaluation stores labelled and held out, components and their parameters, engine,
tracking store answering and writable, RAY_ADDRESS answering Ray's handshake), so a bad config
costs no cluster resources and fails in one line naming the key.
"""

from __future__ import annotations

import inspect

from clrdist import tracking
from clrdist.cluster import ClusterError, check_ray_address
from clrdist.config import ConfigError, RunConfig
from clrdist.data.store import StoreError, check_sample_sanity, open_store, verify_store
from clrdist.eval_checks import check_evaluation_stores
from clrdist.factory import build_loss, build_model
from clrdist.physics import kernel
from clrdist.physics.augment import build_view, get_augmentation


def _open(path: str, key: str):
    """open_store, with the config key in the message."""
    try:
        return open_store(path)
    except StoreError as e:
        raise StoreError(f"{key}: {e}") from None


def preflight(cfg: RunConfig, *, final_evaluation: bool = False) -> None:
    """Reject what would fail on the cluster anyway, before any resource is started: the stores
    (a sample of the training store's shards re-checksummed and its samples sanity-checked), the
    evaluation stores (labelled, both classes, held out: the validation pair, and with
    ``final_evaluation`` the pair the evaluations after training read), the components, the
    engine, the tracking store (answering within seconds) and RAY_ADDRESS (reachable)."""
    store = _open(cfg.data.train_store, "data.train_store")
    need = cfg.data.batch_size * cfg.scaling.num_workers
    if store.n < need:
        raise ConfigError(
            f"data.train_store: {cfg.data.train_store} has {store.n} samples, fewer than one global "
            f"batch (data.batch_size {cfg.data.batch_size} x scaling.num_workers "
            f"{cfg.scaling.num_workers} = {need})")
    for key, want in (("data.n_particles", cfg.data.n_particles), ("augment.slots", cfg.augment.slots)):
        if want is not None and want > store.n_particles:
            raise ConfigError(f"{key}: {want} exceeds the {store.n_particles} particle slots of "
                              f"{cfg.data.train_store}")
    check_train_sample(store)
    d = cfg.data
    for key in ("eval_train_store", "eval_test_store", "val_store"):
        path = getattr(d, key)
        if path is not None:
            _open(path, f"data.{key}")
    final = final_evaluation and cfg.eval.requested() and d.eval_train_store and d.eval_test_store
    check_evaluation_stores(cfg, final=bool(final))
    check_components(cfg)
    if cfg.scaling.engine == "deepspeed":
        try:
            # lazy: deepspeed is optional (the deepspeed extra)
            import deepspeed  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"scaling.engine: deepspeed is not importable ({e}); "
                              "install clrdist[deepspeed]") from None
    tracking.check_uri(cfg.tracking.uri)
    try:
        check_ray_address()
    except ClusterError as e:
        raise ConfigError(str(e)) from None


# Pre-training check of the training store: this many random shard files re-checksummed and
# this many random samples through the sanity checks (finite, pT >= 0, masks, labels); random
# samples touch up to as many chunks, so a large store costs a few seconds here.
PREFLIGHT_SHARDS = 4
PREFLIGHT_SAMPLES = 1024


def check_train_sample(store) -> None:
    """A sample of the training store: shard checksums and physical sanity (clrdist.data.store)."""
    try:
        verify_store(store, sample=PREFLIGHT_SHARDS)
        check_sample_sanity(store, n=PREFLIGHT_SAMPLES)
    except StoreError as e:
        raise StoreError(f"data.train_store: {e}") from None


def _check_view(view, where: str, cfg: RunConfig) -> None:
    try:
        build_view(view, cfg.augment.strength, cfg.augment.backend)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"{where}: {e.args[0] if isinstance(e, KeyError) else e}") from None


def _check_kernel() -> None:
    try:
        kernel.require()
    except kernel.KernelUnavailable as e:
        raise ConfigError(f"augment.backend: {e}") from None


def _check_views_fit_loss(cfg: RunConfig, loss) -> None:
    """The views and the output dimension are what the loss takes."""
    if cfg.augment.local_views and not loss.multi_view:
        raise ConfigError(f"augment.local_views: loss {cfg.loss.name!r} takes no local views (dino does)")
    if cfg.model.output_dim < loss.min_output_dim:  # ORCA: the known classes and a novel one
        raise ConfigError(f"model.output_dim: {cfg.model.output_dim} is below the "
                          f"{loss.min_output_dim} outputs loss {cfg.loss.name!r} needs (orca: one "
                          "head per loss.known_classes and at least one novel class)")
    if len(cfg.augment.views) != 2:
        raise ConfigError(f"augment.views: contrastive losses take 2 views, got {len(cfg.augment.views)}")
    if loss.needs_anomaly_view and not cfg.augment.anomaly_view:
        raise ConfigError(f"augment.anomaly_view: loss {cfg.loss.name!r} needs an anomaly view")


def check_components(cfg: RunConfig) -> None:
    """Every registered name resolves and the views fit the loss (cheap: builds on CPU)."""
    try:
        loss = build_loss(cfg.loss)
    except KeyError as e:
        raise ConfigError(f"loss.name: {e.args[0]}") from None
    check_augment_params(cfg)
    for i, view in enumerate(cfg.augment.views):
        _check_view(view, f"augment.views.{i}", cfg)
    if cfg.augment.anomaly_view:
        _check_view(cfg.augment.anomaly_view, "augment.anomaly_view", cfg)
    if cfg.augment.backend == "kernel":
        _check_kernel()
    for i, view in enumerate(cfg.augment.local_views):
        _check_view(view, f"augment.local_views.{i}", cfg)
    _check_views_fit_loss(cfg, loss)
    try:
        build_model(cfg.model)
    except (ValueError, KeyError) as e:
        raise ConfigError(f"model: {e}") from None


# what an augmentation's annotation accepts (its parameters are numbers and switches only)
_PARAM_TYPES = {"float": ((int, float), "a number"), "int": ((int,), "an integer"),
                "bool": ((bool,), "true or false")}


def check_augment_params(cfg: RunConfig) -> None:
    """Every augmentation parameter has the type of the augmentation's signature (a string or a
    switch where a number belongs fails here, in one line naming the key, not in a worker)."""
    a = cfg.augment
    lists = [(f"augment.views.{i}", v) for i, v in enumerate(a.views)]
    lists += [(f"augment.local_views.{i}", v) for i, v in enumerate(a.local_views)]
    lists += [("augment.anomaly_view", a.anomaly_view)] if a.anomaly_view else []
    for where, specs in lists:
        for j, spec in enumerate(specs):
            try:
                params = inspect.signature(get_augmentation(spec.name)).parameters
            except KeyError as e:
                raise ConfigError(f"{where}.{j}.name: {e.args[0]}") from None
            for k, v in spec.params.items():
                want = _PARAM_TYPES.get(str(params[k].annotation)) if k in params else None
                if want and (not isinstance(v, want[0]) or (bool not in want[0] and isinstance(v, bool))):
                    raise ConfigError(f"{where}.{j}.params.{k}: {v!r} is not {want[1]} "
                                      f"({spec.name} takes {k}: {params[k].annotation})")
