"""Loader benchmark: is the stream ever the bottleneck? Prints one JSON object.

Measured in the same run, on the same chunks of the same store (interleaved repeats, best of
each, so a machine shared with other jobs hurts every number alike):

- ``codec_limit_jets_per_s``: Blosc-decompressing those chunks' bytes (already in memory) and
  nothing else, one thread: the ceiling for one decoding thread.
- ``stream_jets_per_s``: a ``ShardedStream`` with one decoder thread, batch 256, shuffle buffer
  8192: batches ready for the training step, shuffle included; ``stream_vs_codec`` = ratio.
- ``stream_0threads_jets_per_s``: everything on the consuming thread.
- ``stream_4threads_jets_per_s``: four decoder threads.
- ``per_cpu_second``: the same rates per CPU second of this process (all its threads), which
  other jobs on a shared machine disturb far less than wall-clock rates.
- ``train_step_jets_per_s``: one contrastive training step at the DarkCLR configuration
  (transformer dim 128, ff 512, 4 heads, 4 layers, head 512 -> 512, batch 256, 50
  constituents, two views, NT-Xent, Adam), forward + backward + step, on this process's device;
  ``stream_vs_train_step`` = how many such consumers one 1-thread stream could feed.

    python bench/loader.py [--store PATH] [--jets 200000] [--repeats 3] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clrdist.data.store import open_store  # noqa: E402
from clrdist.data.stream import ShardedStream  # noqa: E402

BATCH = 256
SHUFFLE = 8192


def codec_rate(store, compressed: list[list[bytes]]) -> tuple[float, float]:
    """Jets/s of Blosc decompression alone over the store's chunks (bytes preloaded):
    (per wall-clock second, per CPU second of this process)."""
    from numcodecs import blosc

    t0, c0 = time.perf_counter(), time.process_time()
    for chunk in compressed:
        for raw in chunk:
            blosc.decompress(raw)
    return store.n / (time.perf_counter() - t0), store.n / (time.process_time() - c0)


def stream_rate(store, threads: int, epoch: int) -> tuple[float, float]:
    """Jets/s of ready batches: (per wall-clock second, per CPU second summed over threads)."""
    s = ShardedStream(store, batch_size=BATCH, seed=0, shuffle_buffer=SHUFFLE, num_threads=threads)
    s.set_epoch(epoch)
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for batch in s:
        n += len(batch["label"])
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def train_step_rate(store, steps: int) -> tuple[float, dict, str]:
    """Jets/s consumed by DarkCLR-sized contrastive training steps on stream batches."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = {"model_dim": 128, "ff_dim": 512, "heads": 4, "layers": 4, "head_dims": [512],
           "output_dim": 512, "dropout": 0.1, "batch_size": BATCH, "n_particles": 50}
    try:  # the project's own model, loss and input frame when they are importable
        from clrdist.config import LossConfig, ModelConfig
        from clrdist.factory import build_loss, build_model
        from clrdist.physics.frame import scale_pt, to_model_frame

        model = build_model(ModelConfig(model_dim=128, ff_dim=512, heads=4, layers=4,
                                        head_dims=[512], output_dim=512, dropout=0.1,
                                        log_pt_bias=True)).to(device)
        loss_fn = build_loss(LossConfig(name="nt_xent", temperature=0.1, gather=False))

        def step_loss(x, m):
            x = scale_pt(to_model_frame(x, m), 600.0)
            _, z1 = model(x, m)
            _, z2 = model(x, m)
            return loss_fn(z1, z2)["loss"]

        impl = "clrdist.models + clrdist.losses"
    except ImportError:
        layer = torch.nn.TransformerEncoderLayer(128, 4, 512, 0.1, batch_first=True, norm_first=True)
        enc = torch.nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)
        embed, head = torch.nn.Linear(3, 128), torch.nn.Sequential(
            torch.nn.Linear(128, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512))
        model = torch.nn.ModuleList([embed, enc, head]).to(device)

        def step_loss(x, m):
            zs = []
            for _ in range(2):
                h = enc(embed(x), src_key_padding_mask=~m)
                zs.append(torch.nn.functional.normalize(head((h * m[..., None]).sum(1)), dim=1))
            logits = zs[0] @ zs[1].T / 0.1
            return torch.nn.functional.cross_entropy(logits, torch.arange(len(x), device=device))

        impl = "torch.nn.TransformerEncoder (clrdist.models not importable)"
    opt = torch.optim.Adam(model.parameters(), lr=5e-5)
    batches = iter(ShardedStream(store, batch_size=BATCH, seed=1, shuffle_buffer=0, num_threads=0))
    data = [next(batches) for _ in range(min(steps + 1, store.n // BATCH))]
    times = []
    for i, b in enumerate(data):
        x = torch.from_numpy(np.ascontiguousarray(b["particles"][:, :50])).to(device)
        m = torch.from_numpy(np.ascontiguousarray(b["mask"][:, :50])).to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_loss(x, m)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i > 0:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return BATCH / float(np.median(times)), cfg, f"{impl} on {device}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=None, help="existing store (default: a fresh toy store)")
    p.add_argument("--jets", type=int, default=200_000, help="toy jets when no --store")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; best is kept")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    args = p.parse_args(argv)

    load_before = os.getloadavg()[0]  # other jobs' load, before this process adds its own
    from numcodecs import blosc

    blosc.use_threads = False  # one thread means one thread, in every measurement below

    tmp = None
    if args.store is None:
        from clrdist.data.toy import write_toy_store

        tmp = tempfile.TemporaryDirectory(prefix="clrdist-bench-")
        path = write_toy_store(Path(tmp.name) / "toy.zarr", n_per_class=args.jets // 2, seed=0)
    else:
        path = Path(args.store)
    store = open_store(path)
    chunks = [store.compressed_chunk(i) for i in range(store.n_chunks)]
    compressed = [list(c.values()) for c in chunks if c is not None]
    if not compressed:
        print(f"note: {path} is not in the sharded layout; the stream reads through zarr",
              file=sys.stderr)

    best = {k: 0.0 for k in ("codec", "s0", "s1", "s4")}
    cpu = dict(best)

    def keep(key, rates):
        best[key] = max(best[key], rates[0])
        cpu[key] = max(cpu[key], rates[1])

    for r in range(args.repeats):
        if compressed:
            keep("codec", codec_rate(store, compressed))
        keep("s1", stream_rate(store, 1, r))
        keep("s0", stream_rate(store, 0, r))
        keep("s4", stream_rate(store, 4, r))
    step, step_cfg, impl = train_step_rate(store, args.steps)

    codec = best["codec"] or None
    out = {
        "store": str(path) if tmp is None else "a fresh toy store (write_toy_store, seed 0)",
        "jets": store.n,
        "chunk_size": store.chunk_size,
        "shard_size": store.shard_size,
        "bytes_on_disk": store.nbytes_stored(),
        "batch_size": BATCH,
        "shuffle_buffer": SHUFFLE,
        "repeats": args.repeats,
        "codec_limit_jets_per_s": round(codec) if codec else None,
        "stream_jets_per_s": round(best["s1"]),
        "stream_vs_codec": round(best["s1"] / codec, 3) if codec else None,
        "stream_0threads_jets_per_s": round(best["s0"]),
        "stream_4threads_jets_per_s": round(best["s4"]),
        # the same per CPU second (all threads): robust to other jobs sharing the machine
        "per_cpu_second": {
            "codec_limit_jets": round(cpu["codec"]) if codec else None,
            "stream_jets": round(cpu["s1"]),
            "stream_0threads_jets": round(cpu["s0"]),
            "stream_4threads_jets": round(cpu["s4"]),
            "stream_vs_codec": round(cpu["s1"] / cpu["codec"], 3) if codec else None,
            "stream_0threads_vs_codec": round(cpu["s0"] / cpu["codec"], 3) if codec else None,
        },
        "train_step_jets_per_s": round(step, 1),
        "train_step": {"config": step_cfg, "implementation": impl},
        "stream_vs_train_step": round(best["s1"] / step, 1),
        "stream_4threads_vs_train_step": round(best["s4"] / step, 1),
        # not "machine": bench.results writes that key (CPU, cores, torch) over the command's
        "cpus": os.cpu_count(),
        "load_avg_1m": round(load_before, 2),
        "targets": {"stream_vs_codec": ">= 0.6", "stream_jets_per_s": ">= 300000"},
    }
    out["meets_targets"] = bool(codec and best["s1"] / codec >= 0.6 and best["s1"] >= 300_000)
    print(json.dumps(out, indent=2))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
