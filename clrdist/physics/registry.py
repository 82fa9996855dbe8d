"""The augmentation registry and the helpers every augmentation module shares.

An augmentation is a function

    f(x: (B, P, F) float, mask: (B, P) bool, generator: torch.Generator | None,
      strength: float = 1.0, **params) -> (x, mask)

registered by name with ``@register(name)`` in ``AUGMENTATIONS``. The modules that define them
(``clrdist.physics.augment``: jets; ``clrdist.physics.augment_event``: ADC2021 events) import
this module and nothing of each other; ``clrdist.physics.augment`` imports both, so once it is
imported (``build_view`` lives there) every name is registered.

The random helpers draw every number through the generator, on x's device and in x's dtype, so
the same seed gives the same augmented batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["Augmentation", "AUGMENTATIONS", "register", "get_augmentation", "rand", "randn",
           "zero_padding"]

Augmentation = Callable[..., tuple[torch.Tensor, torch.Tensor]]

AUGMENTATIONS: dict[str, Augmentation] = {}


def register(name: str) -> Callable[[Augmentation], Augmentation]:
    """Decorator: register ``fn`` as augmentation ``name`` (a name registered twice is an error)."""
    def deco(fn: Augmentation) -> Augmentation:
        if name in AUGMENTATIONS:
            raise ValueError(f"augmentation {name!r} registered twice")
        AUGMENTATIONS[name] = fn
        return fn
    return deco


def get_augmentation(name: str) -> Augmentation:
    """The augmentation registered as ``name``; KeyError listing the known names otherwise."""
    try:
        return AUGMENTATIONS[name]
    except KeyError:
        raise KeyError(f"unknown augmentation {name!r}; known: {', '.join(sorted(AUGMENTATIONS))}") from None


def rand(shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) numbers of ``shape`` on x's device, in x's dtype."""
    return torch.rand(shape, generator=gen, device=x.device, dtype=x.dtype)


def randn(shape, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """N(0, 1) numbers of ``shape`` on x's device, in x's dtype."""
    return torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype)


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x (B, P, F) with every padding slot (mask False) set to zero."""
    return torch.where(mask.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device))
