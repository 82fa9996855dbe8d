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
4. A shuffle window of ``shuffle_buffer`` samples, seeded by ``(seed, epoch, rank)``, mixes the
   rank's pieces: every sample is displaced by a random amount below the window (see
   :meth:`ShardedStream._buffer_order`), so each batch draws from the few chunks around it.

Steps 1-4 are pure index arithmetic (:meth:`ShardedStream.plan`), which is what makes resume
exact and cheap: the state is ``(epoch, batches consumed)``; restoring recomputes the plan and
decodes only the pieces that still hold unseen samples. The plan also places every decoded
chunk in a block of a fixed pool, reusing a block only after its previous chunk's last sample
has been emitted; a batch is then one ``take`` per array from the pool.

Threads: with ``num_threads >= 1`` that many decoder threads decode chunks straight into their
pool blocks (``pread`` + Blosc, which releases the GIL), ``prefetch`` chunks ahead of the caller;
the caller's thread only gathers each batch (one ``take`` per array). ``num_threads = 0`` decodes
on the caller's thread too.
"""

from __future__ import annotations

import heapq
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from clrdist.data.prefetch import DevicePrefetcher as DevicePrefetcher  # re-exported (old path)
from clrdist.data.store import ARRAYS, SampleStore, StoreError, open_store

_STATE_VERSION = 1
_TAG_ORDER = 0xC4A1
_TAG_BUFFER = 0xB0FF


@dataclass(frozen=True)
class EpochPlan:
    """What one rank reads and yields in one epoch (storage indices are store sample indices).

    pieces:     (n_pieces, 2) int64 storage ranges [a, b) in arrival order (this rank's only)
    offsets:    (n_pieces + 1,) int64 start of each piece in the rank's arrival sequence
    batches:    (nb, B) int64 positions into the arrival sequence, one row per batch
    need:       (nb,) the last piece (in arrival order) batch j draws from
    blocks:     (n_pieces,) pool block (one chunk long) the piece's chunk is decoded into
    free_after: (n_pieces,) the batch after which that block's previous piece is all emitted
                (-1: a fresh block), so decoding into it may start
    last_batch: (n_pieces,) the batch that emits the piece's last sample
    slots:      (n,) int64 pool row of each position
    n_blocks:   blocks in the pool
    """

    pieces: np.ndarray
    offsets: np.ndarray
    batches: np.ndarray
    need: np.ndarray
    blocks: np.ndarray
    free_after: np.ndarray
    last_batch: np.ndarray
    slots: np.ndarray
    n_blocks: int

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
                 num_threads: int = 1, prefetch: int | None = None) -> None:
        self.store = store if isinstance(store, SampleStore) else open_store(store)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if shuffle_buffer < 0 or num_threads < 0 or (prefetch is not None and prefetch <= 0):
            raise ValueError("shuffle_buffer and num_threads must be >= 0, prefetch > 0")
        self.batch_size = int(batch_size)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.num_threads = int(num_threads)
        # chunks decoded ahead of the caller (and free pool blocks kept for them)
        self.prefetch = int(prefetch) if prefetch is not None else 2 * max(1, self.num_threads)
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
        batches, need, blocks, free_after, last_batch, n_blocks = self._buffer_order(epoch, lengths)
        cs = self.store.chunk_size
        # a piece's chunk is decoded whole into its block: rows keep their offset in the chunk
        base = blocks * cs + (mine[:, 0] % cs) - offsets[:-1]
        slots = np.repeat(base, lengths) + np.arange(int(offsets[-1]), dtype=np.int64)
        plan = EpochPlan(mine, offsets, batches, need, blocks, free_after, last_batch, slots,
                         n_blocks)
        self._plan_cache = (epoch, plan)
        return plan

    def _spare_blocks(self) -> int:
        # free blocks kept in reserve so decoder threads can work ahead of the caller
        return self.prefetch

    def _buffer_order(self, epoch: int, lengths: np.ndarray):
        """The shuffle buffer, and the pool of decoded chunks that serves it.

        Shuffle: sample ``x`` of the rank's arrival sequence gets the key ``x + u * S``,
        ``u ~ U(0, 1)``, ``S = shuffle_buffer``, and samples are emitted in key order. Every
        sample therefore moves by less than ``S`` positions and a batch mixes the ~S/chunk
        chunks around it, like a classic S-sample shuffle buffer, but with no long tail of
        stragglers: chunks leave memory once the window has passed them.

        Pool: each piece's chunk is decoded whole into a block (one chunk long). A piece needs
        its block from the first batch that needs it (pieces are decoded in arrival order) until
        the batch that emits its last sample; blocks are reused in order of release, behind a
        few spare ones, so decoder threads can work ahead into blocks freed long before.

        Returns batches (nb, B) positions, and per piece: block, free_after (the batch after
        which the block is free, -1 if fresh), last_batch; and the number of blocks.
        """
        b, total = self.batch_size, int(lengths.sum())
        order = np.arange(total, dtype=np.float64)
        if self.shuffle_buffer > 0:
            rng = np.random.default_rng([self.seed, epoch, self.rank, _TAG_BUFFER])
            order = order + rng.random(total) * self.shuffle_buffer
        # keys are distinct (continuous jitter), so the unstable sort is deterministic too
        batches = np.argsort(order, kind="quicksort").reshape(-1, b)
        n_pieces = len(lengths)
        piece_of = np.repeat(np.arange(n_pieces), lengths)[batches]
        last_batch = np.full(n_pieces, -1, np.int64)
        np.maximum.at(last_batch, piece_of.ravel(), np.repeat(np.arange(len(batches)), b))
        need = piece_of.max(axis=1)  # pieces are decoded in order: batch j needs all up to this
        need_upto = np.maximum.accumulate(need)
        first_need = np.searchsorted(need_upto, np.arange(n_pieces), side="left")
        blocks = np.empty(n_pieces, np.int64)
        free_after = np.empty(n_pieces, np.int64)
        spare = self._spare_blocks()
        heap = [(-1, blk) for blk in range(spare)]  # (released after batch, block)
        n_blocks = spare
        for p in range(n_pieces):
            if heap and heap[0][0] < first_need[p]:
                free_after[p], blocks[p] = heapq.heappop(heap)
            else:
                free_after[p], blocks[p] = -1, n_blocks
                n_blocks += 1
            heapq.heappush(heap, (int(last_batch[p]), int(blocks[p])))
        return batches, need, blocks, free_after, last_batch, n_blocks

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
        source = self._assemble(epoch, start)
        try:
            for batch in source:
                self._pos += 1
                yield batch
        finally:
            source.close()
        if self.epoch == epoch and self._pos >= self._nb:
            self.epoch, self._pos = epoch + 1, 0

    def _decode(self, plan: EpochPlan, p: int, pool: dict[str, np.ndarray]) -> None:
        """Decode piece ``p``'s whole chunk into its pool block."""
        cs = self.store.chunk_size
        blk = int(plan.blocks[p])
        dest = {k: v[blk * cs:(blk + 1) * cs] for k, v in pool.items()}
        self._read_chunk_into(int(plan.pieces[p, 0]) // cs, dest)

    def _read_chunk_into(self, chunk: int, dest: dict[str, np.ndarray]) -> None:
        self.store.read_chunk_into(chunk, dest)

    def _new_pool(self, n_rows: int) -> dict[str, np.ndarray]:
        arrays = self.store.arrays
        return {k: np.empty((n_rows, *arrays[k].shape[1:]), dtype=arrays[k].dtype) for k in ARRAYS}

    def _assemble(self, epoch: int, start: int) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start..nb-1`` of ``epoch``.

        Chunks are decoded straight into their pool blocks (by ``num_threads`` decoder threads
        working ahead, each only once its block is free); every batch is then one ``take`` per
        array from the pool. Resuming mid-epoch skips pieces whose samples were all consumed.
        """
        plan = self.plan(epoch)
        nb = len(plan.batches)
        if start >= nb:
            return
        pos = plan.batches[start:]
        need_upto = plan.need[start:]  # pieces are decoded in order: all up to this one
        todo = [int(p) for p in np.flatnonzero(plan.last_batch >= start)]
        pool = self._new_pool(plan.n_blocks * self.store.chunk_size)
        # decoder threads work ahead of the caller, which only gathers (one `take` per array
        # and batch): faster than an assembler thread handing whole batches over a queue
        ex = ThreadPoolExecutor(self.num_threads, thread_name_prefix="clrdist-decode") \
            if self.num_threads >= 1 else None
        ahead = self._spare_blocks()
        inflight: deque = deque()
        nxt, ready = 0, -1  # next index into todo to start; highest piece decoded
        try:
            for j in range(start, nb):
                if ex is not None:  # start decodes whose blocks are free, in order, bounded
                    while (nxt < len(todo) and len(inflight) < ahead
                           and plan.free_after[todo[nxt]] < j):
                        p = todo[nxt]
                        inflight.append((p, ex.submit(self._decode, plan, p, pool)))
                        nxt += 1
                while ready < need_upto[j - start]:
                    if inflight:
                        p, fut = inflight.popleft()
                        fut.result()
                    else:  # its block is free: the plan guarantees free_after < j here
                        p = todo[nxt]
                        nxt += 1
                        if ex is not None:  # needed now: still decoded off the caller's thread
                            ex.submit(self._decode, plan, p, pool).result()
                        else:
                            self._decode(plan, p, pool)
                    ready = p
                sl = plan.slots[pos[j - start]]
                yield {k: pool[k].take(sl, axis=0) for k in ARRAYS}
        finally:
            if ex is not None:
                for _, fut in inflight:
                    fut.cancel()
                ex.shutdown(wait=True)
