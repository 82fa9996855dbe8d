"""The prepared device check runs end to end on the CPU at tiny size (what CI can prove before a
GPU is lent): every stage ends ok, results.json is whole after each stage, the step is
sync-free by the dispatch counter."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_cpu_check_runs_every_stage(tmp_path):
    out = tmp_path / "check"
    # as `python -m bench.gpu_check ...`, then: did anything import Ray or MLflow?
    script = ("import runpy, sys; sys.argv = ['gpu_check', '--device', 'cpu', '--quick', "
              f"'--out', {str(out)!r}]; runpy.run_module('bench.gpu_check', run_name='__main__'); "
              "print('IMPORTED', sorted(m for m in ('ray', 'mlflow', 'deepspeed') "
              "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "IMPORTED []" in proc.stdout  # the GPU machine has neither
    res = json.loads((out / "results.json").read_text())
    assert list(res["stages"]) == list(gpu_check.STAGES)
    bad = {k: v.get("error") for k, v in res["stages"].items() if v["status"] != "ok"}
    assert not bad, bad
    syncs = res["stages"]["syncs"]
    if syncs["darkclr"]["step_source"] == "clrdist.train.step":  # the product's step
        assert res["syncs_per_step"] == 0, syncs  # with the GPU settings: sync-free
    else:  # the stand-in step before clrdist.train.step existed: the counter sees its reads
        assert res["syncs_per_step"] > 0
    assert {"command", "machine", "date"} <= set(res)
    assert not [r for r in res["stages"]["throughput"]["rows"] if "error" in r or "skipped" in r]
    thr = res["stages"]["throughput"]["rows"]
    assert thr and all(r["jets_per_s"] > 0 and r["gflop_per_jet"] > 0 for r in thr)
    assert res["stages"]["nplm"]["converged"]
    q = res["stages"]["quality"]
    assert q["rows"] and 0.5 < q["raw_auc"] <= 1 and len(q["untrained_auc_seeds"]) >= 3
    assert 0 < q["supervised_auc"] <= 1 and q["supervised_device"] == "cpu"  # eval's device


def test_a_failing_stage_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def boom(*_):
        raise RuntimeError("stage exploded")

    monkeypatch.setitem(gpu_check.STAGE_FUNCS, "parity", boom)
    monkeypatch.setitem(gpu_check.STAGE_FUNCS, "env", lambda *_: {"x": 1})
    res = gpu_check.main(["--device", "cpu", "--quick", "--stages", "parity,env",
                          "--out", str(tmp_path)])
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["stages"]["parity"]["status"] == "error"
    assert "stage exploded" in written["stages"]["parity"]["error"]
    assert written["stages"]["env"] == {"status": "ok", "x": 1,
                                        "seconds": written["stages"]["env"]["seconds"]}
    assert res["stages"].keys() == written["stages"].keys()


def test_unknown_stage_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--stages", "env,warp", "--out", str(tmp_path)])
    assert "warp" in capsys.readouterr().err


def test_wheels_are_unpacked_only_for_missing_packages(tmp_path):
    import zipfile

    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / tag).mkdir()
    with zipfile.ZipFile(tmp_path / tag / "numpy-9.9-py3-none-any.whl", "w") as z:
        z.writestr("numpy/__init__.py", "raise ImportError('not this one')")
    with zipfile.ZipFile(tmp_path / tag / "clrdist_fake_pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("clrdist_fake_pkg/__init__.py", "VALUE = 7")
    before = list(sys.path)
    try:
        used = gpu_check.use_wheels(tmp_path)
        assert used == ["clrdist_fake_pkg-1.0-py3-none-any.whl"]  # numpy is importable already
        import clrdist_fake_pkg

        assert clrdist_fake_pkg.VALUE == 7
    finally:
        sys.path[:] = before
        sys.modules.pop("clrdist_fake_pkg", None)
