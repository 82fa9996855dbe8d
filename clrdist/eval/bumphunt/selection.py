"""The SR-vs-SB classifier, its out-of-fold scores, the selection and the efficiency-flatness
test of a CWoLa hunt (steps 2-3 of :mod:`clrdist.eval.bumphunt`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits


def _make_classifier(kind: str, seed: int):
    # lazy: the classifiers (scikit-learn, ~0.25 s) load only when a hunt fits one
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    if kind == "linear":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    if kind == "mlp":
        return make_pipeline(StandardScaler(), MLPClassifier(
            hidden_layer_sizes=(64, 32), early_stopping=True, n_iter_no_change=10,
            max_iter=1000, batch_size=256, random_state=seed))
    if kind == "gbdt":  # nonlinear and cheap (boxes in m_J, tau21); early stopping on 20%
        return HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.1, max_leaf_nodes=15, early_stopping=True,
            validation_fraction=0.2, n_iter_no_change=10, random_state=seed)
    raise KeyError(f"unknown classifier {kind!r}; known: ['gbdt', 'linear', 'mlp']")


@dataclass
class FoldScores:
    score: np.ndarray  # (n,) out-of-fold classifier score
    fold: np.ndarray  # (n,) fold of each event
    val_loss: float  # mean SR-vs-SB validation log loss
    val_loss_ref: float  # the same for a constant prediction at the training SR share


def fold_scores(x: np.ndarray, target: np.ndarray, train: np.ndarray, *, k: int = 5,
                classifier: str = "mlp", seed: int = 0) -> FoldScores:
    """Scores of every event from the models of its own fold.

    x: (n, D) features of all events; target: (n,) SR = 1 / SB = 0 (ignored outside ``train``);
    train: (n,) bool, the SR u SB events the classifiers learn from. For each test fold, every
    other fold serves once as validation fold (its SR-vs-SB log loss is the diagnostic) while the
    remaining k - 2 are trained on; the k - 1 models' average scores all events of the test
    fold, inside and outside SR u SB alike (none of those models saw them). "Nothing learnt" is
    the log loss of the constant SR share p of the training events, -p ln p - (1-p) ln(1-p)
    on average (ln 2 only when SR and SB are equal in size)."""
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(x)) % k
    score = np.zeros(len(x))
    losses: list[float] = []
    refs: list[float] = []
    for test in range(k):
        in_test = fold == test
        preds = []
        for val in range(k):
            if val == test:
                continue
            tr = train & (fold != test) & (fold != val)
            va = train & (fold == val)
            clf = _make_classifier(classifier, seed + 31 * test + val)
            with threadpool_limits(1):  # (gbdt: OpenMP oversubscribes a loaded machine)
                clf.fit(x[tr], target[tr])
                losses.append(log_loss(target[va], clf.predict_proba(x[va])[:, 1], labels=[0, 1]))
                preds.append(clf.predict_proba(x[in_test])[:, 1])
            prior = float(np.clip(target[tr].mean(), 1e-6, 1 - 1e-6))
            refs.append(log_loss(target[va], np.full(int(va.sum()), prior), labels=[0, 1]))
        score[in_test] = np.mean(preds, axis=0)
    return FoldScores(score, fold, float(np.mean(losses)), float(np.mean(refs)))


def select(score: np.ndarray, fold: np.ndarray, in_sb: np.ndarray, eps: float) -> np.ndarray:
    """(n,) bool: events whose score passes the threshold that keeps a fraction ``eps`` of the
    sideband events of their own fold (each fold's models have their own output scale and
    intercept: one global threshold on pooled scores sculpts deficits into the SR). The same
    rule for every event, whatever its m_jj."""
    if eps >= 1:
        return np.ones(len(score), bool)
    sel = np.zeros(len(score), bool)
    for g in np.unique(fold):
        in_g = fold == g
        ref = in_g & in_sb
        if ref.any():
            sel[in_g] = score[in_g] > np.quantile(score[ref], 1 - eps)
    return sel


@dataclass
class Window:
    """One signal region: bins [lo, hi) with ``sb`` sideband bins each side."""

    lo: int
    hi: int
    sb: int


def _bins(mjj: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, mjj, side="right") - 1, 0, len(edges) - 2)


def window_selections(b: np.ndarray, x: np.ndarray, w: Window, efficiencies: Sequence[float], *,
                      k: int = 5, classifier: str = "mlp", seed: int = 0
                      ) -> tuple[dict[float, np.ndarray], FoldScores]:
    """{eps: (n,) bool selection} of every event (bin index ``b``) for window ``w``, and the
    classifier's scores and validation log losses."""
    in_sr = (b >= w.lo) & (b < w.hi)
    in_sb = ((b >= w.lo - w.sb) & (b < w.lo)) | ((b >= w.hi) & (b < w.hi + w.sb))
    fs = fold_scores(x, in_sr.astype(int), in_sr | in_sb, k=k, classifier=classifier, seed=seed)
    return {eps: select(fs.score, fs.fold, in_sb, eps) for eps in efficiencies}, fs


def efficiency_flatness(b: np.ndarray, sel: np.ndarray, fold: np.ndarray, n_bins: int, *,
                        min_expected: float = 5.0) -> tuple[float, int, float]:
    """Background-only check that a selection keeps the same fraction of the events in every
    m_jj bin: (chi2, ndf, p) of the selected counts per bin against sum_g eps_g n_bg with
    binomial errors, eps_g the selection's overall efficiency in fold g (each fold has its own
    threshold, estimated from its sideband events: its efficiency differs from the nominal eps by
    that estimate's error, a normalisation and not a shape). Neighbouring bins are merged until
    each expects at least ``min_expected`` selected events (the chi2 distribution needs it at
    eps = 0.01). ndf = merged bins - folds."""
    folds = np.unique(fold)
    k_sel, mean, var = np.zeros(n_bins), np.zeros(n_bins), np.zeros(n_bins)
    for g in folds:
        in_g = fold == g
        n_g = np.bincount(b[in_g], minlength=n_bins).astype(float)
        eff = float(sel[in_g].mean())
        k_sel += np.bincount(b[in_g & sel], minlength=n_bins)
        mean += eff * n_g
        var += eff * (1 - eff) * n_g
    groups, acc = [], []
    for i in range(n_bins):
        acc.append(i)
        if mean[acc].sum() >= min_expected:
            groups.append(acc)
            acc = []
    if acc and groups:
        groups[-1] += acc
    ks = np.array([k_sel[g].sum() for g in groups])
    mu = np.array([mean[g].sum() for g in groups])
    v = np.array([var[g].sum() for g in groups])
    use = v > 0
    ndf = int(use.sum()) - len(folds)
    if ndf <= 0:
        return 0.0, 0, 1.0
    chi2 = float(np.sum((ks[use] - mu[use]) ** 2 / v[use]))
    return chi2, ndf, float(stats.chi2.sf(chi2, ndf))
