"""Shared fixtures: a real local Ray cluster and tiny toy stores split into disjoint parts."""

from pathlib import Path

import pytest

from clrdist.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster, dashboard on 127.0.0.1 (it serves Ray Train's state API).

    3 logical CPUs on this 2-core machine: 2 training workers plus a Tune trial's driver.
    """
    import ray

    ray.init(num_cpus=3, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def toy_splits(tmp_path_factory):
    """1200 top + 1200 QCD toy jets split 60/20/20 into train / eval_train / eval_test."""
    from clrdist.data.split import split_store
    from clrdist.data.toy import write_toy_store

    d = tmp_path_factory.mktemp("stores")
    write_toy_store(d / "toy.zarr", n_per_class=1200, seed=3)
    split_store(d / "toy.zarr", {"train": 0.6, "eval_train": 0.2, "eval_test": 0.2}, out_dir=d, seed=3)
    return d


def tiny_overrides(stores: Path, tmp: Path) -> list[str]:
    """A seconds-long training run on the toy splits, writing under ``tmp``."""
    return [
        f"data.train_store={stores / 'train.zarr'}",
        f"data.eval_train_store={stores / 'eval_train.zarr'}",
        f"data.eval_test_store={stores / 'eval_test.zarr'}",
        "data.batch_size=64", "data.shuffle_buffer=512",
        "model.model_dim=32", "model.ff_dim=64", "model.head_dims=[32]", "model.output_dim=16",
        "optim.epochs=2", "optim.warmup_steps=2", "tracking.log_every=2", "eval.every_epochs=1",
        f"checkpoint.storage_path={tmp / 'ray'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
    ]


def tiny_config(stores: Path, tmp: Path, *more: str):
    return load_config(CONFIGS / "demo.yaml", [*tiny_overrides(stores, tmp), *more])
