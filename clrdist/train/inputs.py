"""Store samples -> model inputs: the input transform recorded in the run config.

Stores hold physical quantities (pT in GeV, absolute eta, phi). The model sees jets centred on
their pT-weighted centroid (``model.frame: jet``), augmented (views need pT in GeV: the
soft-smearing width is Lambda_soft / pT), and then with pT divided by ``data.pt_scale``. Events
(``model.frame: event``) are not centred: their absolute directions and MET carry the physics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.physics.augment import View, apply_views
from clrdist.physics.frame import scale_pt, to_model_frame


def _frame(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, cfg: RunConfig,
           device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest ``data.n_particles`` constituents as tensors, jets centred, pT in GeV."""
    n = cfg.data.n_particles
    x = torch.as_tensor(particles[:, :n], dtype=torch.float32, device=device)
    m = torch.as_tensor(mask[:, :n], dtype=torch.bool, device=device)
    if cfg.model.frame == "jet":
        x = to_model_frame(x, m)
    return x, m


def model_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 cfg: RunConfig, *, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """particles (B, P, F) pT in GeV, mask (B, P) bool -> un-augmented (x, mask) for the model."""
    x, m = _frame(particles, mask, cfg, device)
    return scale_pt(x, cfg.data.pt_scale), m


def view_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                cfg: RunConfig, views: Sequence[View], generator: torch.Generator, *,
                device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Every view of the batch stacked along the batch axis: (V*B, P, F), (V*B, P).

    Views are made in GeV (before pT scaling) on ``device``; identical consecutive views are
    computed in one call by ``apply_views``.
    """
    x, m = _frame(particles, mask, cfg, device)
    viewed = apply_views(views, x, m, generator)
    xs = scale_pt(torch.cat([xv for xv, _ in viewed]), cfg.data.pt_scale)
    return xs, torch.cat([mv for _, mv in viewed])
