"""The fused CPU kernel of the JetCLR augmentations (``_jetaug.c``): build, load, call.

The kernel applies a chain of collinear_split / rotate / smear_soft / translate steps jet by jet
in one pass (see the C file). It is compiled on first use with the system C compiler (``$CC``,
else ``cc``) into a cache folder (``$CLRDIST_CACHE_DIR``, else ``$XDG_CACHE_HOME/clrdist``, else
``~/.cache/clrdist``), under a temporary name renamed when complete, so concurrent Ray workers
never load a half-written library. The file name carries a hash of the source, the flags, the
compiler and the platform; a changed source or another machine type builds its own copy.

Randomness: each call draws one 63-bit seed per step from the caller's ``torch.Generator`` (or
torch's default generator); row g of step s then draws from the counter-based stream (seed_s, g).
Same generator state -> same output.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clrdist.errors import ClrdistError

SOURCE = Path(__file__).with_name("_jetaug.c")
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-fno-math-errno", "-fno-trapping-math",
         "-ffp-contract=off")
# Operation codes of _jetaug.c and the parameters each takes, in the kernel's order.
OPS = {"collinear_split": (1, ("fill",)), "rotate": (2, ()),
       "smear_soft": (3, ("lambda_soft", "pt_clip_min")), "translate": (4, ("width",))}


class KernelUnavailable(ClrdistError):
    """The C compiler is missing or the kernel failed to build or load."""


def cache_dir() -> Path:
    if os.environ.get("CLRDIST_CACHE_DIR"):
        return Path(os.environ["CLRDIST_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "clrdist"


def _compiler() -> str:
    return os.environ.get("CC") or "cc"


def _flags() -> tuple[str, ...]:
    """FLAGS, plus -march=native on x86-64 (AVX2 / AVX-512 let the compiler vectorise the normals
    and the per-slot loops). The build is cached per CPU model (see ``_cpu_id``). Without
    FMA contraction or -ffast-math, every instruction set gives the same numbers."""
    if platform.machine() in ("x86_64", "AMD64"):
        return (*FLAGS, "-march=native")
    return FLAGS


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model name and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    keep = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(keep)))


def _build(target: Path, flags: tuple[str, ...]) -> None:
    cc = _compiler()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    cmd = [cc, *flags, "-o", tmp, str(SOURCE), "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        os.unlink(tmp)
        raise KernelUnavailable(f"augmentation kernel: cannot run the C compiler {cc!r}: {e}; "
                                "set CC, or use augment.backend: torch") from None
    if done.returncode != 0:
        os.unlink(tmp)
        raise KernelUnavailable(f"augmentation kernel: {' '.join(cmd)} failed:\n{done.stderr.strip()}")
    os.replace(tmp, target)  # atomic: other processes see no library or a whole one


@functools.cache
def _library() -> ctypes.CDLL:
    src, flags = SOURCE.read_bytes(), _flags()
    try:
        version = subprocess.run([_compiler(), "--version"], capture_output=True, text=True,
                                 check=False).stdout.splitlines()[:1]
    except OSError:
        version = []
    key = hashlib.sha256(b"\0".join([src, " ".join(flags).encode(), _compiler().encode(),
                                     "".join(version).encode(), platform.machine().encode(),
                                     sys.platform.encode(), _cpu_id().encode()])).hexdigest()[:16]
    target = cache_dir() / f"jetaug-{key}.so"
    if not target.exists():
        try:
            _build(target, flags)
        except PermissionError:  # read-only cache: build for this process only
            target = Path(tempfile.mkdtemp(prefix="clrdist-kernel-")) / target.name
            _build(target, flags)
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        raise KernelUnavailable(f"augmentation kernel: cannot load {target}: {e}") from None
    p, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double
    lib.clrdist_jet_steps.argtypes = [p, p, i64, i64, i64, p, p, i64, i64, i32, p, p, p, f64, p]
    lib.clrdist_jet_steps.restype = ctypes.c_int
    lib.clrdist_normals.argtypes = [ctypes.c_uint64, ctypes.c_uint64, i64, p, p]
    lib.clrdist_normals.restype = None
    return lib


def available() -> bool:
    """True if the kernel builds and loads here (built once, then cached)."""
    try:
        _library()
    except KernelUnavailable:
        return False
    return True


def require() -> None:
    """Raise KernelUnavailable (with the compiler's message) unless the kernel can be used."""
    _library()


def supports(x: torch.Tensor, mask: torch.Tensor) -> bool:
    """Batches the kernel handles: CPU float32 (B, P, F >= 3) with a (B, P) bool mask."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 3
            and x.shape[-1] >= 3 and mask.dtype == torch.bool and mask.shape == x.shape[:2]
            and x.shape[1] < 2**31)


_local = threading.local()


def _scratch(P: int) -> int:
    """Address of this thread's scratch for rows of P slots (see clrdist_jet_steps)."""
    need = 8 * ((P + 15) // 16 * 16)
    size, ptr = getattr(_local, "scratch", (0, 0))
    if size < need:
        _local.buf = np.empty(need, dtype=np.float32)
        size, ptr = _local.scratch = need, _local.buf.ctypes.data
    return ptr


class Program:
    """A chain of steps prepared for the kernel: op codes and parameters in C arrays."""

    __slots__ = ("steps", "n", "_ops", "_params", "ops_ptr", "params_ptr")

    def __init__(self, steps: Sequence[tuple[str, Sequence[float]]]):
        self.steps = tuple((name, tuple(float(v) for v in vals)) for name, vals in steps)
        for name, vals in self.steps:
            if name not in OPS or len(vals) != len(OPS[name][1]):
                raise ValueError(f"kernel step {name}{vals}: expected one of "
                                 + ", ".join(f"{k}{v[1]}" for k, v in OPS.items()))
        self.n = len(self.steps)
        self._ops = np.array([OPS[name][0] for name, _ in self.steps] or [0], dtype=np.int32)
        self._params = np.zeros((max(self.n, 1), 2), dtype=np.float64)
        for s, (_, vals) in enumerate(self.steps):
            self._params[s, : len(vals)] = vals
        self.ops_ptr, self.params_ptr = self._ops.ctypes.data, self._params.ctypes.data


def run(program: Program, strength: float, x: torch.Tensor, mask: torch.Tensor,
        generator: torch.Generator | None, reps: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the program's steps to the batch repeated ``reps`` times (CPU float32, ``supports``).

    Output row r * B + b is an augmented copy of row b; padding comes out zero. Draws one seed per
    step from ``generator`` (torch's default generator if None).
    """
    lib = _library()
    B, P, F = x.shape
    x, mask = x.contiguous(), mask.contiguous()
    rows = B * reps
    out = torch.empty((rows, P, F), dtype=torch.float32)
    out_mask = torch.empty((rows, P), dtype=torch.bool)
    seeds = torch.empty(program.n, dtype=torch.int64).random_(generator=generator)
    if rows == 0 or P == 0 or program.n == 0:
        if rows:
            out.copy_(x.repeat(reps, 1, 1) * mask.repeat(reps, 1)[..., None])
            out_mask.copy_(mask.repeat(reps, 1))
        return out, out_mask
    args = (x.data_ptr(), mask.data_ptr(), B, P, F, out.data_ptr(), out_mask.data_ptr())
    tail = (program.n, program.ops_ptr, program.params_ptr, seeds.data_ptr(), float(strength))

    # one thread: splitting rows over a thread pool is slower, torch's OpenMP threads spin
    # between ops. ctypes releases the GIL.
    if lib.clrdist_jet_steps(*args, 0, rows, *tail, _scratch(P)) != 0:
        raise RuntimeError(f"augmentation kernel rejected the steps {program.steps}")
    return out, out_mask


def normals(seed: int, row: int, n: int) -> np.ndarray:
    """(2, n) standard normals of stream (seed, row), drawn as smear_soft draws them (for tests)."""
    out = np.empty((2, n), dtype=np.float32)
    _library().clrdist_normals(seed, row, n, out[0].ctypes.data, out[1].ctypes.data)
    return out
