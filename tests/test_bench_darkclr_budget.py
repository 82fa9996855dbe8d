"""bench.darkclr_budget's metric code on tiny fake data: the score's AUC and 1/eps_B, the norms of
the representation and head outputs, the mean +- std over init seeds."""

import numpy as np
import pytest
import torch

from bench.darkclr_budget import norms, score_metrics, seed_summary


def test_score_metrics_auc_and_rejection_at_eps_s_0_2():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, -1])
    perfect = np.array([0, 1, 2, 3, 10, 11, 12, 13, 100, 100], float)  # -1 labels are dropped
    m = score_metrics(labels, perfect)
    assert m["auc"] == pytest.approx(1.0)
    assert m["inv_eps_b_at_0.2"] > 3  # no background passes the cut keeping 20% of the signal
    assert score_metrics(labels, -perfect)["auc"] == pytest.approx(0.0)
    # a score independent of the label: 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    assert score_metrics(y, rng.normal(size=4000))["auc"] == pytest.approx(0.5, abs=0.03)
    # a signal shifted by one sigma: AUC = Phi(1 / sqrt 2) = 0.760
    s = rng.normal(size=4000) + y
    assert score_metrics(y, s)["auc"] == pytest.approx(0.760, abs=0.02)


def test_norms_of_representation_and_head():
    class Fake(torch.nn.Module):
        def forward(self, x, mask):
            rep = x.sum(1)  # (B, 2)
            return rep, 2 * rep

    x = torch.tensor([[[3.0, 4.0]], [[0.0, 1.0]], [[6.0, 8.0]]])
    n = norms(Fake(), x, torch.ones(3, 1, dtype=torch.bool), batch=2)
    np.testing.assert_allclose(n["rep"], [5, 1, 10])
    np.testing.assert_allclose(n["head"], [10, 2, 20])


def test_seed_summary_mean_and_sample_std():
    s = seed_summary([{"auc": 0.5}, {"auc": 0.6}, {"auc": 0.7}])
    assert s["auc"] == pytest.approx(0.6)
    assert s["auc_std"] == pytest.approx(0.1)
    assert seed_summary([{"auc": 0.5}])["auc_std"] == 0.0
