"""The untrained reference's spread: the LCT of the demo's architecture at N init seeds (no
training) and of the raw inputs, on the demo's eval_train / eval_test splits, through
``run_evaluations`` (the code path every evaluation's ``<name>_init_*`` rows take).

    python -m bench.references --data pythia --jets-per-class 10000 --seeds 12 \\
        --out docs/results/untrained_seeds.json

Rows: one per init seed (``untrained seed k``), the seeds' mean / std / min / max
(``untrained, N seeds``) and the raw inputs. Data: the demo's jets (``clrdist.demo.make_jets``,
``--seed`` as the demo's) split as the demo splits them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", choices=["pythia", "toy"], default="toy")
    p.add_argument("--jets-per-class", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=12, help="init seeds 0..N-1")
    p.add_argument("--seed", type=int, default=0, help="the jets' and splits' seed")
    p.add_argument("--config", default=str(Path(__file__).resolve().parent.parent / "configs"
                                           / "demo.yaml"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default=None, help="docs/results/<name>.json (default: print)")
    args = p.parse_args(argv)

    import json

    import torch

    from clrdist.config import load_config
    from clrdist.data.split import split_store
    from clrdist.data.store import open_store
    from clrdist.demo import SPLITS, make_jets
    from clrdist.eval.runner import Context, run_evaluations
    from clrdist.factory import build_encoder, initial_model

    cfg = load_config(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        jets = Path(tmp) / "jets.zarr"
        make_jets(args.data, jets, args.jets_per_class, args.seed, args.workers,
                  cfg.augment.slots or cfg.data.n_particles)
        split_store(jets, SPLITS, out_dir=tmp, seed=args.seed, overwrite=True)
        tr = open_store(Path(tmp) / "eval_train.zarr").read_all()
        te = open_store(Path(tmp) / "eval_test.zarr").read_all()
    seeds = list(range(args.seeds))
    with torch.random.fork_rng():
        encoders = [build_encoder(initial_model(cfg.model, s), cfg) for s in seeds]
    ctx = Context(seed=0, init_encoders=encoders, init_seeds=seeds, n_particles=cfg.data.n_particles)
    res = run_evaluations(encoders[0], train_data=tr, test_data=te, which={"lct"}, context=ctx,
                          options={"lct": {"figures": False}})["lct"]
    m = res.metrics
    rows = [{"name": f"untrained seed {r['init_seed']}", "auc": r["lct_init_auc"],
             "auc_err": r["lct_init_auc_std"], "inv": r["lct_init_inv_eps_b_at_0.5"]}
            for r in res.tables["lct_init_seeds"]]
    rows.append({"name": f"untrained, {len(seeds)} seeds", "auc": m["lct_init_auc"],
                 "auc_err": m["lct_init_auc_seed_std"], "auc_min": m["lct_init_auc_min"],
                 "auc_max": m["lct_init_auc_max"], "inv": m["lct_init_inv_eps_b_at_0.5"]})
    rows.append({"name": "raw inputs", "auc": m["lct_raw_auc"], "auc_err": m["lct_raw_auc_std"],
                 "inv": m["lct_raw_inv_eps_b_at_0.5"]})
    numbers = {"data": args.data, "jets_per_class": args.jets_per_class, "config": args.config,
               "n_test": m["lct_n_test"], "rows": rows}
    if args.out:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from bench.results import write_results

        write_results(args.out, numbers)
    print(json.dumps(numbers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
