"""Quality per second: how fast does training reach a useful representation? Prints one JSON.

For a fixed wall-clock training budget, on one process, recipes train on the same store from
the same init seed, taking turns in short slices (a machine shared with other jobs slows all
alike). The initial weights are the same except where the recipes' input widths differ: the
demo's 6 log-pT features against JetCLR's 3 give different input layers, so each recipe has its
own untrained AUC (both reported). The recipes:

- ``ours``: ``configs/demo.yaml`` as it is (log-pT input features, views on ``augment.slots``
  with soft smearing and collinear splitting);
- ``reference``: the same encoder with JetCLR's public recipe (pT / 600 GeV inputs, the
  four augmentations with translations, collinear splits only into free model slots);
- any ``--recipe NAME=OVERRIDE;OVERRIDE...`` (config overrides of ``configs/demo.yaml``), e.g.
  ``--recipe "translations back=augment.views=[[{name: translate}],[{name: translate}]]"``.

Every ``--eval-every`` seconds of training each recipe's representation gets the linear
classifier test, fitted on ``eval_train`` and scored on ``val`` (the clock stops meanwhile):
recipes are compared on validation stores only, never on ``eval_test``. Reported per recipe:
its untrained encoder's validation AUC, the AUC at the end of the budget and its peak, the wall
time and jets seen until the AUC first exceeds ``target`` (default: ours' untrained AUC +
0.01), and the ratios ours / reference. ``--out`` writes the same as a results file (rows per
recipe) for the docs table.

    python -m bench.learning --stores demo_out [--budget 120] [--eval-every 15] [--target 0.95]
    python -m bench.learning --stores data/ablation --prefix jets_ --out docs/results/learning_speed.json

``--stores`` is a folder with ``train``, ``val`` and ``eval_train`` stores (what ``clrdist
demo`` or ``clrdist data split`` leave); without it a toy store is made in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import cpu_model, write_results  # noqa: E402
from clrdist.config import load_config  # noqa: E402
from clrdist.data.store import open_store  # noqa: E402
from clrdist.eval.runner import evaluate_during_training  # noqa: E402
from clrdist.factory import build_encoder, build_loss, initial_model  # noqa: E402
from clrdist.physics.augment import build_view  # noqa: E402
from clrdist.runtime import tune_malloc  # noqa: E402
from clrdist.train.inputs import view_inputs  # noqa: E402

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
JETCLR_VIEW = ("[{name: rotate}, {name: translate}, {name: smear_soft}, "
               "{name: collinear_split}]")
REFERENCE = ["model.input_features=pt", "model.input_dim=3", "augment.slots=null",
             f"augment.views=[{JETCLR_VIEW}, {JETCLR_VIEW}]"]


class Recipe:
    """One recipe's model, optimiser and data order, advanced a slice of steps at a time."""

    def __init__(self, name: str, cfg, train: dict, seed: int):
        self.name, self.cfg, self.train = name, cfg, train
        self.model = initial_model(cfg.model, seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr)
        self.loss = build_loss(cfg.loss)
        self.views = [build_view(v, cfg.augment.strength, cfg.augment.backend)
                      for v in cfg.augment.views]
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.order, self.pos = self.rng.permutation(len(train["mask"])), 0
        self.steps = self.jets = 0
        self.seconds = 0.0
        self.curve: list[tuple[float, int, float]] = []  # (seconds, jets, val AUC)

    def lr(self) -> float:
        warm = self.cfg.optim.warmup_steps
        return self.cfg.optim.lr * min(1.0, (self.steps + 1) / max(1, warm))

    def run(self, seconds: float) -> None:
        """Train for about ``seconds`` of wall time."""
        B = self.cfg.data.batch_size
        t0 = time.perf_counter()
        self.model.train()
        while time.perf_counter() - t0 < seconds:
            if self.pos + B > len(self.order):
                self.order, self.pos = self.rng.permutation(len(self.order)), 0
            idx = np.sort(self.order[self.pos:self.pos + B])
            self.pos += B
            for g in self.opt.param_groups:
                g["lr"] = self.lr()
            x, m = view_inputs(self.train["particles"][idx], self.train["mask"][idx], self.cfg,
                               self.views, self.gen)
            _, z = self.model(x, m)
            loss = self.loss(*z.chunk(len(self.views)))["loss"]
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.steps += 1
            self.jets += B
        self.seconds += time.perf_counter() - t0

    def validate(self, fit: dict, val: dict) -> float:
        encode = build_encoder(self.model, self.cfg)
        auc = evaluate_during_training(encode(fit), fit["label"], encode(val), val["label"])["lct_auc"]
        self.curve.append((round(self.seconds, 1), self.jets, round(auc, 4)))
        return auc


def first_reaching(curve, target: float) -> tuple[float | None, int | None]:
    for seconds, jets, auc in curve:
        if auc > target:
            return seconds, jets
    return None, None


def toy_stores(folder: Path) -> Path:
    from clrdist.data.split import split_store
    from clrdist.data.toy import write_toy_store

    write_toy_store(folder / "toy.zarr", n_per_class=6000, seed=0, n_particles=100)
    split_store(folder / "toy.zarr", {"train": 0.6, "val": 0.1, "eval_train": 0.15,
                                      "eval_test": 0.15}, out_dir=folder, seed=0)
    return folder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stores", default=None, help="folder with train/val/eval_train .zarr")
    ap.add_argument("--prefix", default="", help="store names' prefix (data split: STORE_)")
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per recipe")
    ap.add_argument("--eval-every", type=float, default=15.0, help="training seconds per slice")
    ap.add_argument("--target", type=float, default=None,
                    help="validation AUC to reach (default: untrained + 0.01)")
    ap.add_argument("--max-eval", type=int, default=4000, help="samples per LCT set")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (both recipes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME=OVERRIDES",
                    help="another recipe: demo.yaml with ';'-separated overrides (repeatable)")
    ap.add_argument("--out", default=None, help="results JSON (docs/results/learning_speed.json)")
    args = ap.parse_args(argv)
    extra = []
    for r in args.recipe:
        name, sep, sets = r.partition("=")
        if not sep or not name:
            ap.error(f"--recipe {r!r}: expected NAME=OVERRIDE;OVERRIDE...")
        extra.append((name, [o.strip() for o in sets.split(";") if o.strip()]))
    torch.set_num_threads(args.threads)
    tune_malloc()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.stores) if args.stores else toy_stores(Path(tmp))
        path = lambda name: folder / f"{args.prefix if args.stores else ''}{name}.zarr"  # noqa: E731
        train = open_store(path("train")).read_all()
        fit = open_store(path("eval_train")).read_all(max_samples=args.max_eval)
        val = open_store(path("val")).read_all(max_samples=args.max_eval)
        slots = open_store(path("train")).n_particles
        ours_cfg = load_config(DEMO, [] if slots >= 100 else ["augment.slots=null"])
        recipes = [Recipe("ours", ours_cfg, train, args.seed),
                   Recipe("reference", load_config(DEMO, REFERENCE), train, args.seed)]
        recipes += [Recipe(name, load_config(DEMO, sets), train, args.seed) for name, sets in extra]
        untrained = {r.name: r.validate(fit, val) for r in recipes}
        target = args.target if args.target is not None else untrained["ours"] + 0.01
        while min(r.seconds for r in recipes) < args.budget:
            for r in recipes:  # take turns: both see the same machine load
                r.run(min(args.eval_every, args.budget - r.seconds))
                r.validate(fit, val)

    out: dict = {"bench": "learning", "cpu": cpu_model(),
                 "torch_threads": args.threads, "budget_s": args.budget,
                 "stores": str(args.stores or "toy (temporary)"), "n_train": len(train["mask"]),
                 "target_val_auc": round(target, 4)}
    for r in recipes:
        t, jets = first_reaching(r.curve[1:], target)
        out[r.name] = {"untrained_val_auc": round(untrained[r.name], 4),
                       "final_val_auc": r.curve[-1][2], "steps": r.steps, "jets_seen": r.jets,
                       "jets_per_s": round(r.jets / r.seconds, 1), "seconds_to_target": t,
                       "jets_to_target": jets, "curve": r.curve}
    ours, ref = out["ours"], out["reference"]
    out["final_auc_gain_over_untrained"] = {r.name: round(out[r.name]["final_val_auc"]
                                                          - untrained[r.name], 4) for r in recipes}
    out["time_to_target_ratio_ref_over_ours"] = (
        round(ref["seconds_to_target"] / ours["seconds_to_target"], 2)
        if ours["seconds_to_target"] and ref["seconds_to_target"] else None)
    out["jets_per_s_ratio_ours_over_ref"] = round(ours["jets_per_s"] / ref["jets_per_s"], 3)
    if args.out:
        rows = [{"name": r.name, **{k: v for k, v in out[r.name].items() if k != "curve"},
                 "peak_val_auc": max(c[2] for c in r.curve),
                 "peak_at_s": max(r.curve, key=lambda c: c[2])[0]} for r in recipes]
        write_results(args.out, {**out, "rows": rows}, argv=sys.argv[1:] if argv is None else argv)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
