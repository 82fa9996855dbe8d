"""Open-world evaluation of an ORCA classifier (Cao et al., arXiv:2102.03526).

The classifier has C heads: the first K = len(known) for the known classes (store labels in
``known``, in that order), the rest for novel classes. On the labelled test set:

- known accuracy: fraction of known-class samples whose argmax head is their class's head;
- novel clustering accuracy: on the samples of the other (novel) classes, the best one-to-one
  map of predicted heads to true labels (Hungarian algorithm on the confusion matrix,
  scipy.optimize.linear_sum_assignment), then the fraction predicted right, as ORCA reports it;
- all clustering accuracy: the same map over all samples;
- anomaly score = probability of the novel heads, 1 - sum_{k < K} p_k: ROC metrics of every
  signal against background (label 0) via ``signal_metrics``.

Metric names ``orca_known_acc``, ``orca_novel_cluster_acc``, ``orca_all_cluster_acc``,
``orca_anomaly_*``; table ``orca_confusion`` (rows: true label, columns: head).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from clrdist.eval.jetimages import signal_metrics
from clrdist.eval.metrics import EvalResult

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs


def cluster_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy under the best one-to-one map of predicted clusters to true labels."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.size == 0:
        return float("nan")
    t_vals, t_idx = np.unique(y_true, return_inverse=True)
    p_vals, p_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((len(p_vals), len(t_vals)), np.int64)
    np.add.at(counts, (p_idx, t_idx), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / y_true.size)


def openworld_evaluation(probs: np.ndarray, label: np.ndarray, *, known: Sequence[int] = (0,),
                         label_names: Mapping[int, str] | None = None) -> EvalResult:
    """probs: (n, C) head probabilities; label: (n,) store labels (< 0 dropped)."""
    probs, label = np.asarray(probs, np.float64), np.asarray(label).ravel()
    keep = label >= 0
    probs, label = probs[keep], label[keep]
    known = [int(k) for k in known]
    if probs.shape[1] <= len(known):
        raise ValueError(f"orca: {probs.shape[1]} heads leave no novel class for known {known}")
    pred = probs.argmax(1)
    is_known = np.isin(label, known)
    head_of = {k: i for i, k in enumerate(known)}
    metrics = {
        "orca_known_acc": float(np.mean([pred[i] == head_of[label[i]] for i in np.flatnonzero(is_known)]))
        if is_known.any() else float("nan"),
        "orca_novel_cluster_acc": cluster_accuracy(label[~is_known], pred[~is_known]),
        "orca_all_cluster_acc": cluster_accuracy(label, pred),
    }
    if (label == 0).any() and (label > 0).any():
        novel_prob = 1.0 - probs[:, :len(known)].sum(1)
        metrics.update(signal_metrics(label, novel_prob, "orca_anomaly", label_names))
    table = [{"label": int(t), **{f"head_{h}": int(((label == t) & (pred == h)).sum())
                                  for h in range(probs.shape[1])}} for t in np.unique(label)]
    return EvalResult(metrics=metrics, tables={"orca_confusion": table})


def evaluate(inp: Inputs, **options: Any) -> EvalResult | None:
    """The runner's adapter: the head's probabilities on the test set; the untrained reference
    is the untrained encoder through its own (untrained) head."""
    if inp.head is None:
        if inp.reference:
            return None
        raise KeyError("orca: needs the run's classifier head (a run trained with loss.name: orca)")
    known = {} if inp.ctx.known_classes is None else {"known": list(inp.ctx.known_classes)}
    names = {int(k): v for k, v in (inp.ctx.label_names or {}).items()}
    return openworld_evaluation(inp.head(inp.rep_test), inp.y_test, label_names=names,
                                **{**known, **options})
