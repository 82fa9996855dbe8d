"""The Zarr v3 sample store: schema, writer, reader, validation.

One Zarr v3 group per dataset::

    particles  float32 (N, P, F)   constituents / objects, padded, e.g. (pT [GeV], eta, phi)
    mask       bool    (N, P)      real particle (True) or padding
    label      int8    (N,)        -1 unknown, 0 background, 1.. signal or process id
    features   float32 (N, K)      sample-level quantities (jet pT, eta, phi, mass, ...)

Every array is chunked along the sample axis with the same chunk length and stored through
Zarr's sharding codec (``shard_chunks`` chunks per shard file: HPC file systems hate millions of
small files), compressed with Blosc/Zstd level 3 and byte shuffle. Group attributes carry the
schema version, kind, particle feature names, feature names, label names and provenance.

A store is written under ``<out>.tmp-<uuid>`` next to the output and renamed when complete, so a
crash never leaves a half store that looks valid; a later write to the same output removes the
temporary directories of writers that were killed. Readers validate the schema and fail with a
:class:`StoreError` that names the store and the problem.

Order: a writer given ``shuffle_seed`` writes its samples in the random order
:func:`sample_order` (seed recorded in ``provenance.order``), so that any contiguous range of
the store, and so any batch of the stream, has the store's class mix up to binomial noise.

Integrity: every array is written with all its chunks (also the all-zero ones) and the group
attribute ``integrity`` records each shard file's size and CRC-32C and each array's shape.
``open_store`` checks the attributes' types, every array's shape against the record and that
every recorded file exists with its size; the first read of a shard checks its CRC. A store
without a record is refused unless the user accepts it (``clrdist --allow-unverified``). A missing,
truncated or altered shard raises :class:`StoreError` naming the store, the array and the shard,
never reads as zeros. :func:`verify_store` re-checks all (or a sample of) the shards and
:func:`check_sample_sanity` checks a random sample of the values (finite, pT >= 0, masks
consistent with the particles, labels declared).
"""
from clrdist.data.store.base import (  # noqa: F401 (the package's public names)
    _DTYPES,
    ARRAYS,
    INTEGRITY_VERSION,
    KINDS,
    SCHEMA_VERSION,
    StoreError,
    log,
    refuse_existing,
    sample_order,
    sample_problems,
)
from clrdist.data.store.inspect import check_sample_sanity, describe, verify_store  # noqa: F401
from clrdist.data.store.integrity import (  # noqa: F401
    NO_CHECKSUMS,
    UNVERIFIED_ENV,
    _file_records,
    _shard_key,
    unverified_allowed,
)
from clrdist.data.store.reader import SampleStore, open_store  # noqa: F401
from clrdist.data.store.stale import clean_stale_tmp  # noqa: F401
from clrdist.data.store.writer import StoreWriter, write_store  # noqa: F401
