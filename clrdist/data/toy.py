"""Fast synthetic jets with top-like and QCD-like structure (tests, demo fallback).

Not a physics generator: a vectorised numpy caricature that has the structure the contrastive
pipeline should discover, with enough spread that no single number separates the classes.

- QCD-like: one hard core (sometimes with a second, harder-to-see prong from a hard gluon
  splitting) plus a soft spray; lower multiplicity.
- top-like: a real 1 -> 3 decay (t -> b W, W -> q q') of a top with mass ~ N(173, 8) GeV and a
  W with mass ~ N(80.4, 5) GeV boosted to the jet pT, each prong fragmented into collinear
  particles, plus soft spray. Prongs falling outside the R = 0.8 cone are lost, which, with
  the smearing, gives top jets a low-mass tail that overlaps QCD.

Particles are (pT [GeV], eta, phi) with absolute eta, phi (jet axis eta ~ U(-2, 2),
phi ~ U(-pi, pi)), hardest first, zero padded; jet pT ~ U(550, 650) GeV.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np

from clrdist.data.schema import JET_FEATURES, PARTICLE_FEATURES, TOP_QCD_LABELS
from clrdist.physics.observables import jet_kinematics, jet_p4, wrap_phi

_KIND_ID = {name: label for label, name in TOP_QCD_LABELS.items()}  # qcd 0, top 1
_R = 0.8  # jet radius
_MAX_RAW = 80  # particles generated per jet before the cone cut and truncation


def _boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Boost 4-vectors p4 (..., 4) = (E, px, py, pz) by velocity beta (..., 3)."""
    b2 = np.sum(beta * beta, axis=-1, keepdims=True)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = np.sum(beta * p4[..., 1:], axis=-1, keepdims=True)
    e = gamma * (p4[..., :1] + bp)
    safe_b2 = np.where(b2 > 0, b2, 1.0)
    p = p4[..., 1:] + ((gamma - 1.0) * bp / safe_b2 + gamma * p4[..., :1]) * beta
    return np.concatenate([e, p], axis=-1)


def _isotropic(rng: np.random.Generator, n: int) -> np.ndarray:
    cos_t = rng.uniform(-1, 1, n)
    sin_t = np.sqrt(1 - cos_t**2)
    ph = rng.uniform(-np.pi, np.pi, n)
    return np.stack([sin_t * np.cos(ph), sin_t * np.sin(ph), cos_t], axis=-1)


def _top_prongs(rng: np.random.Generator, n: int, pt: np.ndarray, eta: np.ndarray,
                phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pt, eta, phi) of the three decay products b, q, q' of boosted tops, each (n, 3)."""
    mt = np.clip(rng.normal(173.0, 8.0, n), 140, 210)
    mw = np.clip(rng.normal(80.4, 5.0, n), 60, 100)
    # t -> b W in the top rest frame (b massless)
    pstar = (mt**2 - mw**2) / (2 * mt)
    u = _isotropic(rng, n)
    b4 = np.concatenate([pstar[:, None], pstar[:, None] * u], axis=1)
    w4 = np.concatenate([np.sqrt(pstar**2 + mw**2)[:, None], -pstar[:, None] * u], axis=1)
    # W -> q q' in the W rest frame, then into the top frame
    v = _isotropic(rng, n)
    q4 = np.concatenate([(mw / 2)[:, None], (mw / 2)[:, None] * v], axis=1)
    qb4 = np.concatenate([(mw / 2)[:, None], -(mw / 2)[:, None] * v], axis=1)
    beta_w = w4[:, 1:] / w4[:, :1]
    q4, qb4 = _boost(q4, beta_w), _boost(qb4, beta_w)
    # top in the lab along (eta, phi) with transverse momentum pt
    pz = pt * np.sinh(eta)
    p3 = np.stack([pt * np.cos(phi), pt * np.sin(phi), pz], axis=1)
    e = np.sqrt(np.sum(p3**2, axis=1) + mt**2)
    beta_t = p3 / e[:, None]
    prongs = _boost(np.stack([b4, q4, qb4], axis=1), beta_t[:, None, :])
    ppt = np.hypot(prongs[..., 1], prongs[..., 2])
    peta = np.arcsinh(prongs[..., 3] / ppt)
    pphi = np.arctan2(prongs[..., 2], prongs[..., 1])
    return ppt, peta, pphi


def _qcd_prongs(rng: np.random.Generator, n: int, pt: np.ndarray, eta: np.ndarray,
                phi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One core, with probability 0.7 a second prong from a hard splitting; (n, 3) each."""
    split = rng.random(n) < 0.7
    z = np.where(split, rng.uniform(0.05, 0.5, n), 0.0)
    dr = np.clip(rng.lognormal(np.log(0.35), 0.5, n), 0.05, 0.75)
    ang = rng.uniform(-np.pi, np.pi, n)
    ppt = np.stack([(1 - z) * pt, z * pt, np.zeros(n)], axis=1)
    # put the pT-weighted centroid of the prongs on the axis
    off = np.stack([-z * dr, (1 - z) * dr, np.zeros(n)], axis=1)
    peta = eta[:, None] + off * np.cos(ang)[:, None]
    pphi = phi[:, None] + off * np.sin(ang)[:, None]
    return ppt, peta, pphi


def _jet_features(particles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``JET_FEATURES``: jet_pt, jet_eta, jet_phi, jet_mass (massless constituents, float64 sums),
    n_constituents; (n, 5) float32."""
    p4 = jet_p4(particles[..., 0], particles[..., 1], particles[..., 2], mask)
    return np.concatenate([jet_kinematics(p4), mask.sum(1)[:, None]], axis=1).astype(np.float32)


def toy_jets(n: int, kind: Literal["top", "qcd"], *, seed: int, n_particles: int = 50,
             block: int = 0) -> dict[str, np.ndarray]:
    """``n`` synthetic jets of one class, reproducible by ``seed``.

    Returns particles (n, P, 3) float32 [pT GeV, eta, phi], mask (n, P) bool, label (n,) int8
    (1 top, 0 QCD), features (n, 5) float32 (``schema.JET_FEATURES``). ``block`` selects an
    independent random stream for the same seed (large stores are generated block by block).
    """
    if kind not in _KIND_ID:
        raise ValueError(f"unknown toy jet kind {kind!r} (known: top, qcd)")
    rng = np.random.default_rng([int(seed), _KIND_ID[kind], 0x70F, int(block)])
    target_pt = rng.uniform(550.0, 650.0, n)
    eta0 = rng.uniform(-2.0, 2.0, n)
    phi0 = rng.uniform(-np.pi, np.pi, n)
    if kind == "top":
        ppt, peta, pphi = _top_prongs(rng, n, target_pt, eta0, phi0)
        mult = np.clip(np.round(rng.normal(44, 9, n)), 20, _MAX_RAW).astype(int)
        soft_frac = rng.uniform(0.005, 0.03, n)
    else:
        ppt, peta, pphi = _qcd_prongs(rng, n, target_pt, eta0, phi0)
        mult = np.clip(np.round(rng.normal(34, 9, n)), 12, _MAX_RAW).astype(int)
        soft_frac = rng.uniform(0.005, 0.03, n)

    # --- assign particle slots to components 0..2 (prongs) and 3 (soft spray) --------------
    m = _MAX_RAW
    slot = np.arange(m)[None, :]
    real = slot < mult[:, None]
    weight = np.concatenate([np.sqrt(ppt), (0.35 * np.sqrt(ppt.sum(1)))[:, None]], axis=1)
    prob = weight / weight.sum(1, keepdims=True)
    comp = (rng.random((n, m))[:, :, None] > np.cumsum(prob, axis=1)[:, None, :-1]).sum(-1)
    # every non-empty prong gets at least its own leading particle
    comp[:, :3] = np.where(ppt > 0, np.arange(3)[None, :], 3)
    onehot = (comp[:, :, None] == np.arange(4)[None, None, :]) & real[:, :, None]

    # --- pT shares inside each component (hard leading fragments, soft tail) -----------------
    w = rng.lognormal(0.0, 1.3, (n, m)) * real
    comp_pt = np.concatenate([ppt * (1 - soft_frac)[:, None], (soft_frac * target_pt)[:, None]],
                             axis=1)
    wsum = np.einsum("nm,nmc->nc", w, onehot)
    share = np.where(wsum > 0, comp_pt / np.where(wsum > 0, wsum, 1.0), 0.0)
    pt = w * np.take_along_axis(share, comp, axis=1)

    # --- directions: collinear around the prong, wider when softer; spray fills the cone -----
    ceta = np.concatenate([peta, eta0[:, None]], axis=1)
    cphi = np.concatenate([pphi, phi0[:, None]], axis=1)
    sigma = np.clip(0.005 + 0.6 / np.maximum(pt, 1e-3), 0.0, 0.3)
    deta = rng.normal(0, 1, (n, m)) * sigma
    dphi = rng.normal(0, 1, (n, m)) * sigma
    soft = comp == 3
    r_soft = _R * np.sqrt(rng.random((n, m)))
    a_soft = rng.uniform(-np.pi, np.pi, (n, m))
    deta = np.where(soft, r_soft * np.cos(a_soft), deta)
    dphi = np.where(soft, r_soft * np.sin(a_soft), dphi)
    eta = np.take_along_axis(ceta, comp, axis=1) + deta
    phi = np.take_along_axis(cphi, comp, axis=1) + dphi

    # --- cone around the axis, detector threshold, pT ordering, truncation -------------------
    dr2 = (eta - eta0[:, None]) ** 2 + wrap_phi(phi - phi0[:, None]) ** 2
    keep = real & (dr2 < _R**2) & (pt > 0.5)
    pt = np.where(keep, pt, 0.0)
    order = np.argsort(-pt, axis=1, kind="stable")[:, :n_particles]
    pt = np.take_along_axis(pt, order, axis=1)
    eta = np.take_along_axis(eta, order, axis=1)
    phi = wrap_phi(np.take_along_axis(phi, order, axis=1))
    mask = pt > 0
    if pt.shape[1] < n_particles:  # more slots than generated particles: pad
        pad = n_particles - pt.shape[1]
        pt, eta, phi, mask = (np.pad(a, ((0, 0), (0, pad))) for a in (pt, eta, phi, mask))
    particles = np.stack([pt, np.where(mask, eta, 0.0), np.where(mask, phi, 0.0)], axis=-1)

    # measured jet pT rescaled to the target (keeps the 550-650 GeV window exact)
    feats = _jet_features(particles, mask)
    scale = target_pt / np.maximum(feats[:, 0], 1e-6)
    particles[..., 0] *= scale[:, None]
    particles = particles.astype(np.float32)
    feats = _jet_features(particles, mask)  # from exactly what is stored
    label = np.full(n, _KIND_ID[kind], dtype=np.int8)
    return {"particles": particles, "mask": mask, "label": label,
            "features": feats}


def toy_dataset(n_per_class: int, *, seed: int, n_particles: int = 50, block: int = 0
                ) -> dict[str, np.ndarray]:
    """Both classes, ``n_per_class`` each, shuffled together (reproducible by ``seed``)."""
    top = toy_jets(n_per_class, "top", seed=seed, n_particles=n_particles, block=block)
    qcd = toy_jets(n_per_class, "qcd", seed=seed, n_particles=n_particles, block=block)
    perm = np.random.default_rng([int(seed), 0x5EED, int(block)]).permutation(2 * n_per_class)
    return {k: np.concatenate([top[k], qcd[k]])[perm] for k in top}


def write_toy_store(path: str | os.PathLike, *, n_per_class: int, seed: int, n_particles: int = 50,
                    overwrite: bool = False, chunk_size: int = 4096, shard_chunks: int = 16,
                    ) -> Path:
    """Write a shuffled toy store of 2 * n_per_class jets (labels 1 top, 0 QCD)."""
    # lazy: zarr (~0.3 s) only when a store is written; toy_dataset needs none
    from clrdist.data.store import StoreWriter

    path = Path(path)
    block = 50_000  # jets per class per block: bounded memory for big toy stores
    provenance = {"source": "toy", "generator": "clrdist.data.toy", "seed": int(seed),
                  "n_per_class": int(n_per_class),
                  # random order: each block of both classes is one seeded permutation
                  "order": {"shuffled": True, "seed": int(seed),
                            "by": f"clrdist.data.toy.toy_dataset, blocks of {2 * block} jets"}}
    with StoreWriter(path, kind="jet", particle_features=PARTICLE_FEATURES,
                     feature_names=JET_FEATURES, label_names=TOP_QCD_LABELS, n_particles=n_particles,
                     chunk_size=chunk_size, shard_chunks=shard_chunks, provenance=provenance,
                     overwrite=overwrite) as w:
        for i, start in enumerate(range(0, n_per_class, block)):
            d = toy_dataset(min(block, n_per_class - start), seed=seed, n_particles=n_particles,
                            block=i)
            w.append(d["particles"], d["mask"], d["label"], d["features"])
    return path
