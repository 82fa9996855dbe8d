"""The demo's summary: one set of rows for the console table and summary.json (the README's
table), each value with its error, the untrained one with its seed spread."""

from clrdist.demo import cwola_line, summary_rows, summary_table, verdict

M = {
    "lct_auc": 0.9616, "lct_auc_std": 0.0031, "lct_inv_eps_b_at_0.5": 47.2,
    "lct_inv_eps_b_at_0.5_std": 10.4, "lct_init_auc": 0.9472, "lct_init_auc_seed_std": 0.004,
    "lct_init_auc_min": 0.9417, "lct_init_auc_max": 0.9524, "lct_init_n_seeds": 5.0,
    "lct_init_inv_eps_b_at_0.5": 25.1, "lct_init_auc_std": 0.0033,
    "cwola_linear_auc_f_0.1": 0.851, "cwola_linear_auc_std_f_0.1": 0.012,
    "cwola_init_linear_auc_f_0.1": 0.866, "nplm_z_emp_median": 1.75,
    "nplm_z_emp_median_std": 0.2, "baseline_jet_obs_auc": 0.9737,
    "baseline_jet_obs_inv_eps_b_at_0.5": 116.7,
}


def test_rows_carry_each_value_with_its_error_and_the_untrained_seed_spread():
    rows = {r["name"]: r for r in summary_rows(M)}
    assert list(rows) == ["contrastive, trained", "same encoder, untrained (5 init seeds)",
                          "jet mass + N-subjettiness (BDT)"]
    trained = rows["contrastive, trained"]
    assert trained["LCT AUC"] == "0.9616 +- 0.0031"
    assert trained["CWoLa AUC (f=0.1)"] == "0.851 +- 0.012"  # the repeats' std, named _std_f_
    assert trained["NPLM median Z (empirical)"] == "1.75 +- 0.20"
    init = rows["same encoder, untrained (5 init seeds)"]
    assert init["LCT AUC"] == "0.9472 +- 0.0040 [0.9417, 0.9524]"
    assert init["CWoLa AUC (f=0.1)"] == "0.866" and init["NPLM median Z (empirical)"] == "-"
    assert rows["jet mass + N-subjettiness (BDT)"]["CWoLa AUC (f=0.1)"] == "-"
    table = summary_table(M, "demo")
    assert table.row_count == 3 and len(table.columns) == 5


def test_the_verdict_is_plain_text_for_the_results_file():
    line = verdict(M, markup=False)
    assert line.startswith("the trained representation beats every untrained initialisation:")
    assert "[green]" in verdict(M) and "[" not in line.split(":")[0]
    assert "3.6 seed standard deviations" in line


def test_the_cwola_line_shows_each_fraction_with_its_repeat_error():
    m = {"cwola_linear_auc_f_0.01": 0.505, "cwola_linear_auc_std_f_0.01": 0.02,
         "cwola_linear_auc_f_0.1": 0.808, "cwola_linear_auc_std_f_0.1": 0.036,
         "cwola_linear_auc_f_1": 0.959}
    assert cwola_line(m) == ("CWoLa (idealised, linear): AUC 0.505 +- 0.020 at f = 0.01, "
                             "0.808 +- 0.036 at f = 0.1, 0.959 at f = 1")
    assert cwola_line({"lct_auc": 0.9}) is None


def test_several_training_seeds_each_must_beat_every_untrained_seed():
    """--train-seeds: a row over the training seeds (mean +- std [min, max]) and a verdict that
    holds only when the worst seed, less its bootstrap error, clears the best untrained one."""
    from clrdist.demo import add_training_seeds, learned

    good = {**M}
    add_training_seeds(good, [M, {"lct_auc": 0.9580, "lct_auc_std": 0.0030,
                                  "lct_inv_eps_b_at_0.5": 40.0}])
    rows = {r["name"]: r for r in summary_rows(good)}
    assert rows["contrastive, trained (2 training seeds)"]["LCT AUC"] == \
        "0.9598 +- 0.0025 [0.9580, 0.9616]"
    assert rows["contrastive, trained (2 training seeds)"]["CWoLa AUC (f=0.1)"] == "-"
    assert learned(good)
    line = verdict(good, markup=False)
    assert line.startswith("the trained representation beats every untrained initialisation "
                           "at each of 2 training seeds:")
    assert "2 training seeds: 0.9598 +- 0.0025, min 0.9580" in line
    bad = {**M}  # the run above passes alone; its second seed sits inside the untrained spread
    add_training_seeds(bad, [M, {"lct_auc": 0.9540, "lct_auc_std": 0.0030,
                                 "lct_inv_eps_b_at_0.5": 30.0}])
    assert learned(M) and not learned(bad)
    assert "does NOT beat" in verdict(bad, markup=False)
