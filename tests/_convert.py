"""What the converter tests share (tests/test_convert*.py, tests/test_bench_adc.py): writers of
the public layouts exactly as the originals are written (pandas to_hdf, h5py), toy inputs for
them, and a store read back in the order of the input rows."""

import h5py
import numpy as np
import pandas as pd

from clrdist.data.store import sample_order
from clrdist.data.toy import toy_jets


def write_toptag(path, particles, mask, label, n_slots=200, shuffle_slots=False, edit=None):
    """Top tagging layout: pandas 'table' format, key 'table', E/PX/PY/PZ_i, truth*, ttv, label."""
    n = len(label)
    pt, eta, phi = (np.where(mask, particles[..., i].astype(np.float64), 0.0) for i in range(3))
    comp = {"E": pt * np.cosh(eta), "PX": pt * np.cos(phi), "PY": pt * np.sin(phi),
            "PZ": pt * np.sinh(eta)}
    p = particles.shape[1]
    if shuffle_slots:  # the file's slot order must not matter
        perm = np.random.default_rng(0).permutation(p)
        comp = {k: v[:, perm] for k, v in comp.items()}
    cols = {}
    for i in range(n_slots):
        for c in ("E", "PX", "PY", "PZ"):
            cols[f"{c}_{i}"] = comp[c][:, i] if i < p else np.zeros(n)
    for c in ("truthE", "truthPX", "truthPY", "truthPZ", "ttv"):
        cols[c] = np.zeros(n)
    cols["is_signal_new"] = np.asarray(label, dtype=np.int64)
    df = pd.DataFrame(cols)
    if edit is not None:
        edit(df)
    df.to_hdf(path, key="table", format="table")
    return path


def write_lhco(path, rows, key="df"):
    """LHCO layout: pandas default ('fixed') format, any key, integer column names."""
    pd.DataFrame(rows).to_hdf(path, key=key)
    return path


def write_adc(path, particles):
    with h5py.File(path, "w") as f:
        f["Particles"] = particles
        f["Particles_Names"] = np.array([b"Pt", b"Eta", b"Phi", b"Class"])
        f["Particles_Classes"] = np.array([b"MET_class_1", b"Four_Ele_class_2",
                                           b"Four_Mu_class_3", b"Ten_Jet_class_4"])
    return path


def adc_events(n, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 19, 4))
    x[:, 0, 0], x[:, 0, 2], x[:, 0, 3] = rng.exponential(30, n), rng.uniform(-3, 3, n), 1
    for lo, size, cls, maxn in ((1, 4, 2, 3), (5, 4, 3, 3), (9, 10, 4, 9)):
        cnt = rng.integers(0, maxn, n)
        pts = -np.sort(-rng.exponential(40, (n, size)), axis=1) + 3
        on = np.arange(size)[None, :] < cnt[:, None]
        x[:, lo:lo + size, 0] = np.where(on, pts, 0)
        x[:, lo:lo + size, 1] = np.where(on, rng.uniform(-2.5, 2.5, (n, size)), 0)
        x[:, lo:lo + size, 2] = np.where(on, rng.uniform(-3, 3, (n, size)), 0)
        x[:, lo:lo + size, 3] = np.where(on, cls, 0)
    return x


def toy_dijet_rows(n, seed, label=True):
    a, b = toy_jets(n, "top", seed=seed), toy_jets(n, "qcd", seed=seed + 1)
    rows = np.zeros((n, 2100 + int(label)))
    for k, (d, eta0, dphi, scale) in enumerate(((a, 0.5, 0.0, 3.0), (b, -0.5, np.pi, 2.0))):
        f, p, m = d["features"], d["particles"].astype(np.float64), d["mask"]
        eta = np.where(m, p[..., 1] - f[:, 1:2] + eta0, 0)
        phi = np.where(m, (p[..., 2] - f[:, 2:3] + dphi + np.pi) % (2 * np.pi) - np.pi, 0)
        rows[:, 150 * k:150 * (k + 1)] = np.stack([p[..., 0] * scale, eta, phi], -1).reshape(n, 150)
    if label:
        rows[:, -1] = np.arange(n) % 2
    return a, b, rows


def in_input_order(store):
    """The store's samples in the order of the input rows (stores are written in the random
    order sample_order(n, seed), seed in provenance.order)."""
    order = sample_order(store.n, store.attrs["provenance"]["order"]["seed"])
    d = store.read_all()
    out = {k: np.empty_like(v) for k, v in d.items()}
    for k in d:
        out[k][order] = d[k]
    return out
