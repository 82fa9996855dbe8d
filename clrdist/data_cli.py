"""``clrdist data convert|info|split|toy|generate``: registered into the ``data`` sub-command.

The command line of :mod:`clrdist.data` (which parses no arguments itself), beside
:mod:`clrdist.cli`. Handlers return an exit status; user errors are raised as ``ClrdistError``
subclasses and printed as one line by :func:`clrdist.cli.main`. The library names its arguments
in errors (``n_jets``, ``overwrite=True``); the handlers here name the flags the user typed
instead. Each handler imports the library modules it runs (zarr, rich, the generation and its
Ray fan-out) inside itself, so that ``clrdist --help`` and the other commands load none of them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from clrdist.data.detector import DETECTORS
from clrdist.data.generation import GenerationConfig, GenerationError, pythia_available
from clrdist.data.generation.processes import PROCESSES, default_jet
from clrdist.data.toy import write_toy_store
from clrdist.errors import ClrdistError

SPLIT_NAMES = {1: ["train"], 2: ["train", "test"], 3: ["train", "val", "test"],
               4: ["train", "val", "eval_train", "eval_test"]}
# library argument -> flag, for the errors of convert / split / toy / generate
_FLAGS = {"overwrite=True": "--overwrite", "max_particles": "--max-particles",
          "label=ID": "--label ID"}
# GenerationConfig field -> flag of `data generate`
_GENERATE_FLAGS = {"n_jets": "--jets", "seed": "--seed", "jet": "--jet-r/--pt-min/--pt-max/--eta-max",
                   "n_particles": "--max-particles", "detector": "--detector",
                   "resonance_masses": "--resonance-masses", "r_inv": "--r-inv",
                   "svj_mass": "--svj-mass", "ecm": "--ecm", "shard_size": "--shard-size",
                   "pythia_settings": "--pythia"}


def _with_flags(handler):
    """``handler`` whose ClrdistError messages name flags instead of library arguments."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ClrdistError as e:
            if isinstance(e, GenerationError) and e.problems:
                raise GenerationError(problems=[(_GENERATE_FLAGS.get(f, f), text)
                                                for f, text in e.problems]) from None
            msg = str(e)
            for arg, flag in _FLAGS.items():
                msg = msg.replace(arg, flag)
            if msg == str(e):
                raise
            raise type(e)(msg) from None

    run.__doc__ = handler.__doc__
    return run


def _cmd_convert(args: argparse.Namespace) -> int:
    # lazy: zarr (~0.3 s) only for the commands that read or write a store
    from clrdist.data.convert import convert
    from clrdist.data.store import open_store

    out = convert(args.format, args.inputs, args.out, max_particles=args.max_particles,
                  overwrite=args.overwrite, block_rows=args.block_rows,
                  chunk_size=args.chunk_size, shard_chunks=args.shard_chunks,
                  label=args.label, progress=not args.no_progress, seed=args.seed)
    s = open_store(out)
    print(f"wrote {s.n} samples to {out}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Exit status 0, or 1 when samples fail the sanity checks (problems are reported, not
    raised); a missing / truncated / altered shard is a StoreError (status 2)."""
    # lazy: zarr (~0.3 s) only for the commands that read or write a store
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
    # lazy: rich's table (~50 ms) only for `data info`
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
    # lazy: zarr (~0.3 s) only for the commands that read or write a store
    from clrdist.data.store import StoreError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise StoreError(f"--fractions {text!r}: expected comma-separated numbers, e.g. 0.8,0.1,0.1") from None


def _cmd_split(args: argparse.Namespace) -> int:
    # lazy: zarr (~0.3 s) only for the commands that read or write a store
    from clrdist.data.split import split_store
    from clrdist.data.store import StoreError, open_store

    fractions = _parse_fractions(args.fractions)
    names = args.names.split(",") if args.names else SPLIT_NAMES.get(
        len(fractions), [f"part{i}" for i in range(len(fractions))])
    if len(names) != len(fractions) or len(set(names)) != len(names):
        raise StoreError(f"--names {args.names!r}: need {len(fractions)} distinct names")
    store = Path(args.store)
    stem = store.name.removesuffix(".zarr")
    outs = split_store(store, dict(zip(names, fractions, strict=True)), out_dir=args.out_dir,
                       prefix=f"{stem}_", seed=args.seed, overwrite=args.overwrite)
    for name, p in outs.items():
        print(f"{name:8s} {open_store(p).n:>10d} samples  {p}")
    return 0


def _cmd_toy(args: argparse.Namespace) -> int:
    # lazy: zarr (~0.3 s) only for the commands that read or write a store
    from clrdist.data.store import StoreError

    if args.n_per_class <= 0:
        raise StoreError(f"--n-per-class must be positive, got {args.n_per_class}")
    out = write_toy_store(args.out, n_per_class=args.n_per_class, seed=args.seed,
                          n_particles=args.n_particles, overwrite=args.overwrite)
    print(f"wrote {2 * args.n_per_class} toy jets to {out}")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    # lazy: Ray (~0.6 s) only when generating
    from clrdist.generation_fanout import write_generated_store

    if not pythia_available():
        raise GenerationError("pythia8mc is not installed; install the generation extra: "
                              "pip install 'clrdist[generation]'")
    overrides = {k: v for k, v in (("R", args.jet_r), ("pt_min", args.pt_min),
                                   ("pt_max", args.pt_max), ("abs_eta_max", args.eta_max))
                 if v is not None}
    config = GenerationConfig(
        processes=args.processes, n_jets=args.jets, seed=args.seed,
        jet=asdict(default_jet(args.processes)) | overrides, n_particles=args.max_particles,
        detector=args.detector, resonance_masses=args.resonance_masses, r_inv=args.r_inv,
        svj_mass=args.svj_mass, ecm=args.ecm, mpi=args.mpi, shard_size=args.shard_size,
        pythia_settings=args.pythia)
    out = write_generated_store(config, args.out, workers=args.workers, overwrite=args.overwrite,
                                progress=not args.no_progress)
    print(f"wrote {out}")
    return 0


def _masses(text: str) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected M,mX,mY in GeV, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three masses M,mX,mY in GeV, got {text!r}")
    return vals  # type: ignore[return-value]


def register(subparsers) -> None:
    """Add ``convert``, ``info``, ``split``, ``toy`` and ``generate`` to the ``data`` sub-command."""
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
    c.set_defaults(func=_with_flags(_cmd_convert))

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
    s.set_defaults(func=_with_flags(_cmd_split))

    t = subparsers.add_parser("toy", help="synthetic top / QCD jets -> store")
    t.add_argument("--n-per-class", type=int, required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-particles", type=int, default=50)
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=_with_flags(_cmd_toy))
    _register_generate(subparsers)


def _register_generate(subparsers) -> None:
    g = subparsers.add_parser(
        "generate",
        help="generate jets / dijet events / ADC2021-like events with Pythia 8 + FastJet (Ray "
             "tasks) into a store",
        description=(
            "Generate samples with Pythia 8 and FastJet as Ray tasks. Jet processes: top, w, qcd, "
            "svj (kind 'jet'); dijet processes: resonance, qcd (kind 'dijet'); ADC2021-like "
            "events: adc_background, ato4l, leptoquark, htautau, hchtaunu (kind 'event', "
            "docs/events.md). Needs the 'generation' extra (pythia8mc)."
        ),
    )
    g.add_argument("processes", nargs="+", metavar="PROCESS", help=f"one or more of {', '.join(PROCESSES)}")
    g.add_argument("--jets", "--events", dest="jets", type=int, required=True, metavar="N",
                   help="accepted jets (dijet, ADC2021: events) per process")
    g.add_argument("--out", required=True, metavar="STORE", help="output store (Zarr directory)")
    g.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    g.add_argument("--workers", type=int, default=None, help="concurrent Ray tasks (default: all CPUs)")
    g.add_argument("--detector", choices=list(DETECTORS), default=None, help="fast calorimeter simulation")
    g.add_argument("--r-inv", type=float, default=0.75, help="svj: invisible fraction of dark hadrons")
    g.add_argument("--svj-mass", type=float, default=2000.0, help="svj: Z' mass in GeV")
    g.add_argument("--resonance-masses", type=_masses, default=(3500.0, 500.0, 100.0),
                   metavar="M,mX,mY", help="resonance: W', X, Y masses in GeV (default 3500,500,100)")
    g.add_argument("--jet-r", type=float, default=None, help="anti-kT radius (default 0.8; dijet 1.0; events 0.4)")
    g.add_argument("--pt-min", type=float, default=None, help="jet pT window low edge, GeV (default 550; svj 150; dijet: leading jet 1200)")
    g.add_argument("--pt-max", type=float, default=None, help="jet pT window high edge, GeV (default 650; svj 300; dijet: none)")
    g.add_argument("--eta-max", type=float, default=None, help="jet |eta| cut (default 2.0; dijet 2.5)")
    g.add_argument("--max-particles", type=int, default=50, metavar="P", help="constituents kept per jet")
    g.add_argument("--ecm", type=float, default=None,
                   help="centre-of-mass energy, GeV (default: jet stores 14000 as the top-tagging "
                        "data, dijet stores 13000 as LHCO)")
    g.add_argument("--mpi", action="store_true", help="switch on multiparton interactions (off by default)")
    g.add_argument("--pythia", action="append", default=[], metavar="SETTING",
                   help="extra Pythia setting for every process, e.g. 'PartonLevel:ISR = off' (repeatable)")
    g.add_argument("--shard-size", type=int, default=1000, help="samples per Ray task (part of the seed contract)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing store")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=_with_flags(_cmd_generate))
