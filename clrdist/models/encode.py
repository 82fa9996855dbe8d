"""Store samples -> representations: the model's input transform and the encoder evaluation uses.

Stores hold physical quantities (pT in GeV, absolute eta, phi). The model sees jets centred on
their pT-weighted centroid (``model.frame: jet``), cut to the hardest ``data.n_particles`` and
turned into ``model.input_features`` (``pt``: pT / ``data.pt_scale``, d_eta, d_phi; ``log``: the
log-pT features of ``clrdist.physics.frame.input_features``). Events (``model.frame: event``)
are not centred: their absolute directions and MET carry the physics. Training's augmented views
(``clrdist.train.inputs.view_inputs``) go through the same two steps, :func:`in_model_frame` and
:func:`as_input_features`, with the augmentations in between.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from clrdist.config import RunConfig
from clrdist.models import build_model
from clrdist.physics.frame import input_features, to_model_frame

# encode(samples) -> (n, D) float32 representations; samples: a SampleStore.read_all() dict
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]


def in_model_frame(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                   cfg: RunConfig, device: str | torch.device, n: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest ``n`` constituents (stores are pT-ordered) as tensors (B, n, F), (B, n):
    jets centred (``model.frame: jet``), pT still in GeV."""
    x = torch.as_tensor(particles[:, :n], dtype=torch.float32, device=device)
    m = torch.as_tensor(mask[:, :n], dtype=torch.bool, device=device)
    if cfg.model.frame == "jet":
        x = to_model_frame(x, m)
    return x, m


def as_input_features(x: torch.Tensor, m: torch.Tensor, cfg: RunConfig) -> torch.Tensor:
    """(B, n, F) in the model frame, pT in GeV -> (B, n, W) ``model.input_features``."""
    return input_features(x, m, cfg.model.input_features, cfg.data.pt_scale)


def model_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 cfg: RunConfig, *, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """particles (B, P, F) pT in GeV, mask (B, P) bool -> un-augmented (x, mask) for the model:
    the hardest ``data.n_particles``, in the model frame, as ``model.input_features``."""
    x, m = in_model_frame(particles, mask, cfg, device, cfg.data.n_particles)
    return as_input_features(x, m, cfg), m


def numpy_inputs(particles: np.ndarray, mask: np.ndarray, cfg: RunConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`model_inputs` as numpy arrays (the supervised baseline trains on them)."""
    x, m = model_inputs(particles, mask, cfg)
    return x.numpy(), m.numpy()


def make_encoder(model: torch.nn.Module, cfg: RunConfig, batch_size: int = 2048,
                 device: str | torch.device = "cpu") -> Encoder:
    """``encode(samples) -> (n, D)`` representations (not projection-head outputs) of store
    samples, through the run's input transform; sets the model to eval mode."""
    model = model.to(device).eval()

    @torch.no_grad()
    def encode(samples: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        n = len(samples["mask"])
        for i in range(0, n, batch_size):
            x, mask = model_inputs(samples["particles"][i:i + batch_size],
                                   samples["mask"][i:i + batch_size], cfg, device=device)
            out.append(model.represent(x, mask).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    return encode


class Representation(torch.nn.Module):
    """A fresh encoder of a run's architecture, ``(x, mask) -> (B, D) representation``: the
    supervised baseline trains it on the labels (inputs from :func:`numpy_inputs`)."""

    def __init__(self, cfg: RunConfig):
        super().__init__()
        self.model = build_model(cfg.model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.represent(x, mask)
