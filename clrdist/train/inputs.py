"""Store samples -> model inputs: the input transform recorded in the run config.

Stores hold physical quantities (pT in GeV, absolute eta, phi). The model sees jets centred on
their pT-weighted centroid (``model.frame: jet``), augmented (views need pT in GeV: the
soft-smearing width is Lambda_soft / pT), cut to the hardest ``data.n_particles`` and turned into
``model.input_features`` (``pt``: pT / ``data.pt_scale``, d_eta, d_phi; ``log``: the
log-pT features of ``clrdist.physics.frame.input_features``). Events (``model.frame: event``)
are not centred: their absolute directions and MET carry the physics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.physics.augment import View, apply_views
from clrdist.physics.frame import input_features, keep_hardest, to_model_frame


def _frame(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, cfg: RunConfig,
           device: str | torch.device, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest ``n`` constituents (stores are pT-ordered) as tensors, jets centred, pT in GeV."""
    x = torch.as_tensor(particles[:, :n], dtype=torch.float32, device=device)
    m = torch.as_tensor(mask[:, :n], dtype=torch.bool, device=device)
    if cfg.model.frame == "jet":
        x = to_model_frame(x, m)
    return x, m


def _features(x: torch.Tensor, m: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    return input_features(x, m, cfg.model.input_features, cfg.data.pt_scale)


def model_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 cfg: RunConfig, *, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """particles (B, P, F) pT in GeV, mask (B, P) bool -> un-augmented (x, mask) for the model:
    the hardest ``data.n_particles``, in the model frame, as ``model.input_features``."""
    x, m = _frame(particles, mask, cfg, device, cfg.data.n_particles)
    return _features(x, m, cfg), m


def view_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                cfg: RunConfig, views: Sequence[View], generator: torch.Generator, *,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Every view of the batch stacked along the batch axis: (V*B, n, W), (V*B, n).

    Views are made in GeV on ``device``, on the hardest ``augment.slots`` constituents (room for
    collinear splits; default ``data.n_particles``); then each view keeps its hardest
    ``data.n_particles`` and becomes ``model.input_features``. Identical consecutive views are
    computed in one call by ``apply_views``.
    """
    n = cfg.data.n_particles
    x, m = _frame(particles, mask, cfg, device, cfg.augment.slots or n)
    viewed = [keep_hardest(xv, mv, n) for xv, mv in apply_views(views, x, m, generator)]
    xs, ms = torch.cat([xv for xv, _ in viewed]), torch.cat([mv for _, mv in viewed])
    return _features(xs, ms, cfg), ms
