"""Helpers for tests that train: a seconds-long run config on the toy splits."""

from pathlib import Path

from clrdist.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def tiny_overrides(stores: Path, tmp: Path) -> list[str]:
    """A seconds-long training run on the toy splits, writing under ``tmp``."""
    return [
        f"data.train_store={stores / 'train.zarr'}",
        f"data.eval_train_store={stores / 'eval_train.zarr'}",
        f"data.eval_test_store={stores / 'eval_test.zarr'}",
        f"data.val_store={stores / 'val.zarr'}",
        "data.batch_size=64", "data.shuffle_buffer=512", "augment.slots=null",  # 50-slot toys
        "model.model_dim=32", "model.ff_dim=64", "model.head_dims=[32]", "model.output_dim=16",
        "optim.epochs=2", "optim.warmup_steps=2", "tracking.log_every=2", "eval.every_epochs=1",
        # after training only the LCT (configs/demo.yaml adds the baselines, CWoLa and NPLM, half a
        # minute per run here): a test that checks another evaluation switches it on
        "eval.baselines=false", "eval.cwola=false", "eval.nplm=false",
        f"checkpoint.storage_path={tmp / 'ray'}",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
    ]


def tiny_config(stores: Path, tmp: Path, *more: str):
    return load_config(CONFIGS / "demo.yaml", [*tiny_overrides(stores, tmp), *more])
