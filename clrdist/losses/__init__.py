"""Losses: one protocol (``clrdist.losses.base.Loss``), one file per family.

    contrastive.py  nt_xent (and its decoupled form), anomalyclr, anomalyclr_plus, supcon
    dino.py         DINO self-distillation (teacher, centre)
    orca.py         ORCA open-world semi-supervised learning

``LOSSES`` names them; ``clrdist.factory.build_loss`` makes one from a ``loss`` config section.
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
           "AnomalyCLRLoss", "AnomalyCLRPlusLoss", "SupConLoss", "DINOLoss", "ORCALoss", "LOSSES"]

LOSSES: dict[str, type[Loss]] = {
    "nt_xent": NTXentLoss,
    "anomalyclr": AnomalyCLRLoss,
    "anomalyclr_plus": AnomalyCLRPlusLoss,
    "supcon": SupConLoss,
    "dino": DINOLoss,  # teacher, centre (stateful)
    "orca": ORCALoss,  # classifier head, adaptive margin
}

