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
