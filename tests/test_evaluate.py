"""Held-out checks before evaluation: provably disjoint stores only."""

import pytest

from clrdist.data.split import split_store
from clrdist.data.store import StoreError
from clrdist.data.toy import write_toy_store
from clrdist.evaluate import check_held_out


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
