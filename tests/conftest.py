"""Shared fixtures: a real local Ray cluster and tiny toy stores split into disjoint parts."""

import os

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster started the way every clrdist command starts one
    (``clrdist.cluster.start_local``), without the watchdog that ``ensure_ray`` adds.

    3 logical CPUs on this 2-core machine: 2 training workers plus a Tune trial's driver.
    """
    import ray

    from clrdist.cluster import start_local

    start_local(3, log_to_driver=bool(os.environ.get("CLRDIST_TEST_RAY_LOGS")))
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def toy_splits(tmp_path_factory):
    """1200 top + 1200 QCD toy jets split 50/10/20/20 into train / val / eval_train / eval_test."""
    from clrdist.data.split import split_store
    from clrdist.data.toy import write_toy_store

    d = tmp_path_factory.mktemp("stores")
    write_toy_store(d / "toy.zarr", n_per_class=1200, seed=3)
    split_store(d / "toy.zarr", {"train": 0.5, "val": 0.1, "eval_train": 0.2, "eval_test": 0.2}, out_dir=d, seed=3)
    return d


@pytest.fixture(scope="session")
def ddp_reference(toy_splits, tmp_path_factory):
    """The DDP run of tests/_continuity.RESUME_SETS never interrupted, in its own process and Ray
    cluster: the killed-driver and the SIGUSR1 DDP tests both compare their resumed run with it."""
    from _continuity import RESUME_SETS, uninterrupted

    return uninterrupted(toy_splits, tmp_path_factory.mktemp("uninterrupted"), *RESUME_SETS,
                         "scaling.engine=ddp")


TIERS = ("integration", "slow", "cluster")


@pytest.fixture
def ray_starts(monkeypatch):
    """The calls that would start or join Ray during the test (none for a refused config).

    Checking ``ray.is_initialized()`` instead would depend on whether an earlier test in the
    same process left a cluster running."""
    import clrdist.cluster
    import clrdist.train.lifecycle

    calls = []
    real = clrdist.cluster.ensure_ray

    def watched(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(clrdist.cluster, "ensure_ray", watched)
    monkeypatch.setattr(clrdist.train.lifecycle, "ensure_ray", watched)
    return calls


# the tests that share the session fixture `ddp_reference` (an uninterrupted run, ~50 s): under
# pytest-xdist (`make test`, --dist loadgroup) they go to one worker, which computes it once
SHARES_DDP_REFERENCE = "ddp_reference"


def _longest_first(item) -> int:
    """Sort key under pytest-xdist: slow integration tests, then integration, then slow, then
    unit tests, so the minutes-long ones start first and the short ones fill in around them."""
    integration, slow = (item.get_closest_marker(t) is not None for t in ("integration", "slow"))
    return {(True, True): 0, (True, False): 1, (False, True): 2}.get((integration, slow), 3)


def pytest_collection_modifyitems(config, items):
    """A test with no tier marker is a unit test: `make test-fast` selects `-m unit`. Under
    pytest-xdist, the longest tests first (a stable sort: the same order in every worker)."""
    for item in items:
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(pytest.mark.unit)
        if SHARES_DDP_REFERENCE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(SHARES_DDP_REFERENCE))
    if getattr(config.option, "numprocesses", None):
        items.sort(key=_longest_first)
