"""bench.svj_sample end to end on small toy stores: one encoder trained once, every evaluation
store scored by every reference on the same test half."""

import numpy as np
import pytest
import torch

from bench.svj_sample import halves, main
from clrdist.data.toy import write_toy_store


def test_halves_are_disjoint_seeded_and_cover_the_store():
    d = {"label": np.arange(10), "mask": np.ones((10, 2), bool)}
    a, b = halves(d, 3)
    assert sorted(np.r_[a["label"], b["label"]]) == list(range(10)) and len(a["label"]) == 5
    assert np.array_equal(halves(d, 3)[0]["label"], a["label"])  # same seed, same halves
    assert not np.array_equal(halves(d, 4)[0]["label"], a["label"])


def test_every_sample_gets_every_score_from_one_training(tmp_path):
    train = write_toy_store(tmp_path / "train.zarr", n_per_class=150, seed=1, n_particles=50)
    a = write_toy_store(tmp_path / "a.zarr", n_per_class=100, seed=2, n_particles=50)
    b = write_toy_store(tmp_path / "b.zarr", n_per_class=100, seed=3, n_particles=50)
    threads = torch.get_num_threads()
    try:
        out = main(["--train", str(train), "--eval", f"a={a}", "--eval", f"b={b}", "--steps",
                    "3", "--init-seeds", "2", "--ae-epochs", "1", "--out",
                    str(tmp_path / "r.json"), "--set", "data.batch_size=32"])
    finally:
        torch.set_num_threads(threads)  # the bench sets this process's torch threads
    assert [r["name"] for r in out["rows"]] == ["a", "b"]
    for r in out["rows"]:
        assert r["n_test_sig"] + r["n_test_bkg"] == 100 and r["trained_steps"] == 3
        for key in ("trained_rep_auc", "untrained_rep_auc", "untrained_rep_auc_std",
                    "image_ae_auc", "mass_auc", "multiplicity_auc", "supervised_auc"):
            assert 0 <= r[key] <= 1, key
    assert (tmp_path / "r.json").is_file()
    with pytest.raises(SystemExit):
        main(["--train", str(train), "--eval", str(a)])  # no NAME=
