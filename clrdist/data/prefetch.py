"""Host batches -> the training device (:class:`DevicePrefetcher`): pinned, non-blocking copies
one batch ahead of the step on CUDA, and the stream position that matches the batches handed
out (what a mid-epoch checkpoint saves).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from clrdist.data.stream import ShardedStream


class DevicePrefetcher:
    """Host batches -> the training device, one batch ahead: ``for b in prefetch(stream)``.

    On CUDA every array is copied into pinned (page-locked) memory and sent with
    ``non_blocking=True`` while the previous batch's step runs, so the step never waits on a
    synchronous pageable copy. On any other device it is a no-op: the batches pass through as
    numpy arrays (the step converts them). :meth:`stream_state` is the stream's position as of
    the batch last handed out (the stream itself is one batch further when prefetching), which
    is what a mid-epoch checkpoint must save.
    """

    def __init__(self, device) -> None:
        # lazy: torch (~1.5 s); data.stream imports this module and reads stores without it
        import torch

        self.device = torch.device(device)
        self.active = self.device.type == "cuda"
        self._state: dict | None = None
        self._stream: ShardedStream | None = None

    def _to_device(self, batch: dict[str, np.ndarray]) -> dict:
        # lazy: torch (~1.5 s); data.stream imports this module and reads stores without it
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)).pin_memory()
                .to(self.device, non_blocking=True) for k, v in batch.items()}

    def __call__(self, stream: ShardedStream) -> Iterator[dict]:
        self._stream, self._state = stream, None
        if not self.active:
            yield from stream
            return
        it = iter(stream)
        try:
            pending = self._to_device(next(it))
        except StopIteration:
            return
        state = stream.state_dict()
        for batch in it:
            nxt, nxt_state = self._to_device(batch), stream.state_dict()
            self._state = state
            yield pending
            pending, state = nxt, nxt_state
        self._state = state
        yield pending
        self._state = None  # the epoch is over: the stream's own position again

    def stream_state(self) -> dict:
        """The stream position matching the batches handed out so far."""
        if self._state is not None:
            return self._state
        assert self._stream is not None, "stream_state() before iterating"
        return self._stream.state_dict()
