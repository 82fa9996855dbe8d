"""Ray Tune sweeps: validation before anything starts, and a real two-trial sweep."""

import pytest
from _train_toys import CONFIGS, tiny_overrides

from clrdist import tracking
from clrdist.config import ConfigError
from clrdist.tune import load_sweep, run_sweep


def write_sweep(tmp_path, space: str, extra: str = "") -> str:
    p = tmp_path / "sweep.yaml"
    p.write_text(f"name: t\nbase_config: {CONFIGS / 'demo.yaml'}\nspace:\n{space}\n{extra}")
    return str(p)


def test_shipped_sweep_validates():
    spec = load_sweep(CONFIGS.parent / "tuning" / "jetclr_temperature.yaml")
    assert spec.space["loss.temperature"].grid == [0.05, 0.1, 0.2, 0.5]


@pytest.mark.parametrize("space, needle", [
    ("  loss.temprature: {grid: [0.1]}", "loss.temprature: unknown key"),
    ("  loss.temperature: {grid: [-1]}", "loss.temperature"),
    ("  loss.temperature: {grid: [0.1], choice: [0.2]}", "exactly one of"),
    ("  model.heads: {choice: [3]}", "heads (3) must divide"),
])
def test_bad_sweeps_are_rejected_naming_the_key(tmp_path, space, needle):
    with pytest.raises(ConfigError) as err:
        load_sweep(write_sweep(tmp_path, space))
    assert needle in str(err.value)


@pytest.mark.integration
def test_two_trial_temperature_sweep(ray_cluster, toy_splits, tmp_path):
    overrides = "\n".join(f"  - {o}" for o in tiny_overrides(toy_splits, tmp_path))
    path = write_sweep(tmp_path, "  loss.temperature: {grid: [0.1, 0.5]}",
                       f"overrides:\n{overrides}\n  - optim.epochs=1\n"
                       f"scheduler: fifo\nstorage_path: {tmp_path / 'tune'}\n")
    rows = run_sweep(load_sweep(path))
    assert sorted(r["params"]["loss.temperature"] for r in rows) == [0.1, 0.5]
    for r in rows:
        assert r["error"] is None
        assert r["epoch"] == 1 and 0.0 <= r["val_lct_auc"] <= 1.0
    # every trial is its own MLflow run, tagged with the sweep and its temperature
    uri = tracking.resolve_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    c = tracking.client(uri)
    exp = c.get_experiment_by_name("clrdist-demo")
    runs = c.search_runs([exp.experiment_id], "tags.`clrdist.sweep` = 't'")
    assert sorted(float(r.data.params["loss.temperature"]) for r in runs) == [0.1, 0.5]
    assert all(r.info.status == "FINISHED" for r in runs)
