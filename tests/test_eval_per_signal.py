"""Several signal processes (ADC2021): one ROC summary per signal besides the combined one."""

import numpy as np
import pytest

from clrdist.eval.anomaly import anomaly_scores
from clrdist.eval.lct import linear_classifier_test
from clrdist.eval.metrics import auc, per_signal_metrics
from clrdist.eval.runner import Context, run_evaluations

NAMES = {-1: "unknown", 0: "background", 1: "Ato4l", 2: "leptoquark", 3: "hChToTauNu"}


def events(n=3000, seed=0):
    """Background N(0, 1) in 4 dims; signal s shifted by 0.5 s along axis s-1 (three signals of
    different strength), plus a few unknown-label samples."""
    rng = np.random.default_rng(seed)
    y = rng.choice([-1, 0, 0, 0, 1, 2, 3], n).astype(np.int8)
    x = rng.normal(size=(n, 4))
    for s in (1, 2, 3):
        x[y == s, s - 1] += 0.5 * s
    return x, y


def test_per_signal_metrics_are_each_signal_against_the_background():
    x, y = events()
    score = x[:, :3].sum(1)
    m = per_signal_metrics(y, score, "t", names=NAMES)
    for s, name in ((1, "Ato4l"), (2, "leptoquark"), (3, "hChToTauNu")):
        sel = (y == 0) | (y == s)
        assert m[f"t_{name}_auc"] == pytest.approx(auc((y[sel] == s).astype(int), score[sel]))
        assert f"t_{name}_inv_eps_b_at_0.3" in m
    assert m["t_Ato4l_auc"] < m["t_leptoquark_auc"] < m["t_hChToTauNu_auc"]
    assert per_signal_metrics(np.where(y > 1, 1, y), score, "t") == {}  # one signal: combined only


def test_lct_anomaly_and_runner_report_each_signal_process():
    x, y = events(seed=1)
    xt, yt = events(seed=2)
    lct = linear_classifier_test(x, y, xt, yt, n_boot=0, figures=False, label_names=NAMES).metrics
    assert {"lct_auc", "lct_Ato4l_auc", "lct_leptoquark_auc", "lct_hChToTauNu_auc",
            "lct_hChToTauNu_inv_eps_b_at_0.3"} <= set(lct)
    assert lct["lct_Ato4l_auc"] < lct["lct_auc"] < lct["lct_hChToTauNu_auc"]
    an = anomaly_scores(x, y, xt, yt, methods=("znorm",), figures=False,
                        label_names=NAMES).metrics
    assert {"anomaly_znorm_Ato4l_auc", "anomaly_znorm_hChToTauNu_inv_eps_b_at_0.2"} <= set(an)
    data = {"particles": np.zeros((len(y), 1, 3), np.float32), "mask": np.ones((len(y), 1), bool),
            "features": x.astype(np.float32), "label": y}
    test = {**data, "features": xt.astype(np.float32), "label": yt}

    def encode(batch):
        return batch["features"]

    res = run_evaluations(encode, train_data=data, test_data=test, which={"lct"},
                          context=Context(n_boot=0, kind="event", label_names=NAMES),
                          options={"lct": {"figures": False}})
    assert res["lct"].metrics["lct_leptoquark_auc"] == pytest.approx(lct["lct_leptoquark_auc"])
