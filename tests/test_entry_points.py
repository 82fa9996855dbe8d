"""The scripts users hand to `ray job submit` and `sbatch` start and fail cleanly."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([*args], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script, needle", [
    ("jobs/train.py", "--set KEY=VALUE"),
    ("jobs/evaluate.py", "run_id"),
    ("jobs/generate.py", "--jets"),
    ("tuning/sweep.py", "sweep YAML"),
])
def test_job_scripts_show_help(script, needle):
    r = run(sys.executable, script, "--help")
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout


def test_sweep_script_rejects_a_bad_sweep_before_starting_ray(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("space:\n  loss.temprature: {grid: [0.1]}\n")
    r = run(sys.executable, "tuning/sweep.py", str(bad))
    assert r.returncode == 2
    assert "loss.temprature: unknown key" in r.stderr and "Traceback" not in r.stderr


def test_slurm_script_is_valid_bash():
    assert run("bash", "-n", "slurm/ray_cluster.sh").returncode == 0


def test_sweep_stores_flag_points_every_trial_at_a_folders_four_stores(tmp_path):
    """`--stores demo_out` after `make demo`: the four stores come from that folder (here an
    empty one, so the first is refused by name, before Ray starts)."""
    r = run(sys.executable, "tuning/sweep.py", "tuning/jetclr_temperature.yaml",
            "--stores", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"data.train_store: {tmp_path / 'nowhere' / 'train.zarr'}" in r.stderr


def test_sweep_stores_flag_fills_the_four_store_keys(toy_splits, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tuning"))
    import sweep

    from clrdist.tune import trial_config

    seen = {}

    def stop_after_loading(path, overrides):  # the spec as main() built it; no sweep is run
        seen["spec"] = load_sweep(path, overrides)
        raise SystemExit(0)

    load_sweep = sweep.load_sweep
    monkeypatch.setattr(sweep, "load_sweep", stop_after_loading)
    with pytest.raises(SystemExit):
        sweep.main(["tuning/jetclr_temperature.yaml", "--stores", str(toy_splits),
                    "--set", f"data.val_store={toy_splits / 'toy.zarr'}"])
    data = trial_config(seen["spec"], {}).data
    assert data.train_store == str(toy_splits / "train.zarr")
    assert data.eval_train_store == str(toy_splits / "eval_train.zarr")
    assert data.val_store == str(toy_splits / "toy.zarr")  # --set comes after --stores
