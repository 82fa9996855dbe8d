"""Jet images against a slow per-jet loop, their symmetries, and the image autoencoder."""

import numpy as np
import pytest
from _eval_toys import prong_jets

from clrdist.data.toy import toy_jets
from clrdist.eval.jetimages import image_ae_scores, jet_images


def slow_image(p, m, size=40, extent=1.0):
    """One jet, the obvious way: centroid, eigenvector of the inertia tensor, flips, pixels."""
    pt, eta, phi = (np.asarray(p[m, k], np.float64) for k in range(3))
    w = pt / pt.sum()
    lead = phi[np.argmax(pt)]
    phi = lead + (phi - lead + np.pi) % (2 * np.pi) - np.pi
    xy = np.stack([eta - (w * eta).sum(), phi - (w * phi).sum()], 1)
    inertia = (w[:, None, None] * xy[:, :, None] * xy[:, None, :]).sum(0)
    vals, vecs = np.linalg.eigh(inertia)
    axis = vecs[:, np.argmax(vals)]
    a = np.arctan2(axis[1], axis[0])
    r = np.pi / 2 - a
    rot = np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]])
    xy = xy @ rot.T  # the principal axis is now vertical
    for k in range(2):
        if w[xy[:, k] > 0].sum() < w[xy[:, k] < 0].sum():
            xy[:, k] = -xy[:, k]
    img = np.zeros((size, size))
    for (x, y), wi in zip(xy, w, strict=True):
        ix, iy = int(np.floor((x + extent) / (2 * extent) * size)), int(np.floor((y + extent) / (2 * extent) * size))
        if 0 <= ix < size and 0 <= iy < size:
            img[iy, ix] += wi
    return img


def test_images_match_the_slow_loop():
    d = toy_jets(40, "top", seed=1)
    fast = jet_images(d["particles"], d["mask"])
    assert fast.shape == (40, 40, 40) and fast.dtype == np.float32
    for i in range(40):
        np.testing.assert_allclose(fast[i], slow_image(d["particles"][i], d["mask"][i]), atol=1e-6)
    assert np.allclose(fast.sum((1, 2)), 1.0, atol=1e-5)  # toy jets lie inside |dR| < 1


def test_images_are_invariant_under_rotation_translation_and_reflection():
    d = toy_jets(30, "qcd", seed=2)
    p, m = d["particles"].astype(np.float64), d["mask"]
    ref = jet_images(p, m)
    rng = np.random.default_rng(0)
    ang, shift = rng.uniform(0, 2 * np.pi, (30, 1)), rng.normal(0, 0.5, (30, 1, 2))
    cx, cy = p[..., 1].mean(1, keepdims=True), p[..., 2].mean(1, keepdims=True)
    x, y = p[..., 1] - cx, p[..., 2] - cy
    q = p.copy()
    q[..., 1] = np.cos(ang) * x - np.sin(ang) * y + cx + shift[..., 0]
    q[..., 2] = -(np.sin(ang) * x + np.cos(ang) * y + cy + shift[..., 1])  # and mirrored in phi
    q[..., 2] = (q[..., 2] + np.pi) % (2 * np.pi) - np.pi
    q = np.where(m[..., None], q, 0.0)
    moved = jet_images(q, m)
    same = np.abs(moved - ref).sum((1, 2)) < 1e-4
    assert same.mean() >= 0.9  # a constituent on a pixel edge may move by one pixel
    # constituent order and padding position do not matter (phi is wrapped about the hardest)
    np.testing.assert_allclose(jet_images(p[:, ::-1], m[:, ::-1]), ref, atol=1e-6)


def test_image_autoencoder_flags_structure_it_never_saw():
    """Trained on one-prong jets, the AE reconstructs wide two-prong jets badly."""
    bkg_tr = prong_jets(300, 1, seed=0, n_particles=20)
    te = {k: np.concatenate([a, b]) for (k, a), b in zip(
        prong_jets(150, 1, seed=1, n_particles=20).items(),
        prong_jets(150, 2, seed=2, n_particles=20, sep=1.0).values(), strict=True)}
    res = image_ae_scores(bkg_tr, te, epochs=4, seed=0)
    m = res.metrics
    assert m["images_ae_auc"] > 0.9, m
    assert m["images_n_train"] == 300 and m["images_n_test"] == 300
    with pytest.raises(ValueError, match="no background"):
        image_ae_scores(prong_jets(10, 2, seed=0), te, epochs=1)
