"""Normalised autoencoder: Langevin steps, the loss, and energies on toy data."""

import numpy as np
import pytest
import torch
from _eval_toys import prong_jets

from clrdist.eval.nae import MLPAE, NAE, energy, langevin, nae_evaluation, nae_loss


def test_langevin_without_noise_is_gradient_descent():
    x0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    x = langevin(lambda x: 0.5 * (x ** 2).sum(1), x0, steps=7, step_size=0.1, noise=0.0,
                 generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, x0 * 0.9 ** 7)
    s = langevin(lambda x: (x[:, 0] - 5) ** 2, x0, steps=3, step_size=0.1, noise=0.0,
                 generator=torch.Generator(), sphere=True)
    torch.testing.assert_close(s.norm(dim=1), torch.ones(2, dtype=torch.float64))
    c = langevin(lambda x: -(x.sum(1)), x0, steps=3, step_size=1.0, noise=0.0,
                 generator=torch.Generator(), clamp=(0.0, 1.5))
    assert float(c.min()) >= 0.0 and float(c.max()) <= 1.5


def test_nae_loss_and_energy_formulas():
    ep, en = torch.tensor([0.2, 0.4]), torch.tensor([1.0, 3.0])
    want = 0.3 - 2.0 + 0.5 * ((0.04 + 0.16) / 2 + (1 + 9) / 2)
    assert float(nae_loss(ep, en, 0.5)) == pytest.approx(want)
    net = MLPAE(3, 8, 2)
    x = torch.randn(4, 3)
    by_hand = torch.stack([((net(x[i:i + 1]) - x[i:i + 1]) ** 2).mean() / 2.0 for i in range(4)])
    torch.testing.assert_close(energy(net, x, 2.0), by_hand)
    z = net.encode(x)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(4))  # spherical latent


def test_nae_on_representations_scores_the_shifted_sample_higher():
    rng = np.random.default_rng(0)
    rep_tr, rep_te = rng.normal(size=(800, 4)), rng.normal(size=(400, 4))
    y_te = np.r_[np.zeros(200, int), np.ones(200, int)]
    rep_te[200:, 0] += 3.0
    res = nae_evaluation(rep_tr, np.zeros(800, int), rep_te, y_te, on=("rep",), ae_epochs=10,
                         nae_steps=30, seed=0)
    m = res.metrics
    assert m["nae_rep_auc"] > 0.85, m
    assert np.isfinite(m["nae_rep_e_pos"]) and np.isfinite(m["nae_rep_e_neg"])


def test_negative_phase_lowers_the_nae_objective():
    """E(x+) - E(x-) (the NAE loss without the gamma term) falls during the negative phase."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    torch.manual_seed(0)
    nae = NAE(MLPAE(3, 32, 2), ae_epochs=10, nae_steps=60, nae_lr=1e-3, seed=0).fit(x)
    gap = [h["e_pos"] - h["e_neg"] for h in nae.history]
    assert len(gap) == 60
    assert np.mean(gap[-10:]) < 0.85 * np.mean(gap[:10]), gap
    far = nae.score(3 * rng.normal(size=(200, 3)).astype(np.float32))
    assert np.median(far) > 5 * np.median(nae.score(x[:200]))


def test_nae_on_jet_images_runs_end_to_end():
    tr = prong_jets(40, 1, seed=0, n_particles=20)
    te = {k: np.concatenate([a, b]) for (k, a), b in zip(
        prong_jets(20, 1, seed=1, n_particles=20).items(),
        prong_jets(20, 2, seed=2, n_particles=20, sep=1.0).values(), strict=True)}
    res = nae_evaluation(None, tr["label"], None, te["label"], train_data=tr, test_data=te,
                         on=("images",), ae_epochs=2, nae_steps=2, batch_size=16,
                         langevin={"z_steps": 2, "x_steps": 2})
    assert 0.0 <= res.metrics["nae_images_auc"] <= 1.0
    assert {"nae_images_inv_eps_b_at_0.2", "nae_images_e_neg"} <= set(res.metrics)
    with pytest.raises(KeyError, match="known"):
        nae_evaluation(None, tr["label"], None, te["label"], on=("pixels",))
