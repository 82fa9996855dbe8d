"""Label-free anomaly scores on Gaussian representations with known structure."""

import numpy as np
import pytest

from clrdist.eval.anomaly import anomaly_scores, autoencoder, znorm_score


def manifold_reps(n_bkg, n_sig, seed=0, dim=8):
    """Background on a 3-d linear subspace of R^8 (plus small noise); signal off it and with a
    larger norm."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(3, dim))
    bkg = rng.normal(size=(n_bkg, 3)) @ basis + 0.05 * rng.normal(size=(n_bkg, dim))
    sig = 1.5 * rng.normal(size=(n_sig, dim))
    return np.r_[bkg, sig], np.r_[np.zeros(n_bkg, np.int8), np.ones(n_sig, np.int8)]


def test_znorm_and_autoencoder_find_off_manifold_signal():
    x_tr, y_tr = manifold_reps(3000, 300, seed=0)
    x_te, y_te = manifold_reps(2000, 2000, seed=1)
    res = anomaly_scores(x_tr, y_tr, x_te, y_te, ae_scale=0.25, ae_epochs=60, ae_batch_size=256)
    m = res.metrics
    assert m["anomaly_ae_auc"] > 0.95
    assert m["anomaly_znorm_auc"] > 0.5
    assert m["anomaly_ae_final_loss"] < 0.2  # standardised units: the manifold is learnt
    assert "anomaly_ae_inv_eps_b_at_0.2" in m
    assert set(res.figures) == {"anomaly_roc.png", "anomaly_scores.png"}


def test_znorm_auc_closed_form():
    # |z| of 1-d Gaussians with widths 1 and 2: AUC = P(|2a| > |b|) = 1 - (2/pi) atan(1/2)
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(size=(20000, 1)), 2 * rng.normal(size=(20000, 1))]
    y = np.r_[np.zeros(20000, int), np.ones(20000, int)]
    m = anomaly_scores(x, y, x, y, methods=("znorm",), figures=False).metrics
    assert m["anomaly_znorm_auc"] == pytest.approx(1 - 2 / np.pi * np.arctan(0.5), abs=0.01)
    np.testing.assert_allclose(znorm_score(np.array([[3.0, 4.0]])), [5.0])


def test_autoencoder_architecture():
    ae = autoencoder(48)
    widths = [m.out_features for m in ae.modules() if hasattr(m, "out_features")]
    assert widths == [256, 128, 64, 32, 16, 5, 16, 32, 64, 128, 256, 48]
