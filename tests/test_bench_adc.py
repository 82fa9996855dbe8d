"""bench.adc_nplm's bookkeeping: where the median Z crosses 3."""

import numpy as np
import pytest
import torch

from bench.adc_nplm import crossing


def test_crossing_interpolates_in_log_signal_count():
    grid = np.array([10, 100, 1000])
    assert crossing(grid, np.array([1.0, 5.0, 9.0])) == pytest.approx(10 ** 1.5)
    assert crossing(grid, np.array([3.5, 5.0, 9.0])) == 10.0  # already above at the first point
    assert crossing(grid, np.array([0.5, 1.0, 2.9])) is None  # beyond the grid
    # the first crossing counts, not a later dip
    assert crossing(grid, np.array([1.0, 3.0, 2.0])) == pytest.approx(100.0)


def test_adc_nplm_rejects_a_signal_split_before_reading_any_store(tmp_path, capsys):
    from bench.adc_nplm import main

    with pytest.raises(SystemExit):
        main(["--background", str(tmp_path / "none.zarr"), "--signals", str(tmp_path / "no.zarr"),
              "--sup-fraction", "1.0"])
    assert "--sup-fraction must lie in (0, 1), got 1.0" in capsys.readouterr().err


def test_adc_nplm_runs_end_to_end_and_logs_a_plot_per_signal_to_mlflow(tmp_path):
    """The bench on small converted ADC2021-layout files (random events; no physics expected):
    the results file has every representation's rows with the chosen kernel penalty, and the
    MLflow run holds the rows as metrics, the results file and one median-Z plot per signal."""
    from _convert import adc_events, write_adc

    from bench.adc_nplm import main
    from clrdist import tracking
    from clrdist.data.convert import convert

    bkg = convert("adc2021", [write_adc(tmp_path / "background_for_training.h5",
                                        adc_events(600, seed=1))],
                  tmp_path / "bkg.zarr", progress=False)
    sig = convert("adc2021", [write_adc(tmp_path / "Ato4l_lepFilter_13TeV.h5", adc_events(60, 2)),
                              write_adc(tmp_path / "leptoquark_LOWMASS.h5", adc_events(60, 3))],
                  tmp_path / "sig.zarr", progress=False)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    out = main(["--background", str(bkg), "--signals", str(sig), "--epochs", "1",
                "--n-ref", "200", "--n-data", "20", "--M", "20", "--n-sig", "5,20",
                "--toys-null", "8", "--toys-sig", "3", "--bootstrap", "10", "--init-seeds", "1",
                "--out-dir", str(tmp_path / "out"), "--json", str(tmp_path / "r.json"),
                "--tracking-uri", uri])
    names = {r["name"] for r in out["rows"]}
    for rep in ("embedding", "embedding_1", "raw", "untrained_0", "supervised"):  # 2 train seeds
        assert {f"{rep} / Ato4l", f"{rep} / leptoquark"} <= names
    assert {"ratio raw / embedding / Ato4l", "ratio raw / embedding_1 / Ato4l",
            "ratio raw / supervised / leptoquark"} <= names
    # each signal's supervised reference trained on its own part of that signal; every row
    # injects from the rest: the two parts split the 60 events of each signal
    assert set(out["supervised_fits"]) == {"Ato4l", "leptoquark"}
    pool = out["signal_pool_events"]
    assert 10 < pool["Ato4l"] < 50 and 10 < pool["leptoquark"] < 50
    # a supervised encoder per signal: its own kernel calibration (dof) for each
    # the published "> 10" sits on the raw / embedding ratios, not on their references
    published = {r["name"] for r in out["rows"] if r.get("published") == "> 10"}
    assert published == {f"ratio raw / {e} / {s}" for e in ("embedding", "embedding_1")
                         for s in ("Ato4l", "leptoquark")}
    sup = {r["signal"]: r for r in out["rows"] if r.get("representation") == "supervised"}
    assert sup["Ato4l"]["dof"] != sup["leptoquark"]["dof"]
    z = {r["name"]: r["z_median_at_20"] for r in out["rows"] if "z_median_at_20" in r}
    assert z["embedding / Ato4l"] != z["embedding_1 / Ato4l"]  # two trainings, not one twice
    assert all(r["lam"] in (1e-6, 1e-5, 1e-4, 1e-3) for r in out["rows"] if "lam" in r)
    c = tracking.client(uri)
    (exp,) = [e for e in c.search_experiments() if e.name == "adc_nplm"]
    (run,) = c.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["n_ref"] == "200"
    assert "lam.raw.Ato4l" in run.data.metrics and "ks_pvalue_independent.embedding.Ato4l" in \
        run.data.metrics and "lam.supervised.leptoquark" in run.data.metrics
    figures = {a.path for a in c.list_artifacts(run.info.run_id, "figures")}
    assert figures == {"figures/nplm_z_Ato4l.png", "figures/nplm_z_leptoquark.png"}
    assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"r.json", "figures"}


def test_adc_anomaly_runs_end_to_end_with_its_references_and_the_supervised_ceiling(tmp_path):
    """bench.adc_anomaly on small converted ADC2021-layout files (random events; no physics
    expected): rows for each training seed, the raw features, the untrained encoder and the
    supervised ceiling of each signal, and the gain rows."""
    from _convert import adc_events, write_adc

    from bench.adc_anomaly import main
    from clrdist.data.convert import convert

    bkg = convert("adc2021", [write_adc(tmp_path / "background_for_training.h5",
                                        adc_events(400, seed=4))],
                  tmp_path / "bkg.zarr", progress=False)
    sig = convert("adc2021", [write_adc(tmp_path / "Ato4l_lepFilter_13TeV.h5", adc_events(80, 5)),
                              write_adc(tmp_path / "leptoquark_LOWMASS.h5", adc_events(80, 6))],
                  tmp_path / "sig.zarr", progress=False)  # per-signal rows need two signals
    threads = torch.get_num_threads()
    try:
        out = main(["--background", str(bkg), "--signals", str(sig), "--epochs", "1",
                    "--ae-epochs", "1", "--init-seeds", "1", "--json", str(tmp_path / "a.json")])
    finally:
        torch.set_num_threads(threads)  # the bench sets this process's torch threads
    rows = {r["name"]: r for r in out["rows"]}
    for rep in ("trained", "trained_1", "raw", "untrained_0",
                "supervised (same encoder, labels, 2-fold)"):
        assert 0 <= rows[f"{rep} / Ato4l"]["auc"] <= 1, rep
    assert {"gain trained / raw / Ato4l", "gain trained_1 / untrained / Ato4l"} <= set(rows)
    # the published O(5) sits on the row it is about, the trained AE's gain over raw on A -> 4 l
    assert [n for n, r in rows.items() if "published" in r] == [
        "gain trained / raw / Ato4l", "gain trained_1 / raw / Ato4l"]
