"""Per-rank streaming of batches from a sample store, with exact resume.

How an epoch is laid out (identical arithmetic on every rank, no communication):

1. ``N`` samples, ``W`` ranks, batch ``B``: every rank yields ``nb = N // (W * B)`` full batches.
   The ``R = N - nb * W * B`` samples left over (``R < W * B``) are excluded from this epoch; the
   excluded window is the storage range starting at ``(epoch * R) mod N``, so it rotates and
   consecutive epochs leave out different samples.
2. The included samples are cut into *pieces* at chunk boundaries (a piece is at most one
   chunk); the piece order is a permutation seeded by ``(seed, epoch)``.
3. Concatenating the pieces in that order, rank ``r`` takes the contiguous slice
   ``[r * nb * B, (r + 1) * nb * B)``: it reads only the chunks of its own pieces.
4. A shuffle buffer of ``shuffle_buffer`` samples, seeded by ``(seed, epoch, rank)``, mixes the
   rank's pieces: after each piece arrives the buffer is permuted and full batches are emitted
   while at least ``shuffle_buffer`` samples stay behind.

Steps 1-4 are pure index arithmetic (:meth:`ShardedStream.plan`), which is what makes resume
exact and cheap: the state is ``(epoch, batches consumed)``; restoring recomputes the plan and
decodes only the pieces that still hold unseen samples. Decoding and batch assembly run in a
background thread (``num_threads >= 1``; more threads decode pieces in parallel) feeding a
bounded queue; ``num_threads = 0`` decodes on the caller's thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from clrdist.data.store import ARRAYS, SampleStore, StoreError, open_store

_STATE_VERSION = 1
_TAG_ORDER = 0xC4A1
_TAG_BUFFER = 0xB0FF


@dataclass(frozen=True)
class EpochPlan:
    """What one rank reads and yields in one epoch (all indices are storage sample indices).

    pieces:  (n_pieces, 2) int64 storage ranges [a, b) in arrival order (this rank's only)
    offsets: (n_pieces + 1,) int64 start of each piece in the rank's arrival sequence
    batches: (nb, B) int64 positions into the arrival sequence, one row per batch
    slots:   (n,) int64 pool slot of each position while it waits in the shuffle buffer
    pool_size: slots in the pool
    """

    pieces: np.ndarray
    offsets: np.ndarray
    batches: np.ndarray
    slots: np.ndarray
    pool_size: int

    def sample_ids(self) -> np.ndarray:
        """(nb, B) storage indices of the samples in each batch."""
        seq = np.concatenate([np.arange(a, b) for a, b in self.pieces]) if len(self.pieces) \
            else np.empty(0, np.int64)
        return seq[self.batches]


class ShardedStream:
    """Batches of one rank's share of a store, epoch by epoch.

    ``store``: a :class:`SampleStore` or a path. ``batch_size`` is per rank. Iterating yields the
    current epoch's remaining batches as dicts ``particles (B, P, F) float32, mask (B, P) bool,
    label (B,) int8, features (B, K) float32``; when an epoch is exhausted the stream moves to
    the next epoch by itself. ``set_epoch(e)`` jumps to the start of epoch ``e`` (a no-op if the
    stream is already in epoch ``e``, so a restored position survives the usual
    ``for epoch ...: stream.set_epoch(epoch); for batch in stream: ...`` loop).
    """

    def __init__(self, store: SampleStore | str | os.PathLike, *, batch_size: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle_buffer: int = 8192,
                 num_threads: int = 1, prefetch: int = 4) -> None:
        self.store = store if isinstance(store, SampleStore) else open_store(store)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if shuffle_buffer < 0 or num_threads < 0 or prefetch <= 0:
            raise ValueError("shuffle_buffer and num_threads must be >= 0, prefetch > 0")
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.num_threads = int(num_threads)
        self.prefetch = int(prefetch)
        self.n = self.store.n
        self._nb = self.n // (self.world_size * self.batch_size)
        if self._nb == 0:
            raise StoreError(
                f"{self.store.path}: {self.n} samples cannot fill one batch of {self.batch_size} "
                f"on each of {self.world_size} ranks")
        self.epoch = 0
        self._pos = 0  # batches of self.epoch already yielded
        self._plan_cache: tuple[int, EpochPlan] | None = None

    # -- sizes ---------------------------------------------------------------------------------
    def batches_per_epoch(self) -> int:
        """Full batches every rank yields per epoch (identical on all ranks)."""
        return self._nb

    def __len__(self) -> int:
        return self._nb

    @property
    def remainder(self) -> int:
        """Samples left out of each epoch (< world_size * batch_size); they rotate."""
        return self.n - self._nb * self.world_size * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._pos = 0

    # -- the plan: pure index arithmetic -------------------------------------------------------
    def excluded(self, epoch: int) -> np.ndarray:
        """Storage indices left out of ``epoch`` (the rotating remainder)."""
        r = self.remainder
        start = (epoch * r) % self.n if r else 0
        return (start + np.arange(r)) % self.n

    def _epoch_pieces(self, epoch: int) -> np.ndarray:
        """All included pieces of the epoch, in the global (seeded) order; (n, 2) ranges."""
        n, r, cs = self.n, self.remainder, self.store.chunk_size
        s = ((epoch * r) % n + r) % n if r else 0
        length = n - r
        segments = [(s, min(n, s + length))]
        if s + length > n:
            segments.append((0, s + length - n))
        pieces = []
        for a, b in segments:
            cuts = np.arange((a // cs + 1) * cs, b, cs)
            edges = np.concatenate([[a], cuts, [b]])
            pieces.append(np.stack([edges[:-1], edges[1:]], axis=1))
        pieces = np.concatenate(pieces).astype(np.int64)
        order = np.random.default_rng([self.seed, epoch, _TAG_ORDER]).permutation(len(pieces))
        return pieces[order]

    def plan(self, epoch: int) -> EpochPlan:
        """This rank's pieces and batches for ``epoch`` (cached for the current epoch)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        pieces = self._epoch_pieces(epoch)
        per_rank = self._nb * self.batch_size
        lo, hi = self.rank * per_rank, (self.rank + 1) * per_rank
        glob = np.concatenate([[0], np.cumsum(pieces[:, 1] - pieces[:, 0])])
        mine = []
        for (a, b), g0, g1 in zip(pieces, glob[:-1], glob[1:], strict=True):
            if g1 <= lo or g0 >= hi:
                continue
            mine.append((a + max(0, lo - g0), b - max(0, g1 - hi)))
        mine = np.asarray(mine, dtype=np.int64).reshape(-1, 2)
        lengths = mine[:, 1] - mine[:, 0]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        batches, slots, pool_size = self._buffer_order(epoch, lengths)
        plan = EpochPlan(mine, offsets, batches, slots, pool_size)
        self._plan_cache = (epoch, plan)
        return plan

    def _buffer_order(self, epoch: int, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Simulate the shuffle buffer on sequence positions.

        Returns the (nb, B) positions of each batch, the pool slot each position occupies
        while it waits in the buffer, and the pool size. Slots are what let batch assembly be
        one ``take`` per array: a decoded piece is scattered into free slots of a fixed pool,
        a batch is gathered from the pool; the simulation guarantees a slot is reused only
        after its previous sample was emitted.
        """
        b, total = self.batch_size, int(lengths.sum())
        shuffle = self.shuffle_buffer > 0
        rng = np.random.default_rng([self.seed, epoch, self.rank, _TAG_BUFFER])
        cap = self.shuffle_buffer + b + int(lengths.max(initial=0))
        free = np.arange(cap - 1, -1, -1, dtype=np.int64)
        slot_of = np.empty(total, dtype=np.int64)
        out, buf, start = [], np.empty(0, np.int64), 0
        for i, n_new in enumerate(lengths):
            new = np.arange(start, start + n_new, dtype=np.int64)
            start += n_new
            slot_of[new] = free[len(free) - n_new:]
            free = free[: len(free) - n_new]
            buf = np.concatenate([buf, new])
            last = i == len(lengths) - 1
            k = len(buf) // b if last else max(0, (len(buf) - self.shuffle_buffer) // b)
            if k:
                if shuffle:
                    perm = rng.permutation(len(buf))
                    emit, buf = buf[perm[: k * b]], buf[perm[k * b:]]
                else:
                    emit, buf = buf[: k * b], buf[k * b:]
                out.append(emit)
                free = np.concatenate([free, slot_of[emit][::-1]])
        batches = np.concatenate(out).reshape(-1, b) if out else np.empty((0, b), np.int64)
        return batches, slot_of, cap

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Position of the stream: epoch, batches consumed in it, and what the plan depends on
        (the RNG streams are derived from seed, epoch and rank, so these fix them exactly)."""
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "batches_consumed": self._pos,
            "seed": self.seed,
            "rng": {"order": [self.seed, self.epoch, _TAG_ORDER],
                    "buffer": [self.seed, self.epoch, "rank", _TAG_BUFFER]},
            "n_samples": self.n,
            "chunk_size": self.store.chunk_size,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "shuffle_buffer": self.shuffle_buffer,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (from any rank: ranks move in
        lockstep). Refuses states of a stream with a different layout, since the position
        would then name different samples."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"stream state version {state.get('version')!r} is not supported")
        mine = self.state_dict()
        for key in ("seed", "n_samples", "chunk_size", "batch_size", "world_size",
                    "shuffle_buffer"):
            if state[key] != mine[key]:
                raise ValueError(f"stream state does not match this stream: {key} is "
                                 f"{state[key]!r} in the state, {mine[key]!r} here")
        pos = int(state["batches_consumed"])
        if not 0 <= pos <= self._nb:
            raise ValueError(f"stream state position {pos} outside [0, {self._nb}]")
        self.epoch = int(state["epoch"])
        self._pos = pos

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        epoch, start = self.epoch, self._pos
        source = self._assemble(epoch, start) if self.num_threads == 0 else \
            self._threaded(epoch, start)
        try:
            for batch in source:
                self._pos += 1
                yield batch
        finally:
            source.close()
        if self.epoch == epoch and self._pos >= self._nb:
            self.epoch, self._pos = epoch + 1, 0

    def _read_piece(self, a: int, b: int) -> dict[str, np.ndarray]:
        # pieces never cross a chunk boundary: decode the chunk, keep the piece's rows
        c = int(a) // self.store.chunk_size
        c0 = c * self.store.chunk_size
        return {k: v[a - c0:b - c0] for k, v in self.store.read_chunk(c).items()}

    def _pieces(self, plan: EpochPlan, needed: np.ndarray) -> Iterator[tuple[int, dict]]:
        """Decode the needed pieces in arrival order (in parallel when num_threads > 1)."""
        idx = np.flatnonzero(needed)
        if self.num_threads <= 1:
            for p in idx:
                yield int(p), self._read_piece(*plan.pieces[p])
            return
        with ThreadPoolExecutor(self.num_threads, thread_name_prefix="clrdist-decode") as ex:
            ahead = 2 * self.num_threads
            futures: list = []
            it = iter(idx)
            for p in it:
                futures.append((int(p), ex.submit(self._read_piece, *plan.pieces[p])))
                if len(futures) >= ahead:
                    break
            while futures:
                p, fut = futures.pop(0)
                nxt = next(it, None)
                if nxt is not None:
                    futures.append((int(nxt), ex.submit(self._read_piece, *plan.pieces[nxt])))
                yield p, fut.result()

    def _assemble(self, epoch: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start..nb-1`` of ``epoch`` (runs on the producer thread).

        Pieces are decoded in arrival order and scattered into the pool slots the plan gave
        them (only samples not yet consumed, when resuming mid-epoch); each batch is one
        ``take`` per array from the pool.
        """
        plan = self.plan(epoch)
        if start >= len(plan.batches):
            return
        pos = plan.batches[start:]
        nb_left, b = pos.shape
        piece_of = np.searchsorted(plan.offsets, pos, side="right") - 1  # (nb', B)
        needed = np.zeros(len(plan.pieces), dtype=bool)
        needed[piece_of.ravel()] = True
        need_upto = piece_of.max(axis=1)
        batch_of = np.full(int(plan.offsets[-1]), -1, dtype=np.int64)
        batch_of[pos.ravel()] = np.repeat(np.arange(nb_left), b)  # -1: consumed before start
        pool: dict[str, np.ndarray] | None = None
        pieces = self._pieces(plan, needed)
        top = -1
        try:
            for j in range(nb_left):
                while top < need_upto[j]:
                    p, data = next(pieces)
                    o0, o1 = plan.offsets[p], plan.offsets[p + 1]
                    slots = plan.slots[o0:o1]
                    live = batch_of[o0:o1] >= 0
                    if pool is None:
                        pool = {k: np.empty((plan.pool_size, *v.shape[1:]), dtype=v.dtype)
                                for k, v in data.items()}
                    if live.all():
                        for k in ARRAYS:
                            pool[k][slots] = data[k]
                    else:
                        for k in ARRAYS:
                            pool[k][slots[live]] = data[k][live]
                    top = p
                sl = plan.slots[pos[j]]
                yield {k: pool[k].take(sl, axis=0) for k in ARRAYS}
        finally:
            pieces.close()

    def _threaded(self, epoch: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            gen = self._assemble(epoch, start)
            try:
                for batch in gen:
                    if not put(batch):
                        return
                put(done)
            except BaseException as e:  # hand any failure to the consuming thread
                put(("__error__", e))
            finally:
                gen.close()

        thread = threading.Thread(target=produce, name="clrdist-stream", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, tuple) and len(item) == 2 and item[0] == "__error__":
                    raise item[1]
                yield item
        finally:
            stop.set()
            thread.join()
