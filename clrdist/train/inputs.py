"""Store samples -> model inputs: the input transform recorded in the run config.

Stores hold physical quantities (pT in GeV, absolute eta, phi). The model sees jets centred on
their pT-weighted centroid, augmented (views need pT in GeV: the soft-smearing width is
Lambda_soft / pT), and then with pT divided by ``data.pt_scale``. Events (dense encoder) are not
centred: their absolute directions and MET carry the physics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.physics.frame import scale_pt, to_model_frame

View = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def model_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 cfg: RunConfig, *, device: str | torch.device = "cpu", view: View | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """particles (B, P, F) pT in GeV, mask (B, P) bool -> (x, mask) for the model.

    Only the first ``data.n_particles`` (hardest) constituents are used.
    """
    n = cfg.data.n_particles
    x = torch.as_tensor(np.asarray(particles[:, :n]) if not torch.is_tensor(particles) else particles[:, :n],
                        dtype=torch.float32, device=device)
    m = torch.as_tensor(np.asarray(mask[:, :n]) if not torch.is_tensor(mask) else mask[:, :n],
                        dtype=torch.bool, device=device)
    if cfg.model.encoder == "transformer":
        x = to_model_frame(x, m)
    if view is not None:
        x, m = view(x, m, generator)
    return scale_pt(x, cfg.data.pt_scale), m
