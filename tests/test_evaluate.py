"""Held-out checks before evaluation: provably disjoint stores only."""

import numpy as np
import pytest

from clrdist.config import ConfigError, load_config
from clrdist.data.split import split_store
from clrdist.data.store import StoreError, open_store
from clrdist.data.toy import write_toy_store
from clrdist.evaluate import check_final_stores, check_held_out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("held_out")
    write_toy_store(d / "toy.zarr", n_per_class=300, seed=1)
    split_store(d / "toy.zarr", {"train": 0.6, "a": 0.2, "b": 0.2}, out_dir=d, seed=1)
    write_toy_store(d / "other_seed.zarr", n_per_class=100, seed=2)
    write_toy_store(d / "same_seed.zarr", n_per_class=100, seed=1)
    return d


def test_disjoint_splits_pass(toy):
    check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "b.zarr")


def test_a_split_reused_as_test_set_is_refused(toy):
    with pytest.raises(StoreError, match="shares .* samples"):
        check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "a.zarr")


def test_evaluating_on_the_parent_store_is_refused(toy):
    with pytest.raises(StoreError, match="cannot prove it is disjoint"):
        check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "toy.zarr")


def test_independent_sources_pass_and_same_seed_is_refused(toy):
    check_held_out(toy / "toy.zarr", toy / "other_seed.zarr")
    with pytest.raises(StoreError, match="same source"):
        check_held_out(toy / "toy.zarr", toy / "same_seed.zarr")


# ---- validation is not test (issue 11, item 2) ----------------------------------------------

def _cfg(stores, **paths):
    sets = {"train_store": stores / "train.zarr", "eval_train_store": stores / "eval_train.zarr",
            "eval_test_store": stores / "eval_test.zarr", "val_store": stores / "val.zarr", **paths}
    return load_config(None, [f"data.{k}={v}" for k, v in sets.items() if v is not None]
                       + ["eval.every_epochs=1"])


def test_every_epochs_needs_a_validation_store(toy_splits):
    with pytest.raises(ConfigError, match="eval.every_epochs needs data.val_store"):
        _cfg(toy_splits, val_store=None)
    with pytest.raises(ConfigError, match="data.val_store: .* is also an evaluation store"):
        _cfg(toy_splits, val_store=toy_splits / "eval_test.zarr")


def test_validation_fits_on_eval_train_and_scores_on_val_never_test(toy_splits):
    from clrdist.train.loop import load_validation

    fit, val = load_validation(_cfg(toy_splits))
    want_fit, want_val = (open_store(toy_splits / f"{n}.zarr").read_all()
                          for n in ("eval_train", "val"))
    np.testing.assert_array_equal(fit["features"], want_fit["features"])
    np.testing.assert_array_equal(val["features"], want_val["features"])
    assert len(val["label"]) != open_store(toy_splits / "eval_test.zarr").n


def test_final_evaluation_refuses_a_test_store_that_is_or_overlaps_validation(toy_splits, tmp_path):
    store, test = check_final_stores(_cfg(toy_splits))  # the honest layout passes
    assert test.path.name == "eval_test.zarr" and store.path.name == "eval_train.zarr"
    same = toy_splits / "sub" / ".." / "eval_test.zarr"  # another spelling of the test store
    with pytest.raises(ConfigError, match="eval_test_store: .* is the validation store"):
        check_final_stores(_cfg(toy_splits, val_store=same))
    # a validation split cut from the same parent with another seed overlaps the test split
    split_store(toy_splits / "toy.zarr", {"val": 0.1}, out_dir=tmp_path, seed=99)
    with pytest.raises(StoreError, match="shares .* samples"):
        check_final_stores(_cfg(toy_splits, val_store=tmp_path / "val.zarr"))


def test_cli_split_makes_train_val_eval_train_eval_test(toy, tmp_path, capsys):
    from clrdist.cli import main

    assert main(["data", "split", str(toy / "toy.zarr"), "--fractions", "0.7,0.1,0.1,0.1",
                 "--out-dir", str(tmp_path)]) == 0
    names = ("train", "val", "eval_train", "eval_test")
    paths = {n: tmp_path / f"toy_{n}.zarr" for n in names}
    assert sum(open_store(p).n for p in paths.values()) == open_store(toy / "toy.zarr").n
    check_held_out(*paths.values())
    cfg = load_config(None, [f"data.{'train_store' if n == 'train' else n + '_store'}={p}"
                             for n, p in paths.items()] + ["eval.every_epochs=1"])
    check_final_stores(cfg)
