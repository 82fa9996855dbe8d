"""Baselines on the same samples as the linear classifier test.

Each baseline maps store samples to features, fits a classifier on the training set and scores
the disjoint test set; metrics use :func:`clrdist.eval.metrics.roc_metrics` with prefix
``baseline_<name>`` (``baseline_raw_auc``, ``baseline_jet_obs_inv_eps_b_at_0.5``, ...):

- ``raw``: flattened, pT-ordered constituents (pT / 600 GeV, eta and phi relative to the jet's
  pT-weighted centroid), linear classifier (the LCT on the inputs themselves);
- ``jet_obs``: jet mass, tau21, tau32 (store features when present, else computed here with
  :mod:`clrdist.physics.observables`, the definition the stores use: exclusive-kT axes),
  gradient-boosted trees (these few observables are not linearly separable);
- ``efp``: energy flow polynomials of degree <= 5 (energyflow, hadronic measure, beta = 1, on
  (pT, eta, phi)), log-scaled, linear classifier (linear in EFPs is the published use);
- ``supervised``: an encoder of the same size built by ``model_factory`` trained with a linear
  head on the labels (BCE) until a held-out fifth of the training samples stops improving (early
  stopping, best epoch kept), scored on the test set: the ceiling for the same architecture
  (:func:`train_supervised`; the runner trains it once and its representation is also the
  searches' supervised reference, ``<search>_sup_*``).

Samples are dicts of ``SampleStore.read_all()``: ``particles (n, P, 3) float32 [pT GeV, eta,
phi]``, ``mask (n, P) bool``, ``label (n,) int8``, ``features (n, K) float32``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clrdist.data.schema import DIJET_OBSERVABLES, JET_OBSERVABLES
from clrdist.eval.finetune import fit_classifier
from clrdist.eval.metrics import (
    DEFAULT_EPS_S,
    EvalResult,
    Roc,
    binary_labels,
    bootstrap_metrics,
    roc_metrics,
)
from clrdist.eval.plots import roc_figure, sic_figure
from clrdist.physics.observables import delta_phi, efps, jet_mass, nsubjettiness, tau_ratios

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs

ALL_BASELINES = ("raw", "jet_obs", "efp", "supervised")
PT_SCALE = 600.0  # GeV; JetCLR's input pT scale
R0 = 0.8  # jet radius for N-subjettiness normalisation (ratios do not depend on it)


# --- features ---------------------------------------------------------------------------------

def centred(particles: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, P, 3) [pT, eta, phi] -> same with eta, phi relative to the pT-weighted centroid
    (phi first taken relative to the hardest constituent so the centroid does not straddle
    the -pi/pi seam); padding stays zero."""
    p = np.array(particles[..., :3], dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    pt = np.where(m, p[..., 0], 0.0)
    lead = np.argmax(pt, axis=1)
    phi0 = np.take_along_axis(p[..., 2], lead[:, None], axis=1)
    dphi = delta_phi(p[..., 2], phi0)
    w = pt / np.maximum(pt.sum(axis=1, keepdims=True), 1e-12)
    eta_c = (w * p[..., 1]).sum(axis=1, keepdims=True)
    phi_c = (w * dphi).sum(axis=1, keepdims=True)
    out = np.stack([pt, p[..., 1] - eta_c, dphi - phi_c], axis=-1)
    return np.where(m[..., None], out, 0.0)


def raw_features(particles: np.ndarray, mask: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """Flattened pT-ordered constituents (n, P*3): pT/600 GeV, centred eta, phi."""
    c = centred(particles, mask)
    order = np.argsort(-c[..., 0], axis=1, kind="stable")
    c = np.take_along_axis(c, order[..., None], axis=1)
    if n_max is not None:
        c = c[:, :n_max]
    c[..., 0] /= PT_SCALE
    return c.reshape(len(c), -1)


def raw_inputs(data: Mapping[str, np.ndarray], kind: str = "jet",
               n_max: int | None = None) -> np.ndarray:
    """The raw-input reference of every evaluation, (n, D) float: for jets and dijets the
    centred, pT-ordered constituents of ``raw_features``; for events (``kind == "event"``) the
    objects as stored, flattened (their absolute directions and MET carry the physics)."""
    if kind == "event":
        return np.asarray(data["particles"], np.float64).reshape(len(data["mask"]), -1)
    return raw_features(data["particles"], data["mask"], n_max=n_max)




def jet_observables(data: Mapping[str, np.ndarray],
                    feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Jet mass [GeV], tau21, tau32 as (n, 3) from the store's features when present; for dijet
    stores (LHCO names) the six (m_J1, m_J2, tau21_J1, tau21_J2, tau32_J1, tau32_J2); otherwise
    computed here from the constituents, treated as one jet (massless four-vector sum;
    N-subjettiness with exclusive-kT axes, R0 = 0.8, as in converted and generated stores)."""
    names = list(feature_names or [])
    f = np.asarray(data["features"]) if "features" in data else None
    for want in (JET_OBSERVABLES, DIJET_OBSERVABLES):
        if f is not None and all(w in names for w in want):
            return np.stack([f[:, names.index(w)] for w in want], axis=1).astype(np.float64)
    p, mask = np.asarray(data["particles"], dtype=np.float64), np.asarray(data["mask"], dtype=bool)
    pt, eta, phi = p[..., 0], p[..., 1], p[..., 2]
    t21, t32 = tau_ratios(nsubjettiness(pt, eta, phi, mask, r0=R0))
    return np.stack([jet_mass(pt, eta, phi, mask), t21, t32], axis=1)


def efp_features(particles: np.ndarray, mask: np.ndarray, *, dmax: int = 5) -> np.ndarray:
    """All EFPs with degree <= dmax (n, n_efp; 102 for dmax = 5), hadronic measure, beta = 1,
    normalised energies, on (pT, eta, phi) of the real constituents (store layout: particles
    (n, P, 3), mask (n, P))."""
    p = np.asarray(particles, dtype=np.float64)
    return efps(p[..., 0], p[..., 1], p[..., 2], mask, dmax=dmax)


# --- classifiers ------------------------------------------------------------------------------

def _linear(xtr, ytr, xte, seed):
    # lazy: scikit-learn (~80 ms) only for the linear baseline
    from clrdist.eval.lct import linear_scores

    return linear_scores(xtr, ytr, xte, seed=seed)


def _trees(xtr, ytr, xte, seed):
    # lazy: scikit-learn's boosted trees (~130 ms) only for the tree baseline
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed)
    return clf.fit(xtr, ytr).predict_proba(xte)[:, 1]


@dataclass
class SupervisedFit:
    """An encoder of the run's size trained with labels (:func:`train_supervised`): its test
    scores and its representation, the supervised reference of the searches (``<name>_sup_*``)."""

    model: Any  # the torch module (x, mask) -> (B, D), with the best epoch's weights
    score: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, mask) prepared -> logits (n,)
    prepare: Callable[[np.ndarray, np.ndarray], tuple]  # (particles, mask) -> (x, mask)
    info: dict[str, float]  # epochs, best_epoch, val_loss

    def scores(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits (n,) of every sample of a store dict."""
        return self.score(*self.prepare(np.asarray(data["particles"]), np.asarray(data["mask"])))

    def encode(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """Representations (n, D) float32 of a store dict (the runner's ``Encoder``)."""
        # lazy: torch (~1.5 s) only once a supervised encoder exists
        import torch

        x, m = self.prepare(np.asarray(batch["particles"]), np.asarray(batch["mask"]))
        dev = next(self.model.parameters()).device  # where it was trained
        self.model.eval()
        with torch.no_grad():
            rep = self.model(torch.as_tensor(x, dtype=torch.float32).to(dev),
                             torch.as_tensor(m, dtype=torch.bool).to(dev))
        return rep.float().cpu().numpy()


def train_supervised(train_data: Mapping[str, np.ndarray], model_factory: Callable[[], object], *,
                     seed: int = 0, max_epochs: int = 100, patience: int = 8,
                     val_fraction: float = 0.2, batch_size: int = 128, lr: float = 1e-3,
                     prepare: Callable | None = None, device: str = "cpu") -> SupervisedFit:
    """Train ``model_factory()`` (a torch module ``(x (B,P,F), mask (B,P)) -> (B, D)``) plus a
    linear head on the labels of ``train_data`` with BCE until it has converged.

    Convergence: a seeded ``val_fraction`` of the labelled samples is held out; training (Adam,
    ``lr``) stops when the held-out BCE has not improved for ``patience`` epochs (or after
    ``max_epochs``), and the weights of the best epoch are kept.
    ``prepare(particles, mask) -> (x, mask)`` numpy arrays is the input transform (default:
    centred eta/phi and pT / 600 GeV, the JetCLR frame). ``device``: where it trains (and then
    encodes, :meth:`SupervisedFit.encode`)."""
    # lazy: torch (~1.5 s) only for the supervised baseline
    import torch

    prepare = prepare or _sorted_inputs
    keep_tr, ytr = binary_labels(train_data["label"])
    xtr, mtr = prepare(np.asarray(train_data["particles"])[keep_tr],
                       np.asarray(train_data["mask"])[keep_tr])
    if mtr.shape != xtr.shape[:2]:
        raise ValueError("prepare must return x (B, P, F) and mask (B, P)")
    order = np.random.default_rng(seed).permutation(len(ytr))
    n_val = max(1, int(round(val_fraction * len(ytr))))
    val, fit = order[:n_val], order[n_val:]
    if len(fit) == 0:
        raise ValueError(f"supervised baseline: {len(ytr)} labelled samples leave none to train "
                         f"on after holding out val_fraction {val_fraction}")

    torch.manual_seed(seed)
    model = model_factory()
    score, info = fit_classifier(model, (xtr[fit], mtr[fit], ytr[fit]),
                                 (xtr[val], mtr[val], ytr[val]), seed=seed, max_epochs=max_epochs,
                                 patience=patience, batch_size=batch_size, lr=lr, device=device)
    return SupervisedFit(model.eval(), score, prepare, info)


def _sorted_inputs(p, m):
    """Centred, pT-sorted (x, mask) in the JetCLR frame (pT / 600 GeV)."""
    x = raw_features(p, m).reshape(p.shape[0], -1, 3)
    return x.astype(np.float32), x[..., 0] > 0


# --- driver -----------------------------------------------------------------------------------

def run_baselines(train_data: Mapping[str, np.ndarray], test_data: Mapping[str, np.ndarray], *,
                  seed: int = 0, feature_names: Sequence[str] | None = None,
                  model_factory: Callable[[], object] | None = None,
                  rep_train: np.ndarray | None = None, rep_test: np.ndarray | None = None,
                  which: Sequence[str] | None = None, kind: str = "jet",
                  efp_max_samples: int = 2000,
                  supervised_max_epochs: int = 100, supervised_prepare: Callable | None = None,
                  supervised: Callable[[], SupervisedFit] | None = None,
                  eps_s: tuple[float, ...] = DEFAULT_EPS_S, n_boot: int = 0,
                  figures: bool = True, curves_out: dict | None = None) -> EvalResult:
    """Fit each baseline on ``train_data``, score ``test_data``; metrics ``baseline_<name>_*``.

    ``which`` defaults to every baseline that can run for the store ``kind`` (``jet``,
    ``dijet``: all; ``event``: ``raw``; ``supervised`` only with a ``model_factory``; ``supervised_prepare(particles, mask) -> (x, mask)`` is its input
    transform, default centred jets with pT / 600 GeV; ``supervised()``: that encoder
    already trained on ``train_data``, :class:`SupervisedFit`, which the runner shares with the
    searches' supervised reference).
    EFPs are slow (energyflow loops over jets in Python), so at most ``efp_max_samples`` of each set are used for them (``baseline_efp_n_test``
    records how many). If ``rep_train``/``rep_test`` are given, the
    representation's linear classifier is drawn on the same ROC/SIC figures
    (``baselines_roc.png``, ``baselines_sic.png``). ``curves_out`` (a dict) receives the
    ROC curves by legend label. ``n_boot > 0``: each metric's bootstrap error over test-set
    resamples, ``baseline_<name>_<metric>_std`` (the LCT's; the classifiers are not refitted).
    """
    if which is None:  # jet substructure baselines only make sense for jets and dijets
        which = ["raw"] if kind == "event" else ["raw", "jet_obs", "efp"]
        which += ["supervised"] if model_factory is not None or supervised is not None else []
    which = list(which)
    unknown = set(which) - set(ALL_BASELINES)
    if unknown:
        raise KeyError(f"unknown baseline(s) {sorted(unknown)}; known: {list(ALL_BASELINES)}")
    keep_tr, ytr = binary_labels(train_data["label"])
    keep_te, yte = binary_labels(test_data["label"])
    sel = lambda d, keep: {k: np.asarray(v)[keep] for k, v in d.items()}  # noqa: E731
    tr, te = sel(train_data, keep_tr), sel(test_data, keep_te)
    metrics: dict[str, float] = {}
    curves: dict[str, Roc] = {}

    def record(name: str, score: np.ndarray, y: np.ndarray, label: str) -> None:
        m, r = roc_metrics(y, score, f"baseline_{name}", eps_s=eps_s)
        metrics.update(m)
        if n_boot > 0:
            metrics.update(bootstrap_metrics(y, score, f"baseline_{name}", n_boot=n_boot,
                                             seed=seed, eps_s=eps_s))
        metrics[f"baseline_{name}_n_test"] = float(len(y))
        curves[label] = r

    if rep_train is not None and rep_test is not None:
        s = _linear(np.asarray(rep_train)[keep_tr], ytr, np.asarray(rep_test)[keep_te], seed)
        curves["representation (linear)"] = roc_metrics(yte, s, "rep", eps_s=eps_s)[1]
    for name in which:
        if name == "raw":
            s = _linear(raw_features(tr["particles"], tr["mask"]), ytr,
                        raw_features(te["particles"], te["mask"]), seed)
            record("raw", s, yte, "raw constituents (linear)")
        elif name == "jet_obs":
            s = _trees(jet_observables(tr, feature_names), ytr, jet_observables(te, feature_names),
                       seed)
            record("jet_obs", s, yte, r"$m_J$, $\tau_{21}$, $\tau_{32}$ (BDT)")
        elif name == "efp":
            ntr, nte = min(len(ytr), efp_max_samples), min(len(yte), efp_max_samples)
            f_tr = np.log10(np.abs(efp_features(tr["particles"][:ntr], tr["mask"][:ntr])) + 1e-12)
            f_te = np.log10(np.abs(efp_features(te["particles"][:nte], te["mask"][:nte])) + 1e-12)
            s = _linear(f_tr, ytr[:ntr], f_te, seed)
            record("efp", s, yte[:nte], r"EFPs $d\leq5$ (linear)")
        elif name == "supervised":
            if supervised is not None:  # the runner's, trained once for every evaluation
                fit = supervised()
            elif model_factory is not None:
                fit = train_supervised(tr, model_factory, seed=seed,
                                       max_epochs=supervised_max_epochs, prepare=supervised_prepare)
            else:
                raise ValueError("baseline 'supervised' needs a model_factory")
            record("supervised", fit.scores(te), yte, "supervised encoder")
            metrics.update({f"baseline_supervised_{k}": v for k, v in fit.info.items()})
    figs = {}
    if figures and curves:
        figs = {"baselines_roc.png": roc_figure(curves, "baselines"),
                "baselines_sic.png": sic_figure(curves, "baselines")}
    if curves_out is not None:
        curves_out.update(curves)
    return EvalResult(metrics=metrics, figures=figs)


SUPERVISED_LABEL = "supervised (same encoder, eval_train labels)"
ANOMALY_FIGURES = ("anomaly_znorm", "anomaly_ae")  # the runner's curves of clrdist.eval.anomaly


def evaluate(inp: Inputs, **options: Any) -> EvalResult:
    """The runner's adapter; the supervised encoder's ROC joins the comparison figures of the LCT
    and of the anomaly scores (the ceiling a label-free score can approach)."""
    ctx, curves = inp.ctx, {}
    res = run_baselines(inp.train_data, inp.test_data, seed=inp.seed,
                        feature_names=list(ctx.feature_names), kind=ctx.kind,
                        model_factory=ctx.model_factory, supervised_prepare=ctx.supervised_prepare,
                        supervised=inp.supervised, rep_train=inp.rep_train,
                        rep_test=inp.rep_test, curves_out=curves,
                        **{"n_boot": ctx.n_boot, **options})
    if "supervised encoder" in curves:
        for figure in ("lct", *ANOMALY_FIGURES):
            inp.curve(figure, curves["supervised encoder"], label=SUPERVISED_LABEL)
    return res
