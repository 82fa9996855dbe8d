"""Store samples -> augmented views for the training loop.

The un-augmented transform (model frame, hardest ``data.n_particles``, ``model.input_features``)
is :mod:`clrdist.models.encode`; views go through the same steps with the augmentations in
between, made in GeV (the soft-smearing width is Lambda_soft / pT).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.factory import input_transform
from clrdist.models.encode import as_input_features, in_model_frame
from clrdist.physics.augment import View, apply_views
from clrdist.physics.frame import keep_hardest


def view_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                cfg: RunConfig, views: Sequence[View], generator: torch.Generator, *,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Every view of the batch stacked along the batch axis: (V*B, n, W), (V*B, n).

    Views are made in GeV on ``device``, on the hardest ``augment.slots`` constituents (room for
    collinear splits; default ``data.n_particles``); then each view keeps its hardest
    ``data.n_particles`` (events, ``model.frame: event``, keep their slots in place: the ADC2021
    layout's slot is the object type) and becomes ``model.input_features``. Identical consecutive views are
    computed in one call by ``apply_views``.
    """
    n, inputs = cfg.data.n_particles, input_transform(cfg)
    x, m = in_model_frame(particles, mask, inputs, device, cfg.augment.slots or n)
    views_out = apply_views(views, x, m, generator)
    if cfg.model.frame == "event":  # fixed slot layout (the slot is the object type): no re-sort
        viewed = [(xv[:, :n], mv[:, :n]) for xv, mv in views_out]
    else:
        viewed = [keep_hardest(xv, mv, n) for xv, mv in views_out]
    xs, ms = torch.cat([xv for xv, _ in viewed]), torch.cat([mv for _, mv in viewed])
    return as_input_features(xs, ms, inputs), ms
