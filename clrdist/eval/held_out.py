"""The evaluation stores are fit for evaluation: labelled with both classes and held out.

An evaluation is only as honest as its stores: a test store that shares samples with the
training store, with the store the classifiers are fitted on, or with the validation store
(that a sweep selected on) makes the numbers meaningless. These checks refuse every pair of
stores they cannot prove disjoint; training runs them before any cluster starts
(``clrdist.train.trainer.preflight``) and evaluation again before it reads a store, on the
stores the run's config names (``clrdist.eval_checks``).
"""

from __future__ import annotations

import numpy as np

from clrdist.data.split import check_disjoint
from clrdist.data.store import SampleStore, StoreError, open_store


def _units(store: SampleStore) -> set[tuple]:
    """What a store's samples were made from, as comparable identifiers: two stores that share
    no identifier cannot share a sample (splits of one parent are compared by index instead).

    Generated stores: one identifier per shard, (process, settings hash, Pythia seed): shards
    equal in all three make the same events whatever the store, selection or detector. Converted
    public files: their content hashes. Anything else (toy stores, generated stores from before
    per-shard provenance): the generator and its master seed."""
    prov = store.attrs.get("provenance", {})
    if prov.get("shards"):
        return {("shard", s["process"], s["settings_sha256"], int(s["pythia_seed"]))
                for s in prov["shards"]}
    if prov.get("sources"):
        return {("sha256", src["sha256"]) for src in prov["sources"]}
    return {("seed", str(prov.get("generator") or prov.get("source")), str(prov.get("seed")))}


def _describe(unit: tuple) -> str:
    if unit[0] == "shard":
        return f"{unit[1]} shard with Pythia seed {unit[3]} and the same settings"
    if unit[0] == "sha256":
        return f"source file sha256:{unit[1][:16]}..."
    return f"generator {unit[1]} with seed {unit[2]}"


def check_held_out(train_store: str | SampleStore, *eval_stores: str | SampleStore) -> None:
    """Refuse stores that may share samples, pairwise over training and evaluation stores.

    Splits of one parent (``clrdist data split``) are checked sample by sample from their
    recorded indices, whatever the other stores are. Any other pair must be made from
    different shards / files / seeds (:func:`_units`): e.g. a training store generated with
    ``qcd --seed 0`` and evaluation splits of ``qcd top --seed 7`` pass, while ``qcd --seed 0``
    against ``top qcd --seed 0`` (the same QCD shards) is refused.
    """
    stores = [s if isinstance(s, SampleStore) else open_store(s)
              for s in (train_store, *eval_stores)]
    parents = [(s.attrs.get("provenance", {}).get("split") or {}).get("parent_content_sha256")
               for s in stores]
    for parent in {p for p in parents if p}:
        group = [s for s, p in zip(stores, parents, strict=True) if p == parent]
        if len(group) > 1:
            check_disjoint(*group)
    for i, a in enumerate(stores):
        for j in range(i + 1, len(stores)):
            b = stores[j]
            if parents[i] and parents[i] == parents[j]:
                continue  # checked by index above
            common = _units(a) & _units(b)
            if common:
                raise StoreError(
                    f"{b.path}: cannot prove it is disjoint from {a.path} (same source: "
                    f"{_describe(min(common))}); make held-out stores with `clrdist data split`")


def check_labelled(path: str, key: str) -> None:
    """A store an LCT fits or scores on: labelled, background (0) and signal (>= 1) present.
    ``key`` (e.g. ``data.eval_test_store``) starts the message."""
    try:
        label = np.asarray(open_store(path).arrays["label"][:])
    except StoreError as e:
        raise StoreError(f"{key}: {e}") from None
    n_bkg, n_sig = int((label == 0).sum()), int((label > 0).sum())
    if n_bkg == 0 or n_sig == 0:
        what = "no labelled samples (all -1)" if n_bkg + n_sig == 0 else \
            f"only {'signal' if n_sig else 'background'} samples ({n_bkg} label 0, {n_sig} label >= 1)"
        raise StoreError(f"{key}: {path} has {what}; the evaluations need background (0) "
                         "and signal (>= 1)")

