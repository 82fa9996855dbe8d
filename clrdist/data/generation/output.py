"""A generated store: its writer, and each finished shard appended to it in shard order.

The shards are generated one call each (:func:`clrdist.data.generation.events.generate_shard`,
in whatever process runs them: ``clrdist.generation_fanout`` runs them as Ray tasks) and
appended here in shard order; the writer puts the samples in the random order
``sample_order(n, seed)``, so the same config gives the same store however the shards ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clrdist.data.convert import ADC_LABELS
from clrdist.data.generation.plan import GenerationConfig, Plan, provenance
from clrdist.data.schema import PARTICLE_FEATURES, generated_features
from clrdist.data.store import StoreWriter


def generated_store_writer(config: GenerationConfig, plan: Plan, out: str | Path, *,
                           chunk_size: int = 4096, overwrite: bool = False) -> StoreWriter:
    """The writer of ``plan``'s store at ``out`` (a context manager; an existing output is
    refused here, before any shard runs): its kind, columns, label names and provenance."""
    label_names = {v: k for k, v in plan.labels.items()}
    if plan.kind == "event":  # the converter's label names: one schema for ADC2021 stores
        label_names = dict(ADC_LABELS)
    return StoreWriter(
        Path(out), kind=plan.kind, particle_features=PARTICLE_FEATURES,
        feature_names=generated_features(plan.kind, invisible="svj" in plan.labels),
        label_names=label_names, n_particles=config.n_slots,
        chunk_size=chunk_size, provenance=provenance(config, plan), overwrite=overwrite,
        shuffle_seed=config.seed,  # random sample order (not process by process): i.i.d. batches
    )


def append_shard(writer: StoreWriter, plan: Plan, index: int, result: dict,
                 stats: dict | None = None) -> None:
    """Append shard ``index`` of ``plan`` (``result``: what ``generate_shard`` returned) with
    its process's label; ``stats``: if given, its timing statistics are added to
    ``stats["shards"]``."""
    spec = plan.shards[index]
    label = np.full(spec.n, plan.labels[spec.process], dtype=np.int8)
    writer.append(result["particles"], result["mask"], label, result["features"])
    if stats is not None:
        stats.setdefault("shards", []).append(
            {"process": spec.process, "subprocess": spec.pythia_process, **result["stats"]}
        )
