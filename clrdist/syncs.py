"""Count host syncs and data-dependent-shape operations, on any device (CPU included).

On a GPU, an operation whose output shape depends on the data (``nonzero``, boolean-mask
indexing, ``unique``) or that reads a value back to the host (``.item()``, ``float(t)``,
``.tolist()``, a device -> CPU copy) makes the CPU wait for the GPU. ``torch.cuda``'s sync debug
mode sees these only on a real GPU; this dispatch mode sees the same operations on any device,
so a CPU test can prove that a training step is sync-free:

    with count_syncs() as c:
        step(...)
    assert c.count == 0, c.ops

Each flagged operation is recorded as ``"aten_name: reason"`` in ``c.ops``. Operations that
would not sync on a GPU are not flagged (``_assert_async``, arithmetic, fixed-shape indexing).
On CPU tensors a device -> CPU copy is not flagged (there is no device); a copy from any other
device (``cuda``, ``meta``) to the CPU is.
"""

from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["SyncCounter", "count_syncs"]

aten = torch.ops.aten

# Operations whose output size depends on the data, or that read a value back to the host.
_ALWAYS: dict[str, str] = {
    "nonzero": "data-dependent shape",
    "nonzero_static": "",  # fixed size: fine (listed so the prefix match below skips it)
    "masked_select": "data-dependent shape",
    "unique": "data-dependent shape",
    "_unique": "data-dependent shape",
    "_unique2": "data-dependent shape",
    "unique_dim": "data-dependent shape",
    "unique_consecutive": "data-dependent shape",
    "unique_dim_consecutive": "data-dependent shape",
    "_local_scalar_dense": "device -> host read (item/float/int/bool)",
    "is_nonzero": "device -> host read (bool of a tensor)",
    "equal": "device -> host read (torch.equal)",
    "allclose": "device -> host read (torch.allclose)",
    "_nested_tensor_from_mask": "data-dependent shape",
    "argwhere": "data-dependent shape",
}


def _is_bool_index(indices) -> bool:
    return any(
        isinstance(ix, torch.Tensor) and ix.dtype in (torch.bool, torch.uint8) for ix in indices
    )


def _reason(func, args, kwargs) -> str | None:
    """Why ``func(*args, **kwargs)`` syncs on a GPU, or None when it does not."""
    name = func._schema.name.split("::")[-1]
    if name in _ALWAYS:
        return _ALWAYS[name] or None
    if name in ("index", "_index_put_impl_", "index_put", "index_put_", "_unsafe_index"):
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        if _is_bool_index(indices or ()):
            return "boolean-mask indexing (data-dependent shape)"
        return None
    if name == "repeat_interleave":
        # .Tensor / .self_Tensor: the output size is the sum of the repeats, unless given
        if func._overloadname != "self_int" and kwargs.get("output_size") is None:
            return "repeat_interleave without output_size (data-dependent shape)"
        return None
    if name in ("_to_copy", "copy_", "_copy_from", "_copy_from_and_resize", "to"):
        src, dst_device = _copy_ends(name, args, kwargs)
        if (
            src is not None
            and dst_device is not None
            and dst_device.type == "cpu"
            and src.device.type != "cpu"
        ):
            return "device -> host copy"
        return None
    if name in ("_assert_async", "_functional_assert_async"):
        return None
    return None


def _copy_ends(name, args, kwargs):
    """(source tensor, destination device) of a copy op, or (None, None)."""
    if name == "_to_copy":
        src = args[0]
        dev = kwargs.get("device")
        return src, (torch.device(dev) if dev is not None else src.device)
    if name in ("copy_", "_copy_from", "_copy_from_and_resize"):
        dst, src = args[0], args[1]
        if name != "copy_":
            dst, src = args[1], args[0]
        if isinstance(src, torch.Tensor) and isinstance(dst, torch.Tensor):
            return src, dst.device
    return None, None


# Tensor methods that read a whole tensor into Python or NumPy: on a CPU tensor they do not reach
# the dispatcher, so they are caught one level up (torch function mode).
_HOST_METHODS = {"tolist": "device -> host read (.tolist())", "numpy": "host round trip (.numpy())",
                 "__array__": "host round trip (np.asarray)"}


class _MethodCounter(TorchFunctionMode):
    def __init__(self, ops: list[str]) -> None:
        super().__init__()
        self._ops = ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _HOST_METHODS:
            self._ops.append(f"{name}: {_HOST_METHODS[name]}")
        return func(*args, **(kwargs or {}))


class SyncCounter(TorchDispatchMode):
    """A dispatch mode that records host syncs; read ``count`` and ``ops`` after the block."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []
        self._methods = _MethodCounter(self.ops)

    def __enter__(self):
        self._methods.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self._methods.__exit__(None, None, None)
            raise

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._methods.__exit__(*exc)

    @property
    def count(self) -> int:
        return len(self.ops)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = _reason(func, args, kwargs)
        if reason is not None:
            self.ops.append(f"{func._schema.name.split('::')[-1]}: {reason}")
        return func(*args, **kwargs)

    def summary(self) -> dict[str, int]:
        """Flagged operations by name, with their counts."""
        out: dict[str, int] = {}
        for op in self.ops:
            out[op] = out.get(op, 0) + 1
        return out


def count_syncs() -> SyncCounter:
    """``with count_syncs() as c: ...`` then ``c.count`` (int) and ``c.ops`` (list of str)."""
    return SyncCounter()
