"""The ``clrdist`` command.

    clrdist data {toy,generate,convert,info,split} ...   make, import and inspect sample stores
    clrdist train CONFIG [--set key=value ...]          contrastive training with Ray Train
    clrdist train [CONFIG] --resume RUN_ID              continue an interrupted run
    clrdist eval RUN_ID [--lct] [--cwola] [--nplm] ... [--latest] [--json]
    clrdist demo                                         the whole path at small scale

User errors (bad files, configs, stores) print one line ``clrdist: error: ...`` and exit 2.
A training run stopped by SIGINT / SIGTERM / SIGHUP is marked KILLED and exits 128 + signal.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from clrdist import __version__, data_cli
from clrdist.errors import ClrdistError
from clrdist.eval.registry import EVALUATIONS
from clrdist.train.signals import RunInterrupted, install_command_handlers


def _train_config(args: argparse.Namespace):
    """The config file with --set; with --resume and no file, the run's stored config."""
    # lazy: only `train` reads a config file (YAML and the config models, ~50 ms)
    from clrdist.config import apply_override, config_from_dict, drop_foreign, load_config

    if not (args.resume and args.config is None):
        return load_config(args.config, args.set)  # validated before anything starts
    # lazy: mlflow (~2 s) only for --resume without a config file
    from clrdist import tracking

    uri = load_config(None, [o for o in args.set if o.startswith("tracking.uri=")]).tracking.uri
    uri = tracking.check_uri(uri, create=False)
    tracking.get_run(uri, args.resume)  # a clear error for an unknown run
    raw = drop_foreign(tracking.download_config(uri, args.resume))  # before --set: those must fit
    for override in args.set:
        apply_override(raw, override)
    return config_from_dict(raw, source=f"run {args.resume}")


def _cmd_train(args: argparse.Namespace) -> int:
    # lazy: the pipeline loads torch, MLflow and zarr (~4 s), only once the command runs
    from clrdist.pipeline import train_and_evaluate

    cfg = _train_config(args)
    result = train_and_evaluate(cfg, evaluate=not args.no_eval, resume=args.resume)
    summary = {"run_id": result.run_id, "checkpoint": result.checkpoint_path,
               "tracking_uri": result.tracking_uri, "resumed": result.resumed,
               "metrics": result.metrics}
    print(json.dumps(summary, indent=2) if args.json else _format_summary(summary))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    # lazy: the pipeline and tracking load torch, MLflow and zarr (~4 s), only once the command runs
    from clrdist.pipeline import evaluate_run
    from clrdist.tracking import check_uri

    which = {n for n in EVALUATIONS if getattr(args, n)}
    default = {n for n, ev in EVALUATIONS.items() if ev.default}
    results = evaluate_run(check_uri(args.tracking_uri, create=False), args.run_id, which or default,
                           latest=args.latest)
    metrics = {k: v for res in results.values() for k, v in res.metrics.items()}
    print(json.dumps(metrics, indent=2) if args.json else
          "\n".join(f"{k:40s} {v:.4g}" for k, v in sorted(metrics.items())))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    # lazy: the demo loads torch (~2 s), only once the command runs
    from clrdist.demo import run_demo

    run_demo(out_dir=args.out, n_per_class=args.jets_per_class, epochs=args.epochs,
             workers=args.workers, tracking_uri=args.tracking_uri, data=args.data,
             verbose=args.verbose, train_seeds=args.train_seeds)
    return 0


def _format_summary(summary: dict) -> str:
    lines = [f"run id      {summary['run_id']}", f"checkpoint  {summary['checkpoint']}",
             f"tracking    {summary['tracking_uri']}"]
    lines += [f"  {k:38s} {v:.4g}" for k, v in sorted(summary["metrics"].items())]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clrdist", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"clrdist {__version__}")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug logging; the demo also keeps Ray's output on the console")
    p.add_argument("--allow-unverified", action="store_true",
                   help="read stores that have no integrity record (written by an older clrdist "
                        "or altered): nothing then detects a missing, resized or altered array")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="make, import and inspect sample stores")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    data_cli.register(data_sub)  # convert, info, split, toy, generate

    t = sub.add_parser("train", help="contrastive training with Ray Train")
    t.add_argument("config", nargs="?", default=None, help="YAML config (default: built-in demo)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set loss.temperature=0.2 (repeatable)")
    t.add_argument("--no-eval", action="store_true", help="skip the post-training evaluations")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue this MLflow run from its last checkpoint (CONFIG optional: "
                        "default the run's own); a KILLED run with the same tracking.run_name "
                        "is continued without it")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("eval", help="evaluate a trained run and log into it")
    e.add_argument("run_id")
    for name, ev in EVALUATIONS.items():
        e.add_argument(f"--{name}", action="store_true",
                       help=ev.help + (" (the default when none is given)" if ev.default else ""))
    e.add_argument("--latest", action="store_true",
                   help="evaluate the run's latest checkpoint (a run that did not finish)")
    e.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_cmd_eval)

    d = sub.add_parser("demo", help="jets -> store -> 2-worker training -> every evaluation, "
                       "next to the untrained encoder -> MLflow")
    d.add_argument("--out", default="demo_out", help="folder for stores and checkpoints")
    d.add_argument("--data", choices=("auto", "pythia", "toy"), default="auto",
                   help="auto: Pythia 8 jets when pythia8mc is installed, else toy jets")
    d.add_argument("--jets-per-class", type=int, default=None,
                   help="default: 10000 (Pythia) or 15000 (toy)")
    d.add_argument("--epochs", type=int, default=None, help="default: configs/demo.yaml's")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--train-seeds", type=int, default=1, metavar="N",
                   help="train at N seeds (the config's and the next ones; the extra runs "
                        "evaluate the LCT only): the verdict then needs each to beat every "
                        "untrained seed (default 1)")
    d.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None:  # the command itself (not a test calling main): SIGTERM at any stage
        install_command_handlers()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # lazy: zarr (~0.3 s) loads after the arguments parse: --help and usage errors stay fast
    from clrdist.data.store import UNVERIFIED_ENV

    before = os.environ.get(UNVERIFIED_ENV)
    if args.allow_unverified:  # the environment reaches the Ray workers this command starts
        os.environ[UNVERIFIED_ENV] = "1"
    try:
        return int(args.func(args) or 0)
    except ClrdistError as e:
        msg = str(e).replace("\n", "\n  ")
        print(f"clrdist: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("clrdist: interrupted", file=sys.stderr)
        return 130
    except RunInterrupted as e:
        run_id = getattr(e, "run_id", None)
        print(f"clrdist: stopped by {e}; " + (
            f"run {run_id} is KILLED, rerun the same command to resume" if run_id
            else "no run was started"), file=sys.stderr)
        return getattr(e, "exit_code", 128 + e.signum)  # Preempted: 75
    finally:
        if before is None:
            os.environ.pop(UNVERIFIED_ENV, None)
        else:
            os.environ[UNVERIFIED_ENV] = before


if __name__ == "__main__":
    sys.exit(main())
