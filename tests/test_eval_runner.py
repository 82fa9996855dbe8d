"""run_evaluations / evaluate_during_training through a stand-in encoder."""

from pathlib import Path

import numpy as np
import pytest
from _eval_toys import TinyDeepSet, mixed

from clrdist.eval.baselines import jet_observables, run_baselines
from clrdist.eval.metrics import EvalResult
from clrdist.eval.runner import Context, evaluate_during_training, run_evaluations

calls = []


def encode(batch):
    calls.append(len(batch["label"]))
    obs = jet_observables(batch)
    return np.c_[np.log(obs[:, 0] + 1), obs[:, 1:]]


def test_run_lct_and_baselines_in_batches():
    calls.clear()
    tr, te = mixed(150, seed=0), mixed(150, seed=5)
    res = run_evaluations(encode, train_data=tr, test_data=te, which={"lct", "baselines"},
                          context=Context(batch_size=128, n_boot=5),
                          options={"baselines": {"which": ["raw"]}})
    assert calls == [128, 128, 44, 128, 128, 44]
    assert isinstance(res["lct"], EvalResult)
    assert res["lct"].metrics["lct_auc"] > 0.9 > res["baselines"].metrics["baseline_raw_auc"]
    with pytest.raises(KeyError, match="known"):
        run_evaluations(encode, train_data=tr, test_data=te, which={"lcd"})


def test_evaluate_during_training_metrics():
    # its wall-clock time (budget 10 s) is measured by bench/quick_paths.py
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40000, 64)).astype(np.float32)
    y = rng.integers(0, 2, 40000)
    x[y == 1, :4] += 0.5
    m = evaluate_during_training(x[:20000], y[:20000], x[20000:], y[20000:])
    assert set(m) == {"lct_auc", "lct_max_sic", "lct_fpr_at_tpr_0.5", "lct_inv_eps_b_at_0.5"}
    assert m["lct_auc"] == pytest.approx(0.760, abs=0.02)  # d' = 1: Phi(1/sqrt2)


def test_run_every_evaluation_small():
    tr, te = mixed(400, seed=1), mixed(400, seed=2)
    opts = {
        "baselines": {"which": ["raw"]},
        "cwola": {"fractions": (0.0, 0.5), "classifiers": ("linear",), "n_repeats": 1},
        "nplm": {"n_ref": 300, "n_data": 100, "n_sig": 20, "n_toys_null": 10, "n_toys_sig": 3,
                 "M": 20},
        "anomaly": {"ae_scale": 0.25, "ae_epochs": 3, "ae_batch_size": 256},
    }
    res = run_evaluations(encode, train_data=tr, test_data=te,
                          which={"lct", "baselines", "cwola", "nplm", "anomaly"},
                          context=Context(n_boot=0), options=opts)
    assert set(res) == {"lct", "baselines", "cwola", "nplm", "anomaly"}
    names = [k for r in res.values() for k in r.metrics]
    assert len(names) == len(set(names))  # unique across evaluations
    assert {"nplm_dof", "nplm_raw_dof", "anomaly_znorm_auc", "cwola_linear_auc_f_0.5"} <= set(names)
    assert res["cwola"].metrics["cwola_linear_auc_f_0.5"] > 0.8
    assert {"nplm_z.png", "nplm_t.png"} <= set(res["nplm"].figures)  # trained vs raw Z


def test_cwola_runs_bump_hunt_on_dijet_stores():
    from _eval_toys import dijet_toy

    mjj, x, y = dijet_toy(20000, 400, seed=3)
    perm = np.random.default_rng(0).permutation(len(y))
    data = {"particles": np.zeros((len(y), 1, 3), np.float32), "mask": np.ones((len(y), 1), bool),
            "label": y[perm].astype(np.int8),
            "features": np.c_[mjj, x].astype(np.float32)[perm]}
    half = len(y) // 2
    tr = {k: v[:half] for k, v in data.items()}
    te = {k: v[half:] for k, v in data.items()}
    hunt = {"classifier": "linear", "k": 3, "n_bins": 12, "n_toys": 10, "figures": False}
    res = run_evaluations(lambda b: b["features"][:, 1:], train_data=tr, test_data=te,
                          which={"bumphunt"},
                          context=Context(feature_names=["m_jj", "a", "b", "c"], ecm=13000.0),
                          options={"bumphunt": hunt})
    m = res["bumphunt"].metrics  # blind scan at 0.1%, 0.3%, 1% signal (labels only mix)
    assert m["bumphunt_f_0.01_best_sr_lo"] < 3500 < m["bumphunt_f_0.01_best_sr_hi"]
    assert m["bumphunt_f_0.01_max_local_z"] > 3 and m["bumphunt_f_0.001_n_sig"] == 20
    with pytest.raises(KeyError, match="provenance.ecm"):  # sqrt(s) from the store, no constant
        run_evaluations(lambda b: b["features"][:, 1:], train_data=tr, test_data=te,
                        which={"bumphunt"}, context=Context(feature_names=["m_jj", "a", "b", "c"]))
    with pytest.raises(KeyError, match="m_jj"):
        run_evaluations(lambda b: b["features"][:, 1:], train_data=tr, test_data=te,
                        which={"bumphunt"}, context=Context(feature_names=["x"]))


def _dijet_store_tracking_pt(n_bkg, n_sig, seed):
    """The whitening tests' toy dijets laid out as a dijet store: one constituent slot per jet
    (leading jet first) holding that jet's three features, pt_J1 / pt_J2 among the event's."""
    from test_eval_bumphunt_whiten import _dijets_tracking_pt

    mjj, x, pt1, pt2, y = _dijets_tracking_pt(n_bkg, n_sig, seed)
    perm = np.random.default_rng(seed).permutation(len(y))
    data = {"particles": np.stack([x[:, :3], x[:, 3:]], 1).astype(np.float32)[perm],
            "mask": np.ones((len(y), 2), bool), "label": y[perm].astype(np.int8),
            "features": np.c_[mjj, pt1, pt2].astype(np.float32)[perm]}
    half = len(y) // 2
    return ({k: v[s] for k, v in data.items()} for s in (slice(None, half), slice(half, None)))


def test_bump_hunt_encodes_each_jet_alone_and_whitens_it_against_its_pt():
    """On a dijet store the hunt encodes each jet alone (its half of the constituent slots) and
    whitens each jet's representation against the jet's own pT: features that track the jets'
    pT, which the guard refuses as the event's representation (they would sculpt a bump), pass
    it, and a resonance 3 sd apart in one feature of the leading jet is found."""
    seen = []

    def encode(batch):  # the event's slots flattened: (n, 6) for an event, (n, 3) for one jet
        seen.append(batch["particles"].shape[1])
        return batch["particles"].reshape(len(batch["label"]), -1)

    ctx = Context(feature_names=["m_jj", "pt_J1", "pt_J2"], ecm=13000.0, kind="dijet",
                  raw_reference=False, init_encoders=())
    hunt = {"classifier": "linear", "k": 3, "n_bins": 12, "n_toys": 10, "figures": False,
            "mjj_range": (2500.0, 6000.0)}
    tr, te = _dijet_store_tracking_pt(8000, 330, seed=12)
    as_event = run_evaluations(encode, train_data=tr, test_data=te, which={"bumphunt"},
                               context=ctx, options={"bumphunt": {**hunt, "per_jet": False}})
    m = as_event["bumphunt"].metrics
    assert m["bumphunt_refused"] == 1 and m["bumphunt_mjj_corr"] > 0.3
    assert m["bumphunt_per_jet"] == 0
    seen.clear()
    res = run_evaluations(encode, train_data=tr, test_data=te, which={"bumphunt"}, context=ctx,
                          options={"bumphunt": hunt})
    m = res["bumphunt"].metrics
    assert set(seen) == {2, 1}  # the event once (the runner's representation), then each jet
    assert m["bumphunt_per_jet"] == 1 and "bumphunt_refused" not in m
    assert m["bumphunt_f_0.01_best_sr_lo"] < 3500 < m["bumphunt_f_0.01_best_sr_hi"]
    assert m["bumphunt_f_0.01_max_local_z"] > 3
    assert abs(m["bumphunt_f_0_max_local_z"]) < 3  # the background alone: no bump made


def test_bump_hunt_runs_next_to_the_supervised_encoder():
    """The blind hunt on the supervised encoder's representation (``bumphunt_sup_*``, in the Z
    figure) next to the trained one: on a representation that knows nothing the hunt finds no
    resonance at 1%, on the encoder trained with the labels (the signal's first feature) it
    does."""
    from _eval_toys import dijet_toy

    mjj, x, y = dijet_toy(12000, 240, seed=5)
    perm = np.random.default_rng(1).permutation(len(y))
    data = {"particles": x[:, None, :].astype(np.float32)[perm] / 10,  # TinyDeepSet reads x * 10
            "mask": np.ones((len(y), 1), bool), "label": y[perm].astype(np.int8),
            "features": np.c_[mjj, x].astype(np.float32)[perm]}
    half = len(y) // 2
    tr, te = ({k: v[s] for k, v in data.items()} for s in (slice(None, half), slice(half, None)))

    def noise(batch):
        return np.random.default_rng(len(batch["label"])).normal(size=(len(batch["label"]), 3))

    hunt = {"classifier": "linear", "k": 3, "n_bins": 12, "n_toys": 10, "fractions": (0.01,)}
    res = run_evaluations(noise, train_data=tr, test_data=te, which={"bumphunt"},
                          context=Context(feature_names=["m_jj", "a", "b", "c"], ecm=13000.0,
                                          model_factory=TinyDeepSet, n_particles=1,
                                          supervised_prepare=lambda p, m: (p, m),
                                          init_encode=lambda b: noise(b)[:, :2]),
                          options={"bumphunt": hunt})
    m = res["bumphunt"].metrics
    assert m["bumphunt_sup_f_0.01_max_local_z"] > 3 > m["bumphunt_f_0.01_max_local_z"], m
    assert m["bumphunt_sup_f_0.01_best_sr_lo"] < 3500 < m["bumphunt_sup_f_0.01_best_sr_hi"]
    assert {"bumphunt_init_f_0.01_global_z", "bumphunt_raw_f_0.01_global_z"} <= set(m)
    legend = res["bumphunt"].figures["bumphunt_z_vs_f.png"].axes[0].get_legend().texts
    assert {t.get_text() for t in legend} >= {"trained", "supervised (same encoder)"}


def test_a_refused_bump_hunt_is_a_result_and_the_other_evaluations_go_on():
    """Features that track m_jj would sculpt a bump: the hunt is refused, and the runner reports
    the refusal (with the measured correlation) instead of failing the whole evaluation."""
    from _eval_toys import dijet_toy

    mjj, x, y = dijet_toy(6000, 0, seed=4)
    x = np.c_[np.log(mjj) + 0.05 * np.random.default_rng(1).normal(size=len(mjj)), x[:, 1:]]
    data = {"particles": np.zeros((len(y), 1, 3), np.float32), "mask": np.ones((len(y), 1), bool),
            "label": ((np.arange(len(y)) // 2) % 2).astype(np.int8),
            "features": np.c_[mjj, x].astype(np.float32)}
    tr = {k: v[::2] for k, v in data.items()}
    te = {k: v[1::2] for k, v in data.items()}
    res = run_evaluations(lambda b: b["features"][:, 1:], train_data=tr, test_data=te,
                          which={"bumphunt", "lct"},
                          context=Context(feature_names=["m_jj", "a", "b", "c"], ecm=13000.0,
                                          n_boot=2),
                          options={"bumphunt": {"classifier": "linear", "k": 3, "n_bins": 12,
                                                "n_toys": 5, "figures": False}})
    m = res["bumphunt"].metrics
    assert m["bumphunt_refused"] == 1.0 and m["bumphunt_mjj_corr"] > 0.9
    assert "refused" in res["bumphunt"].tables["bumphunt_refusal"][0]["reason"]
    assert "lct_auc" in res["lct"].metrics


def test_lct_and_anomaly_come_with_the_untrained_and_raw_references():
    tr, te = mixed(300, seed=7), mixed(300, seed=8)

    def untrained(batch):  # a reference that knows nothing: noise of the same width
        rng = np.random.default_rng(len(batch["label"]))
        return rng.normal(size=(len(batch["label"]), 3))

    res = run_evaluations(encode, train_data=tr, test_data=te, which={"lct", "anomaly"},
                          context=Context(n_boot=5, init_encode=untrained, n_particles=10),
                          options={"anomaly": {"methods": ["znorm"], "figures": False}})
    m = res["lct"].metrics
    assert m["lct_auc"] > 0.9 and abs(m["lct_init_auc"] - 0.5) < 0.1
    assert m["lct_init_n_test"] == m["lct_n_test"] == m["lct_raw_n_test"]
    assert 0.0 <= m["lct_raw_auc"] < m["lct_auc"]
    assert "lct_init_auc_std" in m and not any(f.startswith("lct_init") for f in res["lct"].figures)
    a = res["anomaly"].metrics
    assert "anomaly_znorm_auc" in a and abs(a["anomaly_init_znorm_auc"] - 0.5) < 0.1
    # without the reference encoder: only the representation and the raw inputs
    plain = run_evaluations(encode, train_data=tr, test_data=te, which={"lct"},
                            context=Context(n_boot=0)).get("lct").metrics
    assert "lct_raw_auc" in plain and "lct_init_auc" not in plain


def test_every_evaluation_runs_next_to_untrained_seeds_and_raw_inputs():
    """cwola and lct at five init seeds (mean, seed std, min, max, per-seed table), raw inputs;
    the comparison figures carry one curve per view."""
    tr, te = mixed(300, seed=11), mixed(300, seed=12)

    def untrained(seed):
        w = np.random.default_rng(seed).normal(size=(3, 3))

        def enc(batch):  # a fixed random projection of noisy observables: weakly informative
            noise = np.random.default_rng(seed + len(batch["label"])).normal(
                scale=2.0, size=(len(batch["label"]), 3))
            return (encode(batch) + noise) @ w
        return enc

    seeds = [0, 1, 2, 3, 4]
    ctx = Context(n_boot=0, init_encoders=[untrained(s) for s in seeds], init_seeds=seeds,
                  n_particles=10)
    opts = {"cwola": {"fractions": (0.0, 0.5), "classifiers": ("linear",), "n_repeats": 1},
            "anomaly": {"methods": ["znorm"]}}
    res = run_evaluations(encode, train_data=tr, test_data=te, which={"lct", "cwola", "anomaly"},
                          context=ctx, options=opts)
    m = res["lct"].metrics
    per_seed = [r["lct_init_auc"] for r in res["lct"].tables["lct_init_seeds"]]
    assert [r["init_seed"] for r in res["lct"].tables["lct_init_seeds"]] == seeds
    assert len(set(per_seed)) == 5  # five different initialisations, not one repeated
    assert m["lct_init_auc"] == pytest.approx(np.mean(per_seed))
    assert m["lct_init_auc_seed_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert m["lct_init_auc_min"] == min(per_seed) < max(per_seed) == m["lct_init_auc_max"]
    assert m["lct_init_n_seeds"] == 5 and m["lct_auc"] > m["lct_init_auc_max"]
    c = res["cwola"].metrics
    assert {"cwola_init_linear_auc_f_0.5", "cwola_raw_linear_auc_f_0.5",
            "cwola_linear_auc_f_0.5"} <= set(c)
    assert "cwola_init_linear_auc_f_0.5_seed_std" not in c  # costly: one init seed (registry)
    assert c["cwola_linear_auc_f_0.5"] > c["cwola_init_linear_auc_f_0.5"]
    labels = {t.get_text() for t in res["lct"].figures["lct_roc.png"].axes[0].get_legend().texts}
    assert labels == {"trained", "untrained (init seed 0)", "raw inputs", "random"}
    cw = res["cwola"].figures["cwola_auc_vs_f.png"].axes[0].get_legend().texts
    assert {t.get_text() for t in cw} == {"trained (linear)", "untrained (init seed 0) (linear)",
                                          "raw inputs (linear)"}
    assert "cwola_init_scan" in res["cwola"].tables and "cwola_raw_scan" in res["cwola"].tables
    an = res["anomaly"].figures["anomaly_znorm_roc.png"].axes[0].get_legend().texts
    assert {t.get_text() for t in an} == labels  # the label-free score next to its references
    assert "anomaly_ae_roc.png" not in res["anomaly"].figures  # a method not run draws nothing
    assert res["anomaly"].metrics["anomaly_init_n_seeds"] == 5


def test_searches_run_next_to_the_supervised_encoder_which_is_trained_once():
    """CWoLa and NPLM on the representation of the supervised baseline's encoder too
    (``<name>_sup_*``, in their figures); one training serves the baseline and both searches,
    and the baseline's number is the one it gets when it trains alone."""
    tr, te = mixed(300, seed=21), mixed(300, seed=22)
    built = []

    def factory():
        built.append(1)
        return TinyDeepSet()

    def noise(batch):  # a representation that knows nothing: the supervised one must beat it
        return np.random.default_rng(len(batch["label"])).normal(size=(len(batch["label"]), 3))

    opts = {"baselines": {"which": ["supervised"], "supervised_max_epochs": 30},
            "cwola": {"fractions": (0.0, 0.5), "classifiers": ("linear",), "n_repeats": 1},
            "nplm": {"n_ref": 300, "n_data": 100, "n_sig": 20, "n_toys_null": 10,
                     "n_toys_sig": 3, "M": 20}}
    res = run_evaluations(noise, train_data=tr, test_data=te,
                          which={"baselines", "cwola", "nplm"},
                          context=Context(n_boot=0, model_factory=factory, n_particles=10),
                          options=opts)
    assert len(built) == 1
    c = res["cwola"].metrics
    assert c["cwola_sup_linear_auc_f_0.5"] > 0.9 and c["cwola_linear_auc_f_0.5"] < 0.65
    assert {"nplm_sup_z_emp_median", "nplm_sup_dof"} <= set(res["nplm"].metrics)
    cw = res["cwola"].figures["cwola_auc_vs_f.png"].axes[0].get_legend().texts
    assert "supervised (same encoder) (linear)" in {t.get_text() for t in cw}
    nplm_views = [t.get_text() for t in res["nplm"].figures["nplm_z.png"].axes[0].get_xticklabels()]
    assert "supervised (same encoder)" in nplm_views

    alone = run_baselines(tr, te, which=["supervised"], model_factory=TinyDeepSet, figures=False,
                          supervised_max_epochs=30).metrics
    assert res["baselines"].metrics["baseline_supervised_auc"] == alone["baseline_supervised_auc"]


def test_per_jet_features_of_a_converted_lhco_store_through_a_real_encoder(tmp_path):
    """The real layout: an LHCO file converted to a dijet store (each event's two leading anti-kT
    jets, the leading jet's 50 constituent slots first) and the demo config's encoder untrained.
    Each half of the bump hunt's features is that jet encoded alone, the pT the store's pt_J1 /
    pt_J2; the raw inputs (no encoder) and per_jet: false keep the event's representation."""
    from _convert import toy_dijet_rows, write_lhco

    from clrdist.config import load_config
    from clrdist.data.convert import convert
    from clrdist.data.store import open_store
    from clrdist.eval.adapters import per_jet_features
    from clrdist.eval.runner import Inputs, encode_all
    from clrdist.factory import build_encoder, initial_model

    _, _, rows = toy_dijet_rows(60, seed=4)
    store = open_store(convert("lhco", [write_lhco(tmp_path / "rnd.h5", rows)],
                               tmp_path / "lh.zarr", progress=False))
    d = store.read_all()
    tr, te = ({k: v[s] for k, v in d.items()} for s in (slice(None, 40), slice(40, None)))
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml", [])
    enc = build_encoder(initial_model(cfg.model, 0), cfg)
    names = store.feature_names
    ctx = Context(feature_names=names, kind=store.attrs["kind"])
    inp = Inputs(tr, te, encode_all(enc, tr), encode_all(enc, te), ctx=ctx, encode=enc)
    x, pt = per_jet_features(inp)
    assert d["particles"].shape[1] == 100 and x.shape == (60, 2 * inp.rep_train.shape[1])
    both = {k: np.concatenate([tr[k], te[k]]) for k in tr}
    for j, s in enumerate((slice(None, 50), slice(50, None))):
        alone = enc({**both, "particles": both["particles"][:, s], "mask": both["mask"][:, s]})
        np.testing.assert_allclose(x[:, j * alone.shape[1]:(j + 1) * alone.shape[1]], alone,
                                   rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pt, both["features"][:, [names.index("pt_J1"),
                                                           names.index("pt_J2")]])
    for other in (per_jet_features(inp, per_jet=False),
                  per_jet_features(Inputs(tr, te, inp.rep_train, inp.rep_test, ctx=ctx))):
        assert other[1] is None and np.array_equal(other[0], inp.rep_all)
