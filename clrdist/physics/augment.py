"""Batched jet augmentations on torch tensors, on the tensor's device.

Every augmentation is a function

    f(x: (B, P, 3) float [pT GeV, eta, phi] in the model frame, mask: (B, P) bool,
      generator: torch.Generator | None, strength: float = 1.0, **params) -> (x, mask)

that never modifies its inputs, keeps padding at zero / False (inputs must be zero-padded, as
``to_model_frame`` and every augmentation leave them), draws all randomness from
``generator`` (same seed -> same output) and has no Python loop over jets. ``strength`` scales
the size of every augmentation (for sweeps); 1 gives the published defaults (docs/reference.md).
They are registered by name in ``AUGMENTATIONS`` (``clrdist.physics.registry``; the event
augmentations of ``augment_event`` too, imported here); ``build_view`` turns the config's ordered
list of ``AugmentSpec`` into one ``View``, ``apply_views`` applies several to one batch. On CPU float32 batches the JetCLR steps (rotate,
translate, smear_soft, collinear_split) run in the fused C kernel of ``clrdist.physics.kernel``
unless the backend is "torch" (``augment.backend``: ``build_view``'s argument); same
distributions, other random numbers. On other devices (or with ``fixed=True``) views work on
fixed slots: no output shape depends on the data, so a GPU step never waits on the host.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch

# augment_event, augment_jet: importing them registers the event and further jet augmentations,
# so every name build_view may look up is known once this module is imported.
from clrdist.physics import augment_event, kernel  # noqa: F401
from clrdist.physics.augment_jet import drop, feature_mask, pt_reweight, subjet_shift
from clrdist.physics.registry import (
    AUGMENTATIONS,
    Augmentation,
    get_augmentation,
    register,
)
from clrdist.physics.slots import (
    _collinear_split,
    _Jets,
    _rotate,
    _smear_soft,
    _translate,
)

__all__ = ["AUGMENTATIONS", "Augmentation", "register", "get_augmentation", "rotate", "translate",
           "smear_soft", "collinear_split", "drop", "pt_reweight", "subjet_shift", "feature_mask",
           "planar", "BACKENDS", "set_backend", "get_backend", "View", "build_view", "apply_views"]

Step = tuple[Augmentation, dict[str, Any]]  # an augmentation and its parameters


def planar(x: torch.Tensor) -> torch.Tensor:
    """The same (B, P, F) values stored feature-major (strides (F P, 1, P)): every x[..., k] is a
    contiguous (B, P) plane, which makes per-feature arithmetic faster."""
    return x.transpose(1, 2).contiguous().transpose(1, 2)


# ---- the JetCLR augmentations (their slot-major steps: clrdist.physics.slots) ------------------- ------------------------------------------------------------------

def _on_batch(fn: Augmentation, x: torch.Tensor, mask: torch.Tensor,
              generator: torch.Generator | None, strength: float, **params) -> tuple[torch.Tensor, torch.Tensor]:
    """One JetCLR augmentation called alone: the code path of a one-step view."""
    return _run_steps([(fn, params)], strength, x, mask, generator)


@register("rotate")
def rotate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
           strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each jet in the (eta, phi) plane about its pT-weighted centroid.

    Angle ~ U(-pi s, pi s) with s = strength (s = 1: uniform over the circle, i.e. U(0, 2 pi)).
    Conserves pT, the centroid and all pairwise distances.
    """
    return _on_batch(rotate, x, mask, generator, strength)


@register("translate")
def translate(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
              strength: float = 1.0, width: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift eta and phi of each jet by U(-w r, w r), w = width * strength, r = the peak-to-peak
    range of that coordinate over the jet's real constituents (padding excluded).
    """
    return _on_batch(translate, x, mask, generator, strength, width=width)


@register("smear_soft")
def smear_soft(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
               strength: float = 1.0, lambda_soft: float = 0.1,
               pt_clip_min: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft smearing: eta' ~ N(eta, L / pT), phi' ~ N(phi, L / pT), L = lambda_soft * strength
    (GeV, default 0.1), pT clipped below at ``pt_clip_min`` GeV. pT is unchanged.
    """
    return _on_batch(smear_soft, x, mask, generator, strength,
                     lambda_soft=lambda_soft, pt_clip_min=pt_clip_min)


@register("collinear_split")
def collinear_split(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None,
                    strength: float = 1.0, fill: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Collinear splitting into empty slots: a constituent (pT, eta, phi) becomes (r pT, eta, phi)
    and ((1 - r) pT, eta, phi), r ~ U(0, 1); each constituent is split at most once.

    As in the public JetCLR code, a jet with n real constituents gets k = max(n, fill * P) - n
    splits (so slots fill up to max(n, fill * P)), limited by n and by the empty slots; strength
    scales k. Conserves the 4-momentum sum, the centroid and the (eta, phi) occupancy.
    """
    return _on_batch(collinear_split, x, mask, generator, strength, fill=fill)


_SLOT_MAJOR: dict[Augmentation, Callable[..., None]] = {
    rotate: _rotate, translate: _translate, smear_soft: _smear_soft, collinear_split: _collinear_split,
}


# ---- backends: the fused CPU kernel or torch ops ----------------------------------------------

BACKENDS = ("auto", "torch", "kernel")


def _checked(name: str, source: str = "augmentation backend") -> str:
    if name not in BACKENDS:
        raise ValueError(f"{source} {name!r}: expected one of {', '.join(BACKENDS)}")
    return name


_backend = "auto"  # of direct augmentation calls; views carry their own (augment.backend)
_warned_unavailable = False


def set_backend(name: str) -> str:
    """Default backend of augmentations called directly (``rotate(x, mask, gen)``) and of views
    built with ``backend=None``; returns the previous one. Training builds its views with
    ``augment.backend``, a plain argument (tests switch this default to run both backends).

    "kernel": the fused C kernel (clrdist.physics.kernel) for CPU float32 batches, an error if it
    cannot be built; "torch": torch ops always; "auto" (default):
    the kernel where it applies and builds, torch otherwise (with one warning if it does not
    build). GPU and other-dtype batches always take the torch path. The two backends draw
    different random numbers from the same generator; the distributions are the same.
    """
    global _backend
    previous, _backend = _backend, _checked(name)
    return previous


def get_backend() -> str:
    """The process-wide default backend (see ``set_backend``)."""
    return _backend


def _use_kernel(x: torch.Tensor, mask: torch.Tensor, backend: str | None) -> bool:
    global _warned_unavailable
    backend = backend or _backend  # validated by set_backend / build_view
    if backend == "torch" or not kernel.supports(x, mask):
        return False
    try:
        kernel.require()
    except kernel.KernelUnavailable as e:
        if backend == "kernel":
            raise
        if not _warned_unavailable:
            _warned_unavailable = True
            warnings.warn(f"{e}\nclrdist: using the (slower) torch augmentations", RuntimeWarning,
                          stacklevel=3)
        return False
    return True


@functools.cache
def _defaults(fn: Augmentation) -> dict[str, Any]:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty}


def _kernel_step(fn: Augmentation, params: dict[str, Any]) -> tuple[str, tuple[float, ...]]:
    """(kernel op name, its parameters in the kernel's order, defaults filled in)."""
    name = fn.__name__
    names = kernel.OPS[name][1]
    for k in params:
        if k not in names:
            raise TypeError(f"{name}() got an unexpected keyword argument {k!r}")
    defaults = _defaults(fn)
    return name, tuple(float(params.get(k, defaults[k])) for k in names)


def _run_steps(steps: Sequence[Step], strength: float,
               x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
               reps: int = 1, backend: str | None = None,
               programs: dict[tuple[int, int], kernel.Program] | None = None,
               fixed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply steps in order to the batch repeated ``reps`` times. Consecutive JetCLR steps run as
    one fused kernel call (CPU float32; ``programs`` caches their kernel programs by step range)
    or share one slot-major working copy (torch); the others run on the (B, P, F) batch,
    feature-planar on the CPU. ``fixed`` (None: on every device but the CPU): fixed slots, no
    host read of the data (the fused kernel is then not used)."""
    if fixed is None:
        fixed = x.device.type != "cpu"
    st: _Jets | None = None
    i = 0
    while i < len(steps):
        fn, params = steps[i]
        fast = _SLOT_MAJOR.get(fn)
        if fast is not None:
            if st is None and not fixed and _use_kernel(x, mask, backend):
                j = i
                while j < len(steps) and steps[j][0] in _SLOT_MAJOR:
                    j += 1
                prog = programs.get((i, j)) if programs is not None else None
                if prog is None:
                    prog = kernel.Program([_kernel_step(f, p) for f, p in steps[i:j]])
                    if programs is not None:
                        programs[(i, j)] = prog
                x, mask = kernel.run(prog, strength, x, mask, generator, reps)
                reps, i = 1, j
                continue
            if st is None:
                st, reps = _Jets(x, mask, reps, fixed), 1
            fast(st, generator, strength=strength, **params)
            i += 1
            continue
        if st is not None:
            (x, mask), st = st.batch(), None
        if reps > 1:
            x, mask, reps = x.repeat(reps, *([1] * (x.dim() - 1))), mask.repeat(reps, 1), 1
        j = i
        while j < len(steps) and steps[j][0] not in _SLOT_MAJOR:
            j += 1
        if j - i > 1 and x.is_contiguous() and x.device.type == "cpu":
            x = planar(x)  # one copy; the steps then work on contiguous feature planes
        for fn, params in steps[i:j]:
            x, mask = fn(x, mask, generator, strength=strength, **params)
        i = j
    if st is not None:
        return st.batch()
    if reps > 1:
        x, mask = x.repeat(reps, *([1] * (x.dim() - 1))), mask.repeat(reps, 1)
    return x.contiguous(), mask


class View:
    """An ordered list of augmentations applied as one: ``view(x, mask, generator) -> (x, mask)``.

    ``steps`` ((augmentation, params) in order), ``strength``, ``backend`` and ``fixed`` say
    what it does; views with the same four are interchangeable, which ``apply_views`` uses to
    fuse them. Made by ``build_view``, which checks names and parameters.

    ``fixed``: work on fixed slots, with no operation whose output shape depends on the data
    and no read of the data on the host (what a GPU needs: no host sync per step). None (default):
    fixed on every device but the CPU, where trimming to the batch's longest jet is faster.
    """

    __slots__ = ("steps", "strength", "backend", "fixed", "_programs")

    def __init__(self, steps: Sequence[Step], strength: float = 1.0, backend: str | None = None,
                 fixed: bool | None = None):
        self.steps: tuple[Step, ...] = tuple((fn, dict(params)) for fn, params in steps)
        self.strength = strength
        self.backend = backend
        self.fixed = fixed
        self._programs: dict[tuple[int, int], kernel.Program] = {}  # fused kernel programs

    @property
    def key(self) -> tuple[Any, ...]:
        """Equal keys: the same augmentations, parameters, strength, backend and slot mode."""
        return self.steps, self.strength, self.backend, self.fixed

    def __call__(self, x: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, P, F) [pT GeV, eta, phi, ...], mask (B, P) bool -> the augmented (x, mask)."""
        return _run_steps(self.steps, self.strength, x, mask, generator, backend=self.backend,
                          programs=self._programs, fixed=self.fixed)

    def repeated(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None,
                 reps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The view of the batch repeated ``reps`` times: (reps B, P, F), (reps B, P); every row
        draws its own randomness."""
        return _run_steps(self.steps, self.strength, x, mask, generator, reps, self.backend,
                          self._programs, self.fixed)

    def __repr__(self) -> str:
        names = ", ".join(fn.__name__ for fn, _ in self.steps)
        return f"View([{names}], strength={self.strength}, backend={self.backend}, fixed={self.fixed})"


def build_view(specs: Sequence[Any], strength: float = 1.0, backend: str | None = None,
               fixed: bool | None = None) -> View:
    """Ordered list of specs (objects with ``.name`` and ``.params``, e.g. config.AugmentSpec,
    or dicts with those keys) -> a ``View``: callable(x, mask, generator) -> (x, mask).

    Unknown names fail here, at build time, with a KeyError listing the known names. The view
    gives exactly what calling its augmentations in turn with the same generator gives (on the
    same backend). ``backend`` ("auto", "torch", "kernel"; None: the process default, see
    ``set_backend``) picks how the JetCLR steps run; ``fixed`` (see ``View``) whether they
    work on fixed slots.
    """
    if backend is not None:
        _checked(backend)
    steps: list[Step] = []
    for spec in specs:
        name = spec["name"] if isinstance(spec, dict) else spec.name
        params = (spec.get("params") or {}) if isinstance(spec, dict) else dict(spec.params or {})
        fn = get_augmentation(name)
        if "strength" in params:
            raise TypeError(f"augmentation {name!r}: 'strength' is set for all augmentations at once "
                            "(augment.strength), not per augmentation")
        try:  # unknown or missing parameters fail here too, not at the first batch
            inspect.signature(fn).bind(None, None, None, **params)
        except TypeError as e:
            raise TypeError(f"augmentation {name!r}: {e}") from None
        steps.append((fn, dict(params)))
    return View(steps, strength, backend, fixed)


def apply_views(views: Sequence[Callable[..., tuple[torch.Tensor, torch.Tensor]]], x: torch.Tensor,
                mask: torch.Tensor, generator: torch.Generator | None = None,
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every view of the same batch: [(x_v, mask_v) for v in views].

    Consecutive ``View``s with equal keys (same specs, strength, backend) are computed in ONE call
    on the batch repeated that many times (same distribution: every row draws its own
    randomness), which halves the per-call overhead of the usual two-identical-views set-up.
    Other callables ``(x, mask, generator) -> (x, mask)`` are called one by one.
    """
    out: list[tuple[torch.Tensor, torch.Tensor]] = []
    i = 0
    while i < len(views):
        j = i + 1
        first = views[i]
        if isinstance(first, View):
            while j < len(views) and isinstance(views[j], View) and views[j].key == first.key:
                j += 1
        k = j - i
        if k == 1:
            out.append(first(x, mask, generator))
        else:
            xs, ms = first.repeated(x, mask, generator, k)
            out.extend(zip(xs.view(k, *x.shape).unbind(0), ms.view(k, *mask.shape).unbind(0),
                           strict=True))
        i = j
    return out
