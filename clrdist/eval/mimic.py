"""Interpretable mimickers of the jet-image autoencoder, grown one EFP at a time.

Bradshaw, Chang, Ostdiek, "Creating simple, interpretable anomaly detectors for new physics in
jet substructure" (arXiv:2203.01343), with the black-box guided search of Faucett, Thaler,
Whiteson (arXiv:2010.11998). The autoencoder (``clrdist.eval.jetimages``) is the black box; its
anomaly score s(x) is mimicked by small networks on jet mass, jet pT and energy-flow polynomials
(energyflow: hadronic measure, beta = 1, normalised, degree <= ``dmax``; log10 of |EFP|):

- decision ordering of two scores f, g on a pair (x, x'): DO = Theta((f(x) - f(x'))(g(x) - g(x')))
  (ties 1/2); the average decision ordering ADO(f, g) is its mean over random pairs of jets;
- HLN (high-level network): an MLP regressing the AE score's rank (in [0, 1]) by MSE;
- PNN (paired neural network): an MLP g trained on pairs with BCE(sigmoid(g(x) - g(x')),
  [s(x) > s(x')]), i.e. directly on the ordering.

Growth: start from (mass, pT); train the mimicker; on the pairs it orders differently from the
AE, take the EFP whose own ordering agrees best with the AE's (max(ADO, 1 - ADO): an EFP may
enter with either sign); add it and retrain; stop when the mimicker's ADO with the AE reaches
``ado_target``, or (labelled jets) its AUC reaches the AE's within ``auc_tol``, or after
``max_efps`` EFPs. Selection uses one half of the jets, the reported ADO / AUCs the other half.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from clrdist.eval.jetimages import image_ae_scores, signal_metrics
from clrdist.eval.metrics import EvalResult, auc
from clrdist.eval.nplm.network import single_thread_on_cpu
from clrdist.physics.observables import efps, import_energyflow, jet_p4, pt_eta_phi


def decision_ordering(f: np.ndarray, g: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]
                      ) -> np.ndarray:
    """DO per pair (n_pairs,) float: 1 same order, 0 opposite, 1/2 where either score ties."""
    i, j = pairs
    prod = np.sign(np.asarray(f)[i] - np.asarray(f)[j]) * np.sign(np.asarray(g)[i] - np.asarray(g)[j])
    return (prod + 1.0) / 2.0


def ado(f: np.ndarray, g: np.ndarray, pairs: tuple[np.ndarray, np.ndarray]) -> float:
    """Average decision ordering of f and g over ``pairs``."""
    return float(decision_ordering(f, g, pairs).mean())


def random_pairs(n: int, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` random pairs (i, j), i != j, of n samples."""
    i = rng.integers(0, n, n_pairs)
    j = (i + rng.integers(1, n, n_pairs)) % n
    return i, j


def efp_names(dmax: int) -> list[str]:
    """One distinct name per EFP of degree <= dmax, in energyflow's order: connected graphs
    ``efp_n<N>_d<d>_k<k>`` (vertices, edges, energyflow's index among the graphs with those),
    e.g. efp_n2_d1_k0 = sum z_i z_j theta_ij; products of p connected graphs (which share N, d
    and k with each other) ``efp_n<N>_d<d>_k<k>_p<p>_i<i>``, i the position in energyflow's
    EFPSet (``EFPSet.graphs(i)`` draws it)."""
    ef = import_energyflow()
    efpset = ef.EFPSet(f"d<={dmax}", measure="hadr", beta=1, normed=True, coords="ptyphim")
    specs, cols = efpset.specs, efpset.cols.tolist()
    n, d, k, p = (cols.index(c) for c in ("n", "d", "k", "p"))
    return [f"efp_n{int(s[n])}_d{int(s[d])}_k{int(s[k])}"
            + (f"_p{int(s[p])}_i{i}" if s[p] > 1 else "") for i, s in enumerate(specs)]


def jet_mass_pt(particles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, 2) jet mass and pT in GeV from the (massless) constituents."""
    p = np.asarray(particles, np.float64)
    p4 = jet_p4(p[..., 0], p[..., 1], p[..., 2], mask)
    m2 = p4[:, 3] ** 2 - (p4[:, :3] ** 2).sum(1)
    return np.c_[np.sqrt(np.maximum(m2, 0.0)), pt_eta_phi(p4)[:, 0]]


def _mlp(d: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, 1))


class _Standardised:
    """x -> net((x - mu) / sd) as numpy, with the statistics of the fitting set."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor((np.asarray(x, np.float64) - self.mu) / self.sd, dtype=torch.float32)


def _predictor(net: nn.Module, std: _Standardised):
    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        return net(std(x))[:, 0].double().numpy()

    return predict


def fit_hln(x: np.ndarray, score: np.ndarray, *, hidden=(32, 32), steps: int = 300,
            lr: float = 3e-3, seed: int = 0):
    """HLN: MLP regressing rank(score)/n from x (standardised) by full-batch MSE; returns
    ``predict(x) -> (n,)``."""
    torch.manual_seed(seed)
    std = _Standardised(x)
    xt = std(x)
    target = torch.as_tensor(np.argsort(np.argsort(score)) / max(len(score) - 1, 1),
                             dtype=torch.float32)
    net = _mlp(xt.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with single_thread_on_cpu(torch.device("cpu")):
        for _ in range(steps):
            loss = ((net(xt)[:, 0] - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _predictor(net, std)


def fit_pnn(x: np.ndarray, score: np.ndarray, *, hidden=(32, 32), steps: int = 300,
            pairs_per_step: int = 1024, lr: float = 3e-3, seed: int = 0):
    """PNN: MLP g with BCE(sigmoid(g(x_i) - g(x_j)), [s_i > s_j]) on random pairs; returns
    ``predict(x) = g(x)``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    std = _Standardised(x)
    xt = std(x)
    s = np.asarray(score)
    net = _mlp(xt.shape[1], hidden)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    with single_thread_on_cpu(torch.device("cpu")):
        for _ in range(steps):
            i, j = random_pairs(len(s), pairs_per_step, rng)
            target = torch.as_tensor((s[i] > s[j]).astype(np.float32))
            g = net(xt)[:, 0]
            loss = nn.functional.binary_cross_entropy_with_logits(g[i] - g[j], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return _predictor(net, std)


MIMICKERS = {"hln": fit_hln, "pnn": fit_pnn}


def grow_mimicker(kind: str, base: np.ndarray, candidates: np.ndarray, ae_score: np.ndarray, *,
                  y: np.ndarray | None = None, ado_target: float = 0.9, auc_tol: float = 0.01,
                  max_efps: int = 6, n_pairs: int = 20000, seed: int = 0, **fit_kw
                  ) -> tuple[list[int], list[dict[str, float]]]:
    """Grow a mimicker (``hln`` or ``pnn``) on ``base`` (n, B) plus EFP columns chosen from
    ``candidates`` (n, K). y (0/1, optional) enables the AUC stopping rule. Returns the chosen
    candidate columns and one row per stage (n_efps, added column, ado, auc, ado of the EFP on
    the pairs ordered differently)."""
    fit = MIMICKERS[kind]
    rng = np.random.default_rng(seed)
    pairs = random_pairs(len(ae_score), n_pairs, rng)
    ae_auc = auc(y, ae_score) if y is not None else None
    chosen: list[int] = []
    rows: list[dict[str, float]] = []
    added: dict[str, float] = {}
    while True:
        x = np.c_[base, candidates[:, chosen]]
        g = fit(x, ae_score, seed=seed, **fit_kw)(x)
        row = {**added, "n_efps": len(chosen), "ado": ado(g, ae_score, pairs)}
        if y is not None:
            row["auc"] = auc(y, g)
        rows.append(row)
        done = row["ado"] >= ado_target or (ae_auc is not None and row["auc"] >= ae_auc - auc_tol)
        if done or len(chosen) >= max_efps or len(chosen) == candidates.shape[1]:
            return chosen, rows
        wrong = decision_ordering(g, ae_score, pairs) < 1.0  # ordered differently (or tied)
        sub = (pairs[0][wrong], pairs[1][wrong])
        best, best_ado = -1, -1.0
        for c in range(candidates.shape[1]):
            if c in chosen:
                continue
            a = ado(candidates[:, c], ae_score, sub)
            a = max(a, 1.0 - a)
            if a > best_ado:
                best, best_ado = c, a
        chosen.append(best)
        added = {"added": best, "efp_ado_on_wrong_pairs": best_ado}


def mimic_evaluation(train_data: Mapping[str, np.ndarray], test_data: Mapping[str, np.ndarray], *,
                     seed: int = 0, dmax: int = 5, kinds: Sequence[str] = ("hln", "pnn"),
                     max_samples: int | None = 2000, ado_target: float = 0.9,
                     auc_tol: float = 0.01, max_efps: int = 6, steps: int = 300,
                     label_names: Mapping[int, str] | None = None,
                     images: Mapping | None = None, device: str | None = None) -> EvalResult:
    """Jet-image AE on the training background, then HLN / PNN mimickers grown on EFPs.

    The test jets are split in random halves: the first grows the mimickers, the second reports
    ``mimic_<kind>_ado`` (with the AE), ``mimic_<kind>_*`` ROC metrics per signal,
    ``mimic_<kind>_n_efps``; ``mimic_ae_*`` the AE on the same half. Tables
    ``mimic_<kind>_efps`` (the selected EFPs in order, with the stage's ADO / AUC on the
    selection half). ``images``: keyword arguments of ``image_ae_scores``; ``device``: where the
    image AE trains (the mimickers, 300 full-batch steps on <= 2000 jets, stay on the CPU).
    """
    te = {k: np.asarray(v)[:max_samples] for k, v in test_data.items()}
    img_res, (_, _, ae_score, _) = image_ae_scores(train_data, te, seed=seed, return_model=True,
                                                   label_names=label_names,
                                                   **{"device": device, **dict(images or {})})
    names = efp_names(dmax)
    p = te["particles"]
    cand = np.log10(np.abs(efps(p[..., 0], p[..., 1], p[..., 2], te["mask"], dmax=dmax)) + 1e-12)
    # the constant EFP (one vertex: sum z_i = 1) orders nothing; its log10 jitters at 1e-16
    keep = np.std(cand, 0) > 1e-9
    cand_idx = np.flatnonzero(keep)
    cand = cand[:, keep]
    base = np.log(jet_mass_pt(p, te["mask"]) + 1e-3)
    n = len(ae_score)
    half = np.zeros(n, bool)  # a random half grows the mimickers (stores may be sorted by label)
    half[np.random.default_rng(seed).permutation(n)[: n // 2]] = True
    label = np.asarray(te["label"])
    y_a = (label[half] > 0).astype(int)
    has_truth = bool((label >= 0).all()) and len(np.unique(y_a)) == 2
    metrics = signal_metrics(label[~half], ae_score[~half], "mimic_ae", label_names)
    metrics["images_ae_auc_all"] = img_res.metrics["images_ae_auc"]
    tables = {}
    rng = np.random.default_rng(seed + 1)
    pairs_b = random_pairs(int((~half).sum()), 20000, rng)
    for kind in kinds:
        chosen, rows = grow_mimicker(
            kind, base[half], cand[half], ae_score[half], seed=seed, ado_target=ado_target,
            auc_tol=auc_tol, max_efps=max_efps, steps=steps,
            y=y_a if has_truth else None)
        cols = np.c_[base, cand[:, chosen]]
        gb = MIMICKERS[kind](cols[half], ae_score[half], seed=seed, steps=steps)(cols[~half])
        metrics[f"mimic_{kind}_ado"] = ado(gb, ae_score[~half], pairs_b)
        metrics[f"mimic_{kind}_n_efps"] = float(len(chosen))
        metrics.update(signal_metrics(label[~half], gb, f"mimic_{kind}", label_names))
        tables[f"mimic_{kind}_efps"] = [
            {**r, **({"efp": names[cand_idx[r["added"]]]} if "added" in r else {})} for r in rows]
    return EvalResult(metrics=metrics, tables=tables)
