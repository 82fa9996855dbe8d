"""The one precision policy of training and benchmarks: ``scaling.precision: auto | fp32 | bf16``.

- ``fp32``: float32 everywhere (TF32 matmuls stay off).
- ``bf16``: bf16 autocast of the encoder's forward (weights and optimiser stay float32); on CUDA
  the float32 matmuls that remain use TF32.
- ``auto``: ``bf16`` on CUDA and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), else
  ``fp32``.

Whatever the policy, the similarity logits and the loss are computed in float32: the step runs
the loss under :func:`fp32_region` on float32 projections (exp(s / tau) at tau = 0.1 is visibly
coarse in bf16).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

__all__ = ["PRECISIONS", "Precision", "resolve", "cpu_has_bf16", "fp32_region"]

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_bf16() -> bool:
    """True where this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), which makes bf16
    autocast faster than float32; elsewhere bf16 is emulated and slower."""
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


@dataclass(frozen=True)
class Precision:
    """What a policy means on one device: ``name`` ("fp32" or "bf16", what was used),
    ``autocast`` (the autocast dtype or None) and ``tf32`` (TF32 matmuls on CUDA)."""

    name: str
    device_type: str
    autocast: torch.dtype | None
    tf32: bool

    def forward_context(self):
        """The autocast context of the encoder's forward (a no-op context for fp32)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.autocast)

    def apply_global(self) -> None:
        """Set the process-wide matmul precision this policy asks for (TF32 on CUDA for bf16,
        highest otherwise). Call once per process, before the first step."""
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        torch.set_float32_matmul_precision("high" if self.tf32 else "highest")


def resolve(policy: str, device: str | torch.device) -> Precision:
    """``scaling.precision`` on ``device`` -> the :class:`Precision` to use."""
    if policy not in PRECISIONS:
        raise ValueError(f"scaling.precision {policy!r}: expected one of {', '.join(PRECISIONS)}")
    dev = torch.device(device).type
    if policy == "auto":
        policy = "bf16" if dev == "cuda" or (dev == "cpu" and cpu_has_bf16()) else "fp32"
    bf16 = policy == "bf16"
    return Precision(policy, dev, torch.bfloat16 if bf16 else None, bf16 and dev == "cuda")


def fp32_region(device_type: str):
    """Autocast off (float32 stays float32): where the similarity logits and the loss are
    computed."""
    if not torch.amp.is_autocast_available(device_type):  # e.g. the meta device of the tests
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)
