"""Store samples -> representations: the model's input transform and the encoder evaluation uses.

Stores hold physical quantities (pT in GeV, absolute eta, phi). The model sees jets centred on
their pT-weighted centroid (frame ``jet``), cut to the hardest ``n_particles`` and turned into
input features (``pt``: pT / ``pt_scale``, d_eta, d_phi; ``log``: the log-pT features of
``clrdist.physics.frame.input_features``). Events (frame ``event``) are not centred: their
absolute directions and MET carry the physics. :class:`InputTransform` holds those four values
(``clrdist.factory.input_transform(cfg)``: ``data.n_particles``, ``model.frame``,
``model.input_features``, ``data.pt_scale``). Training's augmented views
(``clrdist.train.inputs.view_inputs``) go through the same two steps, :func:`in_model_frame` and
:func:`as_input_features`, with the augmentations in between.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from clrdist.physics.frame import input_features, to_model_frame

# encode(samples) -> (n, D) float32 representations; samples: a SampleStore.read_all() dict
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class InputTransform:
    """What the model sees of store samples: the hardest ``n_particles`` constituents, centred
    on the jet (``frame`` "jet") or left in place ("event"), as ``features`` (a key of
    ``clrdist.physics.INPUT_FEATURES``) with pT / ``pt_scale`` (GeV)."""

    n_particles: int
    frame: Literal["jet", "event"]
    features: str
    pt_scale: float


def in_model_frame(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                   inputs: InputTransform, device: str | torch.device, n: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The hardest ``n`` constituents (stores are pT-ordered) as tensors (B, n, F), (B, n):
    jets centred (frame ``jet``), pT still in GeV."""
    x = torch.as_tensor(particles[:, :n], dtype=torch.float32, device=device)
    m = torch.as_tensor(mask[:, :n], dtype=torch.bool, device=device)
    if inputs.frame == "jet":
        x = to_model_frame(x, m)
    return x, m


def as_input_features(x: torch.Tensor, m: torch.Tensor, inputs: InputTransform) -> torch.Tensor:
    """(B, n, F) in the model frame, pT in GeV -> (B, n, W) input features."""
    return input_features(x, m, inputs.features, inputs.pt_scale)


def model_inputs(particles: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
                 inputs: InputTransform, *, device: str | torch.device = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """particles (B, P, F) pT in GeV, mask (B, P) bool -> un-augmented (x, mask) for the model:
    the hardest ``n_particles``, in the model frame, as input features."""
    x, m = in_model_frame(particles, mask, inputs, device, inputs.n_particles)
    return as_input_features(x, m, inputs), m


def numpy_inputs(particles: np.ndarray, mask: np.ndarray, inputs: InputTransform
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`model_inputs` as numpy arrays (the supervised baseline trains on them)."""
    x, m = model_inputs(particles, mask, inputs)
    return x.numpy(), m.numpy()


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): the first CUDA device when there is one, else the CPU; anything
    else as torch spells it (``cpu``, ``cuda``, ``cuda:1``)."""
    if spec is None or str(spec) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def encode_dtype(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype for encoding on ``device`` under a run's precision (``auto``,
    ``fp32``, ``bf16``: ``scaling.precision``): bf16 on GPUs when the run trains in bf16 (bf16
    or auto); None (fp32) on CPUs, whose representations stay those of the fp32 encoder."""
    if torch.device(device).type == "cpu":
        return None
    return torch.bfloat16 if precision in ("auto", "bf16") else None


def make_encoder(model: torch.nn.Module, inputs: InputTransform, batch_size: int = 2048,
                 device: str | torch.device = "cpu", autocast: torch.dtype | str | None = None
                 ) -> Encoder:
    """``encode(samples) -> (n, D)`` float32 representations (not projection-head outputs) of
    store samples, through the input transform ``inputs``; moves the model to ``device``
    (``auto``: :func:`resolve_device`) and sets it to eval mode.

    On a GPU each batch is copied from pinned memory without blocking, encoded under autocast
    (``autocast``: a dtype; a run's precision, ``auto`` / ``fp32`` / ``bf16``, through
    :func:`encode_dtype`; None: fp32) and its fp32 output copied back to pinned host memory in
    one copy per batch; the host waits once per call. On the CPU the numbers are those of the
    plain fp32 forward pass."""
    dev = resolve_device(device)
    dtype = encode_dtype(autocast, dev) if isinstance(autocast, str) else autocast
    model = model.to(dev).eval()
    cuda = dev.type == "cuda"
    n_keep = inputs.n_particles

    def to_device(a: np.ndarray, dt) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a[:, :n_keep], dtype=dt))
        return t.pin_memory().to(dev, non_blocking=True) if cuda else t

    @torch.inference_mode()
    def encode(samples: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        n = len(samples["mask"])
        for i in range(0, n, batch_size):
            p = to_device(samples["particles"][i:i + batch_size], np.float32)
            m = to_device(samples["mask"][i:i + batch_size], np.bool_)
            x, mask = model_inputs(p, m, inputs, device=dev)
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                rep = model.represent(x, mask)
            rep = rep.float()
            if cuda:  # one device -> pinned host copy per batch, waited for once below
                host = torch.empty(rep.shape, dtype=torch.float32, pin_memory=True)
                rep = host.copy_(rep, non_blocking=True)
            out.append(rep)
        if cuda:
            torch.cuda.current_stream(dev).synchronize()
        return (torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32))

    return encode


class Representation(torch.nn.Module):
    """``model``'s representation as a module, ``(x, mask) -> (B, D)`` (not the projection
    head's output): the supervised baseline trains a fresh one on the labels (inputs from
    :func:`numpy_inputs`), the fine-tuning a copy of the trained one."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.represent(x, mask)
