"""tuning/ablation_table.py: a finished sweep's trials (real MLflow on sqlite) -> table + plot."""

import importlib.util
import json
from pathlib import Path

import pytest

from clrdist import tracking

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("ablation_table", ROOT / "tuning" / "ablation_table.py")
ablation_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation_table)

SETS = {
    "none": [[], []],
    "rotations": [[{"name": "rotate"}], [{"name": "rotate"}]],
    "soft+collinear": [[{"name": "smear_soft"}, {"name": "collinear_split", "params": {"fill": 1.0}}]] * 2,
}


def test_set_names_follow_the_published_ones():
    assert ablation_table.set_name(SETS["none"]) == "none"
    assert ablation_table.set_name(SETS["soft+collinear"]) == "soft+collinear"
    assert ablation_table.set_name([[{"name": "collinear_split"}, {"name": "collinear_split"},
                                     {"name": "rotate"}, {"name": "smear_soft"},
                                     {"name": "translate"}]] * 2) == "all"
    assert ablation_table.set_name([[{"name": "drop"}]] * 2) == "drop"


def test_a_finished_sweep_becomes_a_table_and_a_plot(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = tracking.start_run(uri, "abl", {"sweep": "abl"})
    aucs = {"none": (0.950, 0.952), "rotations": (0.953, 0.955), "soft+collinear": (0.960, 0.964)}
    for name, (a0, a1) in aucs.items():
        for seed, auc in enumerate((a0, a1)):
            run = tracking.start_run(uri, "abl", {"seed": seed},
                                     tags={"mlflow.parentRunId": parent},
                                     config={"augment": {"views": SETS[name]}})
            tracking.log_metrics(uri, run, {
                "lct_auc": auc, "lct_auc_std": 0.003, "lct_inv_eps_b_at_0.5": 100 * auc - 60,
                "lct_init_auc": 0.948, "lct_init_inv_eps_b_at_0.5": 24.0, "lct_raw_auc": 0.73,
                "lct_raw_inv_eps_b_at_0.5": 4.0, "val_lct_auc": auc - 0.01})
            tracking.end_run(uri, run)
    failed = tracking.start_run(uri, "abl", {}, tags={"mlflow.parentRunId": parent},
                                config={"augment": {"views": SETS["none"]}})
    tracking.end_run(uri, failed, "FAILED", reason="test")  # not counted
    sweep = tmp_path / "abl.yaml"
    sweep.write_text(json.dumps({"name": "abl", "space": {"seed": {"grid": [0, 1]}},
                                 "storage_path": str(tmp_path / "tune"), "metric": "loss",
                                 "mode": "min"}))
    state = tmp_path / "tune" / "abl" / "clrdist_sweep.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri}))

    out = tmp_path / "table"
    results = tmp_path / "results" / "ablation.json"
    assert ablation_table.main([str(sweep), "--out", str(out), "--results", str(results),
                                "--no-supervised"]) == 0
    rows = json.loads((out / "ablation.json").read_text())
    assert list(rows)[:3] == ["none", "rotations", "soft+collinear"]  # the published order
    assert rows["soft+collinear"]["n"] == 2
    assert rows["soft+collinear"]["auc"] == pytest.approx(0.962)
    assert rows["soft+collinear"]["auc_err"] == pytest.approx(0.0028284, rel=1e-4)  # std of seeds
    assert rows["untrained encoder"]["n"] == 6
    assert rows["untrained encoder"]["auc"] == pytest.approx(0.948)
    # the selection column is the validation LCT; the results file carries the command
    assert rows["soft+collinear"]["val_auc"] == pytest.approx(0.952)
    res = json.loads(results.read_text())
    assert {"command", "machine", "date"} <= set(res) and "--no-supervised" in res["command"]
    flat = {r["name"]: r for r in res["rows"]}
    assert flat["soft+collinear"]["published_inv"] == 89 and flat["none"]["n"] == 2
    md = (out / "ablation.md").read_text()
    assert "| soft+collinear | 2 | 0.9620 +- 0.0028 |" in md and "| 0.97 | 89 |" in md
    assert (out / "ablation.png").stat().st_size > 10_000
    arts = {a.path for a in tracking.client(uri).list_artifacts(parent, "ablation")}
    assert arts == {"ablation/ablation.json", "ablation/ablation.png"}


def test_no_finished_sweep_is_a_one_line_error(tmp_path, capsys):
    sweep = tmp_path / "abl.yaml"
    sweep.write_text(json.dumps({"name": "abl", "space": {"seed": {"grid": [0]}},
                                 "storage_path": str(tmp_path / "tune"), "metric": "loss",
                                 "mode": "min"}))
    assert ablation_table.main([str(sweep)]) == 2
    assert "has the sweep 'abl' run here?" in capsys.readouterr().err


def test_tuning_never_reads_the_demos_jets():
    """No selection on the demo's data: sweeps use stores of their own, generated from a seed
    the demo does not use, and rank trials on the validation LCT."""
    import inspect
    import re

    from clrdist.demo import run_demo
    from clrdist.tune import load_sweep

    demo_seed = inspect.signature(run_demo).parameters["seed"].default
    for path in sorted((ROOT / "tuning").glob("*.yaml")):
        text = path.read_text()
        assert "demo_out" not in text, path.name
        spec = load_sweep(path)
        assert spec.metric.startswith("val_"), (path.name, spec.metric)
        seeds = [int(s) for s in re.findall(r"data generate .*--seed (\d+)", text)]
        assert demo_seed not in seeds, (path.name, seeds)
    header = (ROOT / "tuning" / "jetclr_ablation_cpu.yaml").read_text()
    assert re.search(r"data generate .*--seed 11 ", header)
