"""What a run checks of the evaluation stores its config names, before training
(``clrdist.train.preflight``) and again before evaluating (``clrdist.evaluation``): labelled
with both classes and held out. The checks themselves are :mod:`clrdist.eval.held_out`'s; here
the config says which stores, and the messages name its keys."""

from __future__ import annotations

from pathlib import Path

from clrdist.config import ConfigError, RunConfig
from clrdist.data.store import SampleStore, open_store
from clrdist.eval.held_out import check_held_out, check_labelled


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


def check_evaluation_stores(cfg: RunConfig, *, final: bool) -> None:
    """The stores the evaluations of a run will read, before any training: the validation pair
    (eval_train, val_store) when ``eval.every_epochs`` validates, and with ``final`` the final
    pair (eval_train, eval_test); each labelled with both classes and held out from training
    and from each other (:func:`check_final_stores` covers the validation store too)."""
    d = cfg.data
    during = bool(cfg.eval.every_epochs and d.val_store and d.eval_train_store)
    keys = ["eval_train_store", "eval_test_store"] if final else []
    keys += ["eval_train_store", "val_store"] if during else []
    for key in dict.fromkeys(keys):
        check_labelled(getattr(d, key), f"data.{key}")
    if final:
        check_final_stores(cfg)
    elif during:
        check_held_out(d.train_store, d.eval_train_store, d.val_store)
