"""The supervised ceiling on the training store's labels and the label-efficiency scan, with the
run's real encoder (a small transformer) and input transform on prong jets."""

import copy

import numpy as np
import pytest
import torch
from _eval_toys import mixed

from clrdist.config import load_config
from clrdist.eval.finetune import fit_classifier, label_efficiency, label_subset, supervised_ceiling
from clrdist.factory import build_model, input_transform
from clrdist.models.encode import Representation, numpy_inputs

CFG = load_config(None, ["model.model_dim=16", "model.ff_dim=32", "model.heads=2",
                         "model.layers=1", "model.dropout=0.0", "data.n_particles=20"])


def prepare(p, m):
    return numpy_inputs(p, m, input_transform(CFG))


def factory():
    return Representation(build_model(CFG.model))


def test_label_subset_keeps_both_classes_and_the_fraction():
    y = np.r_[np.zeros(900), np.ones(100)].astype(np.float32)
    idx = label_subset(y, 0.001, seed=0)
    assert set(y[idx]) == {0.0, 1.0}  # at least one of each class even at 0.1%
    idx = label_subset(y, 0.1, seed=0)
    assert (y[idx] == 0).sum() == 90 and (y[idx] == 1).sum() == 10
    assert not np.array_equal(idx, label_subset(y, 0.1, seed=1))  # seeds draw different labels


@pytest.mark.slow
def test_ceiling_trains_on_the_training_labels_and_stops_on_validation():
    tr, va, te = mixed(300, seed=40), mixed(100, seed=50), mixed(200, seed=60)
    res = supervised_ceiling(tr, va, te, model_factory=factory, prepare=prepare, seed=0,
                             max_epochs=60, patience=4)
    m = res.metrics
    assert m["ceiling_supervised_auc"] > 0.9 and m["ceiling_supervised_n_train"] == 600
    assert m["ceiling_supervised_epochs"] <= m["ceiling_supervised_best_epoch"] + 4
    unlabelled = {**tr, "label": np.full(600, -1, np.int8)}
    with pytest.raises(ValueError, match="training store: needs labelled"):
        supervised_ceiling(unlabelled, va, te, model_factory=factory, prepare=prepare)


@pytest.mark.slow
def test_pretraining_pays_off_when_labels_are_scarce():
    """A pre-trained encoder (here pre-trained on other labelled jets) fine-tuned on 5% of the
    labels beats the same architecture from scratch on those labels; the linear probe on the
    frozen representation too; every row over two seeds."""
    tr, va, te = mixed(160, seed=1), mixed(50, seed=2), mixed(100, seed=3)
    pre_tr, pre_va = mixed(200, seed=4), mixed(50, seed=5)
    torch.manual_seed(0)
    encoder = factory()
    fit_classifier(encoder, (*prepare(pre_tr["particles"], pre_tr["mask"]), pre_tr["label"]),
                   (*prepare(pre_va["particles"], pre_va["mask"]), pre_va["label"]),
                   max_epochs=10, patience=3)
    res = label_efficiency(tr, va, te, pretrained=lambda: copy.deepcopy(encoder),
                           model_factory=factory, prepare=prepare, fractions=(0.05, 1.0),
                           n_seeds=2, max_epochs=8, patience=3)
    m = res.metrics
    rows = res.tables["finetune_label_efficiency"]
    assert len(rows) == 2 * 2 * 3 and {r["n_labels"] for r in rows} == {16, 320}
    assert m["finetune_finetuned_auc_f_0.05"] > m["finetune_scratch_auc_f_0.05"]
    assert m["finetune_probe_auc_f_0.05"] > m["finetune_scratch_auc_f_0.05"]
    assert m["finetune_scratch_auc_f_1"] > m["finetune_scratch_auc_f_0.05"]  # labels help scratch
    assert "finetune_scratch_auc_f_0.05_seed_std" in m and m["finetune_n_seeds"] == 2
    assert "finetune_label_efficiency.png" in res.figures
