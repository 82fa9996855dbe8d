"""Runs whose encoder saw truth labels (SupCon, ORCA) say so in MLflow: a search on their
representation is not blind (the CWoLa bump hunt and anomaly scores are read with this tag)."""

from pathlib import Path

import pytest

from clrdist import tracking
from clrdist.config import load_config
from clrdist.train.resume import _saw_labels, open_run

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


def test_losses_that_train_on_labels_are_known():
    assert _saw_labels(load_config(DEMO, ["loss.name=supcon"]))
    assert _saw_labels(load_config(DEMO, ["loss.name=orca", "loss.known_classes=[0]"]))
    assert not _saw_labels(load_config(DEMO))
    assert not _saw_labels(load_config(DEMO, ["loss.name=dino"]))


@pytest.mark.integration
def test_mlflow_run_is_tagged_with_whether_its_encoder_saw_labels(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for loss, expected in (("supcon", "true"), ("nt_xent", "false")):
        cfg = load_config(DEMO, [f"tracking.uri={uri}", f"loss.name={loss}",
                                 f"tracking.run_name=run_{loss}"])
        run_id, resumed = open_run(cfg)
        assert not resumed
        assert tracking.get_run(uri, run_id)["tags"][tracking.SAW_LABELS_TAG] == expected
