"""run_evaluations / evaluate_during_training through a stand-in encoder."""

import time

import numpy as np
import pytest
from _eval_toys import mixed

from clrdist.eval import EvalResult
from clrdist.eval.baselines import jet_observables
from clrdist.eval.runner import evaluate_during_training, run_evaluations

calls = []


def encode(batch):
    calls.append(len(batch["label"]))
    obs = jet_observables(batch)
    return np.c_[np.log(obs[:, 0] + 1), obs[:, 1:]]


def test_run_lct_and_baselines_in_batches():
    calls.clear()
    tr, te = mixed(150, seed=0), mixed(150, seed=5)
    res = run_evaluations(encode, train_data=tr, test_data=te, which={"lct", "baselines"},
                          options={"batch_size": 128, "n_boot": 5,
                                   "baselines": {"which": ["raw"]}})
    assert calls == [128, 128, 44, 128, 128, 44]
    assert isinstance(res["lct"], EvalResult)
    assert res["lct"].metrics["lct_auc"] > 0.9 > res["baselines"].metrics["baseline_raw_auc"]
    with pytest.raises(KeyError, match="known"):
        run_evaluations(encode, train_data=tr, test_data=te, which={"lcd"})


def test_evaluate_during_training_is_quick():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40000, 64)).astype(np.float32)
    y = rng.integers(0, 2, 40000)
    x[y == 1, :4] += 0.5
    t = time.perf_counter()
    m = evaluate_during_training(x[:20000], y[:20000], x[20000:], y[20000:])
    assert time.perf_counter() - t < 10
    assert set(m) == {"lct_auc", "lct_max_sic", "lct_fpr_at_tpr_0.5", "lct_inv_eps_b_at_0.5"}
    assert m["lct_auc"] == pytest.approx(0.760, abs=0.02)  # d' = 1: Phi(1/sqrt2)
