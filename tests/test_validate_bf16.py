"""Validation with bf16 weights (what DeepSpeed's bf16 mode leaves in the module) does not crash:
the float32 store inputs meet the bf16 weights under autocast (train/loop.py: validate)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clrdist.config import load_config
from clrdist.data.toy import toy_dataset
from clrdist.factory import initial_model

pytest.importorskip("ray")


def test_validation_runs_on_bf16_weights():
    from clrdist.train.loop import validate

    cfg = load_config(None, ["model.model_dim=16", "model.ff_dim=32", "model.heads=2",
                             "model.layers=1", "model.head_dims=[16]", "model.output_dim=8",
                             "model.input_features=pt", "model.input_dim=3", "data.n_particles=20"])
    model = initial_model(cfg.model, 0).to(torch.bfloat16)
    with pytest.raises(RuntimeError):  # what validation did before: float32 inputs, bf16 weights
        model(torch.ones(2, 4, 3), torch.ones(2, 4, dtype=torch.bool))
    val = (toy_dataset(40, seed=1, n_particles=20), toy_dataset(40, seed=2, n_particles=20))
    metrics = validate(SimpleNamespace(module=model), cfg, val, "cpu")
    assert 0.0 <= metrics["val_lct_auc"] <= 1.0 and np.isfinite(metrics["val_lct_auc"])
