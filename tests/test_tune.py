"""Ray Tune sweeps: validation before anything starts, and a real two-trial sweep."""

import pytest
from _train_toys import CONFIGS, tiny_overrides

from clrdist import tracking
from clrdist.config import ConfigError
from clrdist.tune import load_sweep, run_sweep, trial_config


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


def test_search_kinds_and_trial_counts(tmp_path):
    spec = load_sweep(write_sweep(tmp_path, "  loss.temperature: {grid: [0.1, 0.5]}\n"
                                  "  augment.strength: {uniform: [0.5, 1.5]}",
                                  "num_samples: 3\n"))
    assert spec.search == "grid" and spec.total_trials() == 6  # 2 grid values x 3 draws
    spec = load_sweep(write_sweep(tmp_path, "  loss.temperature: {grid: [0.1, 0.5]}",
                                  "num_samples: 3\nsearch: optuna\n"))
    assert spec.total_trials() == 3
    from ray.tune.search.sample import Categorical

    assert isinstance(spec.param_space()["loss.temperature"], Categorical)  # TPE takes choices
    with pytest.raises(ConfigError, match="search"):
        load_sweep(write_sweep(tmp_path, "  loss.temperature: {grid: [0.1]}", "search: bayes\n"))


def sweep_file(tmp_path, toy_splits, space: str, extra: str) -> str:
    overrides = "\n".join(f"  - {o}" for o in tiny_overrides(toy_splits, tmp_path))
    return write_sweep(tmp_path, space, f"overrides:\n{overrides}\n  - optim.epochs=1\n"
                       f"  - eval.lct=false\nstorage_path: {tmp_path / 'tune'}\n{extra}")


@pytest.mark.integration
def test_a_sweep_is_one_parent_run_with_nested_trials(ray_cluster, toy_splits, tmp_path):
    """One real sweep (Optuna TPE, ASHA, one trial at a time; Ray Train in every trial): one
    parent MLflow run with a nested run per trial, the best trial and its config on the parent.
    Grid search runs end to end in tests/test_slurm.py (the cluster tier); one sweep here, because
    each trial is a full Ray Train run (~1 min on 2 cores)."""
    path = sweep_file(tmp_path, toy_splits, "  loss.temperature: {loguniform: [0.05, 0.5]}",
                      "search: optuna\nnum_samples: 2\nmax_concurrent_trials: 1\n"
                      "scheduler: asha\ngrace_period: 1\n")
    result = run_sweep(load_sweep(path))
    rows = result.rows
    assert not result.resumed and not result.interrupted
    assert len(rows) == 2
    for r in rows:
        assert r["error"] is None and r["epoch"] == 1 and 0.0 <= r["val_lct_auc"] <= 1.0
    temps = [r["params"]["loss.temperature"] for r in rows]
    assert len(set(temps)) == 2 and all(0.05 <= t <= 0.5 for t in temps)

    # the parent: the sweep's settings, the best trial and its config
    uri = result.tracking_uri
    parent = tracking.get_run(uri, result.parent_run_id)
    assert parent["status"] == "FINISHED" and parent["tags"]["clrdist.sweep_role"] == "parent"
    assert parent["params"]["sweep.search"] == "optuna"
    assert parent["params"]["space.loss.temperature"] == '{"loguniform": [0.05, 0.5]}'
    best = max(rows, key=lambda r: r["val_lct_auc"])
    assert parent["metrics"]["best_val_lct_auc"] == pytest.approx(best["val_lct_auc"])
    assert parent["tags"]["clrdist.best_run_id"] == best["run_id"]
    assert float(parent["tags"]["best.loss.temperature"]) == pytest.approx(
        best["params"]["loss.temperature"])
    best_cfg = tracking._load_json_artifact(uri, result.parent_run_id, "best_config.json")
    assert best_cfg["config"]["loss"]["temperature"] == pytest.approx(
        best["params"]["loss.temperature"])

    # one nested run per trial: its params, the per-epoch validation metric, the sweep's tags;
    # ASHA may stop a trial at its epoch-1 rung (KILLED), the first one always goes on
    children = tracking.child_runs(uri, result.parent_run_id)
    assert sorted(c["run_id"] for c in children) == sorted(r["run_id"] for r in rows)
    assert children[0]["status"] == "FINISHED"
    for c in children:
        assert c["status"] in ("FINISHED", "KILLED") and c["tags"]["clrdist.sweep"] == "t"
        assert [s for s, _ in tracking.metric_history(uri, c["run_id"], "val_lct_auc")] == [1]
    assert sorted(float(c["params"]["loss.temperature"]) for c in children) == \
        pytest.approx(sorted(temps))
    # the concurrency limit: one trial at a time, so no two nested runs overlap in time
    c = tracking.client(uri)
    spans = sorted((c.get_run(ch["run_id"]).info.start_time, c.get_run(ch["run_id"]).info.end_time)
                   for ch in children)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def _spec(tmp_path, toy_splits, *extra_overrides, storage="runs/tune"):
    p = tmp_path / "sweep.yaml"
    overrides = [o for o in tiny_overrides(toy_splits, tmp_path)] + list(extra_overrides)
    p.write_text(f"name: t\nbase_config: {CONFIGS / 'demo.yaml'}\nstorage_path: {storage}\n"
                 f"overrides: {overrides!r}\nspace:\n  loss.temperature: {{grid: [0.1]}}\n")
    return load_sweep(p)


def test_a_sweep_whose_store_does_not_resolve_is_refused_before_ray(ray_starts, toy_splits,
                                                                    tmp_path, monkeypatch):
    """demo_out/train.zarr does not exist where the trials run: every trial failed with a
    traceback; now the sweep is refused before Ray starts, naming the key and the store."""
    monkeypatch.chdir(tmp_path)
    spec = _spec(tmp_path, toy_splits, "data.train_store=demo_out/train.zarr")
    with pytest.raises(ConfigError, match=rf"data.train_store: {tmp_path}/demo_out/train.zarr: no such store \(where the trials run\); give absolute paths"):
        run_sweep(spec)
    assert ray_starts == []


def test_a_sweep_in_a_job_copy_needs_absolute_paths(toy_splits, tmp_path, monkeypatch):
    """Under ray job submit --working-dir the sweep runs in a temporary copy: relative stores
    (git-ignored, not uploaded), Tune storage and a relative sqlite store are refused."""
    from clrdist.tune import check_where_trials_run

    job = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_0a1b"
    (job / "stores").mkdir(parents=True)
    import shutil

    shutil.copytree(toy_splits / "train.zarr", job / "stores" / "train.zarr")
    monkeypatch.chdir(job)
    spec = _spec(tmp_path, toy_splits, "data.train_store=stores/train.zarr")
    with pytest.raises(ConfigError, match=r"data.train_store: stores/train.zarr is relative and trials would read it in Ray's temporary copy"):
        check_where_trials_run(spec, trial_config(spec, {}))
    spec = _spec(tmp_path, toy_splits)
    with pytest.raises(ConfigError, match=r"storage_path: runs/tune is relative: Tune's state would live in Ray's temporary copy"):
        check_where_trials_run(spec, trial_config(spec, {}))
    spec = _spec(tmp_path, toy_splits, "tracking.uri=sqlite:///mlflow.db", storage=str(tmp_path / "tune"))
    with pytest.raises(ConfigError, match=r"tracking.uri: sqlite:///mlflow.db is relative"):
        check_where_trials_run(spec, trial_config(spec, {}))
    spec = _spec(tmp_path, toy_splits, storage=str(tmp_path / "tune"))
    check_where_trials_run(spec, trial_config(spec, {}))  # absolute everything: fine


@pytest.mark.parametrize("cpus, ok", [(2.0, False), (3.0, True)])
def test_trials_that_cannot_fit_the_cluster_are_refused(toy_splits, tmp_path, monkeypatch, cpus, ok):
    """2 workers x 1 CPU never fit a 2-CPU `ray start --head` next to the trial: Ray Train
    retried its worker group every minute with nothing on the console."""
    import ray

    from clrdist.tune import check_trials_fit

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": cpus})
    cfg = trial_config(_spec(tmp_path, toy_splits, "scaling.num_workers=2"), {})
    if ok:
        check_trials_fit(cfg)
        return
    with pytest.raises(ConfigError, match=r"scaling: a trial needs 2 workers x 1 CPUs \+ 0.01 for the trial = 2.01 CPUs, the Ray cluster has 2; start it with more \(ray start --head --num-cpus 3\)"):
        check_trials_fit(cfg)
