"""Losses: one protocol (``clrdist.losses.base.Loss``), one file per family.

    contrastive.py  nt_xent (and its decoupled form), anomalyclr, anomalyclr_plus, supcon
    dino.py         DINO self-distillation (teacher, centre)
    orca.py         ORCA open-world semi-supervised learning

``build_loss(cfg)`` makes one from a ``loss`` config section (any object with its fields).
"""

from __future__ import annotations

from clrdist.losses.base import Loss
from clrdist.losses.contrastive import (
    AnomalyCLRLoss,
    AnomalyCLRPlusLoss,
    NTXentLoss,
    SupConLoss,
    anomalyclr,
    anomalyclr_plus,
    nt_xent,
    supcon,
)
from clrdist.losses.dino import DINOLoss
from clrdist.losses.orca import ORCALoss

__all__ = ["Loss", "nt_xent", "anomalyclr", "anomalyclr_plus", "supcon", "NTXentLoss",
           "AnomalyCLRLoss", "AnomalyCLRPlusLoss", "SupConLoss", "DINOLoss", "ORCALoss", "LOSSES",
           "build_loss"]

LOSSES: dict[str, type[Loss]] = {
    "nt_xent": NTXentLoss,
    "anomalyclr": AnomalyCLRLoss,
    "anomalyclr_plus": AnomalyCLRPlusLoss,
    "supcon": SupConLoss,
    "dino": DINOLoss,  # teacher, centre (stateful)
    "orca": ORCALoss,  # classifier head, adaptive margin
}


def build_loss(cfg) -> Loss:
    """A ``loss`` config section -> loss module; unknown name -> KeyError listing the known ones.
    ``keep_positive: null`` (the config default) leaves the denominator to the loss's published
    form (``published_keep_positive``), never to one global default."""
    try:
        cls = LOSSES[cfg.name]
    except KeyError:
        raise KeyError(f"unknown loss {cfg.name!r}; known: {', '.join(sorted(LOSSES))}") from None
    return cls.from_config(cfg)
