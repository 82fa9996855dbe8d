"""``clrdist data convert|info|split|toy``: registered into the ``data`` sub-command.

Handlers return an exit status; user errors are raised as ``ClrdistError`` subclasses and
printed as one line by :func:`clrdist.cli.main`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLIT_NAMES = {1: ["train"], 2: ["train", "test"], 3: ["train", "val", "test"],
               4: ["train", "val", "eval_train", "eval_test"]}


def _cmd_convert(args: argparse.Namespace) -> int:
    from clrdist.data.convert import convert

    out = convert(args.format, args.inputs, args.out, max_particles=args.max_particles,
                  overwrite=args.overwrite, block_rows=args.block_rows,
                  chunk_size=args.chunk_size, shard_chunks=args.shard_chunks,
                  label=args.label, progress=not args.no_progress, seed=args.seed)
    from clrdist.data.store import open_store

    s = open_store(out)
    print(f"wrote {s.n} samples to {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when samples fail the sanity checks (problems are reported, not
    raised); a missing / truncated / altered shard is a StoreError (status 2)."""
    from clrdist.data.store import NO_CHECKSUMS, StoreError, describe, open_store, verify_store

    store = open_store(args.store)
    verified = None
    if args.verify:
        verified = verify_store(store)
        if not verified["checksums"]:
            raise StoreError(f"{store.path}: cannot verify: {NO_CHECKSUMS}")
    info = describe(store)
    status = 1 if info["problems"]["samples"] else 0
    if args.json:
        print(json.dumps(info | ({"verified": verified} if verified else {}), indent=2))
        return status
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    t = Table(title=f"{info['path']}", show_header=False)
    t.add_row("samples", str(info["samples"]))
    t.add_row("kind", f"{info['kind']}  ({', '.join(info['particle_features'])} x {info['n_particles']})")
    t.add_row("labels", ", ".join(f"{k}: {v}" for k, v in info["labels"].items()))
    m = info["multiplicity"]
    t.add_row("multiplicity", f"mean {m['mean']:.1f}, min {m['min']}, p10 {m['p10']}, "
              f"median {m['median']}, p90 {m['p90']}, max {m['max']}")
    t.add_row("chunk / shard", f"{info['chunk_shape']['particles']} / {info['shard_shape']['particles']}"
              f"  ({info['n_chunks']} chunks)")
    ratio = info["compression_ratio"]
    t.add_row("on disk", f"{info['bytes_on_disk'] / 1e6:.1f} MB "
              f"(raw {info['bytes_uncompressed'] / 1e6:.1f} MB, ratio {ratio:.2f})")
    order = info["order"]
    t.add_row("order", f"random (seed {order.get('seed')})" if order else
              "[yellow]not recorded: may be sorted by class (rewrite it with clrdist data split)")
    integ = info["integrity"]
    if verified:
        t.add_row("integrity", f"verified: {verified['files_checked']} files, "
                  f"{verified['bytes_checked'] / 1e6:.1f} MB, sizes and CRC-32C match")
    elif integ:
        t.add_row("integrity", f"CRC-32C of {integ['files']} files recorded; every shard read "
                  "here matched (--verify: all files)")
    else:
        t.add_row("integrity", "[yellow]no checksums recorded (warning below)")
    probs = info["problems"]
    t.add_row("sanity", "all samples pass (finite, pT >= 0, masks match particles, labels declared)"
              if not probs["samples"] else f"[red]{probs['samples']} samples fail (below)")
    console.print(t)
    if not integ:
        console.print(f"[yellow]warning: {escape(NO_CHECKSUMS)}", soft_wrap=True)
    for ex in probs["examples"]:
        console.print(f"[red]problem: {escape(ex)}", soft_wrap=True)
    ft = Table(title="features")
    for col in ("name", "min", "mean", "max"):
        ft.add_column(col)
    for name, r in info["features"].items():
        ft.add_row(name, f"{r['min']:.4g}", f"{r['mean']:.4g}", f"{r['max']:.4g}")
    console.print(ft)
    prov = info["provenance"]
    if "sources" in prov:
        for src in prov["sources"]:
            console.print(f"source {src['name']}  {src['size']} bytes  sha256 {src['sha256'][:16]}...")
    if "split" in prov:
        sp = prov["split"]
        console.print(f"split {sp['name']!r} of {sp['parent']} ({sp['n']} of {sp['parent_n']})")
    return status


def _parse_fractions(text: str) -> list[float]:
    from clrdist.data.store import StoreError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StoreError(f"--fractions {text!r}: expected comma-separated numbers, e.g. 0.8,0.1,0.1") from None


def _cmd_split(args: argparse.Namespace) -> int:
    from clrdist.data.split import split_store
    from clrdist.data.store import StoreError

    fractions = _parse_fractions(args.fractions)
    names = args.names.split(",") if args.names else SPLIT_NAMES.get(
        len(fractions), [f"part{i}" for i in range(len(fractions))])
    if len(names) != len(fractions) or len(set(names)) != len(names):
        raise StoreError(f"--names {args.names!r}: need {len(fractions)} distinct names")
    store = Path(args.store)
    stem = store.name.removesuffix(".zarr")
    outs = split_store(store, dict(zip(names, fractions, strict=True)), out_dir=args.out_dir,
                       prefix=f"{stem}_", seed=args.seed, overwrite=args.overwrite)
    from clrdist.data.store import open_store

    for name, p in outs.items():
        print(f"{name:8s} {open_store(p).n:>10d} samples  {p}")
    return 0


def _cmd_toy(args: argparse.Namespace) -> int:
    from clrdist.data.store import StoreError
    from clrdist.data.toy import write_toy_store

    if args.n_per_class <= 0:
        raise StoreError(f"--n-per-class must be positive, got {args.n_per_class}")
    out = write_toy_store(args.out, n_per_class=args.n_per_class, seed=args.seed,
                          n_particles=args.n_particles, overwrite=args.overwrite)
    print(f"wrote {2 * args.n_per_class} toy jets to {out}")
    return 0


def register(subparsers) -> None:
    """Add ``convert``, ``info``, ``split`` and ``toy`` to the ``data`` sub-command."""
    c = subparsers.add_parser("convert", help="public datasets (toptag, lhco, adc2021) -> store")
    c.add_argument("format", choices=["toptag", "lhco", "adc2021"], help="input layout")
    c.add_argument("inputs", nargs="+", help="input .h5 files (appended into one store)")
    c.add_argument("--out", required=True, help="output store (.zarr)")
    c.add_argument("--max-particles", type=int, default=None,
                   help="particles kept per sample, hardest first (default 50 jets, 19 ADC objects)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output store")
    c.add_argument("--block-rows", type=int, default=None, help="rows read per block (bounds memory)")
    c.add_argument("--chunk-size", type=int, default=4096, help="samples per Zarr chunk")
    c.add_argument("--shard-chunks", type=int, default=16, help="chunks per shard file")
    c.add_argument("--label", type=int, default=None,
                   help="process id for every input (adc2021 default: from the file name; "
                        "lhco: for files without a label column)")
    c.add_argument("--seed", type=int, default=0,
                   help="seed of the random sample order the store is written in")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_convert)

    i = subparsers.add_parser("info", help="summarise a store")
    i.add_argument("store")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--verify", action="store_true",
                   help="re-check every data file against its recorded size and CRC-32C")
    i.set_defaults(func=_cmd_info)

    s = subparsers.add_parser("split", help="disjoint random splits (indices recorded)")
    s.add_argument("store")
    s.add_argument("--fractions", default="0.8,0.1,0.1", help="comma-separated, sum <= 1")
    s.add_argument("--names", default=None,
                   help="comma-separated split names (default train,val,test for three, "
                        "train,val,eval_train,eval_test for four)")
    s.add_argument("--out-dir", default=None, help="where <store>_<name>.zarr go (default: beside)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(func=_cmd_split)

    t = subparsers.add_parser("toy", help="synthetic top / QCD jets -> store")
    t.add_argument("--n-per-class", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-particles", type=int, default=50)
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=_cmd_toy)
