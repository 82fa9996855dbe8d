"""Pythia 8 + FastJet event generation, shard by shard, written to a sample store.

    clrdist data generate top qcd --jets 100000 --out data/toptag.zarr --seed 1

    from clrdist.generation_fanout import generate_store
    generate_store(["top", "qcd"], 100_000, "data/toptag.zarr", seed=1)

The shards run as Ray tasks in :mod:`clrdist.generation_fanout` (the application layer); this
package does the work of one shard and writes the store, and imports no Ray.

One file per concern:

- :mod:`.processes`: the processes (top, qcd, svj, resonance), their Pythia settings and the
  default jet selection and collision energy;
- :mod:`.plan`: :class:`GenerationConfig` (the typed request; errors name the field), the plan
  of shards and their seeds, the provenance;
- :mod:`.events`: one jet or dijet shard's event loop (selection, truth matching, features);
- :mod:`.event_store`: one event-store shard (the ADC2021 objects and features);
- :mod:`.pythia`: Pythia and the two clustering back-ends; the only module that imports
  pythia8mc;
- :mod:`.output`: the store's writer, and each finished shard appended to it in shard order.

Labels: ``qcd`` is 0, the other processes 1, 2, ... in the order given (names in the store's
``label_names``). Feature names: :mod:`clrdist.data.schema`. docs/generation.md has the physics.
"""

from __future__ import annotations

import importlib.util

from clrdist.data.generation.plan import GenerationConfig, GenerationError, make_plan
from clrdist.data.generation.processes import PROCESSES

__all__ = [
    "PROCESSES",
    "GenerationConfig",
    "GenerationError",
    "make_plan",
    "pythia_available",
]


def pythia_available() -> bool:
    """True when pythia8mc (the ``generation`` extra) can be imported (it is not imported here)."""
    return importlib.util.find_spec("pythia8mc") is not None
