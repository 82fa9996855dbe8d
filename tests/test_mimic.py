"""Decision ordering against a loop over pairs; the EFP growth picks what orders like the AE."""

import numpy as np
import pytest

from clrdist.data.toy import toy_dataset
from clrdist.eval.mimic import ado, decision_ordering, efp_names, grow_mimicker, mimic_evaluation


def test_decision_ordering_matches_a_loop_over_pairs():
    rng = np.random.default_rng(0)
    f, g = rng.integers(0, 4, 50).astype(float), rng.normal(size=50)  # f has ties
    i, j = rng.integers(0, 50, 300), rng.integers(0, 50, 300)
    slow = []
    for a, b in zip(i, j, strict=True):
        if f[a] == f[b] or g[a] == g[b]:
            slow.append(0.5)
        else:
            slow.append(1.0 if (f[a] > f[b]) == (g[a] > g[b]) else 0.0)
    np.testing.assert_array_equal(decision_ordering(f, g, (i, j)), slow)
    assert ado(f, g, (i, j)) == pytest.approx(np.mean(slow))
    assert ado(g, g, (i[i != j], j[i != j])) == 1.0 and ado(g, -g, (i[i != j], j[i != j])) == 0.0


@pytest.mark.parametrize("kind", ["hln", "pnn"])
def test_growth_adds_the_feature_that_orders_like_the_black_box(kind):
    rng = np.random.default_rng(1)
    n = 600
    base = rng.normal(size=(n, 2))
    cand = rng.normal(size=(n, 6))
    ae = np.exp(-2.0 * cand[:, 4]) + 0.05 * rng.normal(size=n)  # decreasing in candidate 4
    chosen, rows = grow_mimicker(kind, base, cand, ae, ado_target=0.9, max_efps=3, steps=150,
                                 seed=0)
    assert chosen[0] == 4
    assert rows[0]["n_efps"] == 0 and rows[0]["ado"] < 0.6  # the base features know nothing
    assert rows[1]["added"] == 4 and rows[1]["efp_ado_on_wrong_pairs"] > 0.9
    assert rows[-1]["ado"] >= 0.9 and len(chosen) == 1  # stopped once the target was reached


def test_mimic_evaluation_reports_selected_efps_ado_and_aucs():
    tr, te = toy_dataset(80, seed=0), toy_dataset(40, seed=1)
    order = np.argsort(te["label"], kind="stable")  # sorted by label: the halves must be random
    te = {k: v[order] for k, v in te.items()}
    res = mimic_evaluation(tr, te, dmax=2, images={"epochs": 2}, steps=30, max_efps=2)
    m = res.metrics
    for kind in ("hln", "pnn"):
        assert 0.0 <= m[f"mimic_{kind}_ado"] <= 1.0 and 0.0 <= m[f"mimic_{kind}_auc"] <= 1.0
        rows = res.tables[f"mimic_{kind}_efps"]
        assert rows[0]["n_efps"] == 0 and len(rows) == m[f"mimic_{kind}_n_efps"] + 1
        assert all(r["efp"] in efp_names(2) for r in rows[1:])
        assert all(r["efp"] != "efp_n1_d0_k0" for r in rows[1:])  # the constant EFP is no candidate
    assert 0.0 <= m["mimic_ae_auc"] <= 1.0


def test_run_evaluations_dispatches_the_image_and_open_world_evaluations():
    from clrdist.eval.runner import Context, run_evaluations

    tr, te = toy_dataset(60, seed=2), toy_dataset(30, seed=3)
    encode = lambda b: b["features"][:, [0, 3]]  # noqa: E731  (jet pT and mass)
    small = {"images": {"epochs": 1}, "nae": {"ae_epochs": 1, "nae_steps": 1, "batch_size": 16,
                                              "langevin": {"z_steps": 1, "x_steps": 1}},
             "mimic": {"dmax": 2, "images": {"epochs": 1}, "steps": 10, "max_efps": 1},
             "orca": {"known": [0]}}
    context = Context(label_names={0: "qcd", 1: "top"},
                      head=lambda rep: np.c_[rep[:, :1] * 0 + 0.7, rep[:, :1] * 0 + 0.3])
    res = run_evaluations(encode, train_data=tr, test_data=te, which={"nae", "images", "mimic", "orca"},
                          context=context, options=small)
    assert set(res) == {"nae", "images", "mimic", "orca"}
    assert {"nae_rep_auc", "nae_images_auc", "images_ae_auc", "mimic_hln_ado",
            "orca_known_acc"} <= {k for r in res.values() for k in r.metrics}
    assert res["orca"].metrics["orca_known_acc"] == 1.0  # every sample on head 0
    with pytest.raises(KeyError, match="jet store"):
        run_evaluations(encode, train_data=tr, test_data=te, which={"images"},
                        context=Context(kind="event"))
    with pytest.raises(KeyError, match="classifier head"):
        run_evaluations(encode, train_data=tr, test_data=te, which={"orca"})


def test_efp_names_are_distinct_and_follow_energyflows_order():
    names = efp_names(5)
    assert len(names) == 102 == len(set(names))  # products of graphs share N, d, k: not names
    assert names[:3] == ["efp_n1_d0_k0", "efp_n2_d1_k0", "efp_n2_d2_k0"]
    assert sum("_p" in n for n in names) > 0
