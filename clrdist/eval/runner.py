"""Run the selected evaluations on store samples through an encoder.

``run_evaluations(encode, train_data=..., test_data=..., which={"lct", ...})`` is what
``clrdist eval`` and the post-training hook call; ``evaluate_during_training`` is the few-second
LCT used as step metrics every N epochs. Inputs are the dicts of ``SampleStore.read_all()``:
``particles (n, P, F) float32 pT in GeV``, ``mask (n, P) bool``, ``label (n,) int8``,
``features (n, K) float32``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from clrdist.eval.metrics import EvalResult, binary_labels, roc_metrics

Batch = Mapping[str, np.ndarray]
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]

KNOWN = ("lct", "baselines", "cwola", "bumphunt", "nplm", "anomaly", "nae", "images", "mimic",
         "orca")
MJJ_NAMES = ("m_jj", "mjj")  # store feature names recognised as the dijet invariant mass


def encode_all(encode: Encoder, data: Batch, *, batch_size: int = 1024) -> np.ndarray:
    """Representations (n, D) float32 of every sample in ``data``, computed in batches."""
    n = len(data["label"])
    out = []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        out.append(np.asarray(encode(batch), dtype=np.float32))
    if not out:
        raise ValueError("no samples to encode")
    rep = np.concatenate(out)
    if rep.ndim != 2 or rep.shape[0] != n:
        raise ValueError(f"encode must return (n, D); got {rep.shape} for n={n}")
    return rep


def run_evaluations(encode: Encoder, *, train_data: Batch, test_data: Batch,
                    which: set[str], options: Mapping[str, Any] | None = None,
                    ) -> dict[str, EvalResult]:
    """Encode both sets and run the evaluations named in ``which`` (subset of ``KNOWN``).

    ``train_data`` fits classifiers (LCT, baselines, anomaly AE); ``test_data`` (disjoint) scores
    them. CWoLa and NPLM draw their own disjoint subsets from the union of both sets.
    ``"cwola"`` runs the idealised scan and, when the stores carry an m_jj feature, the blind
    bump hunt too (``"bumphunt"`` alone runs only the hunt; it needs ``ecm``, the stores'
    provenance.ecm in GeV, or ``bumphunt: {sqrt_s: ...}``).

    options (all optional): ``seed`` (0), ``batch_size`` (1024), ``n_boot`` (30),
    ``feature_names`` (the store's ``attrs["feature_names"]``: jet_mass/tau21/tau32 or the LHCO
    dijet names for baselines, m_jj for the bump hunt), ``kind`` (the store's ``attrs["kind"]``:
    ``jet``, ``dijet``, ``event``; picks the baselines and the raw NPLM inputs), ``model_factory`` (supervised baseline), ``nplm_raw`` (True: also run NPLM
    on the raw inputs), ``init_encode`` (the same architecture untrained: the LCT and the
    anomaly scores then also report ``lct_init_*``, ``anomaly_init_*``), ``n_particles`` (constituents in the raw-input LCT ``lct_raw_*``,
    which always runs with ``lct``), ``label_names`` (the store's {label: name}: with several
    signal processes, e.g. ADC2021, lct and anomaly also report each one against the background,
    ``lct_Ato4l_auc``, ``anomaly_ae_leptoquark_inv_eps_b_at_0.3``, ...), and per-evaluation keyword dicts ``lct``, ``baselines``, ``cwola``,
    ``bumphunt``, ``nplm``, ``anomaly`` passed to the functions below.
    Returns ``{evaluation name: EvalResult}``; metric names are unique across evaluations.
    """
    opts = dict(options or {})
    unknown = set(which) - set(KNOWN)
    if unknown:
        raise KeyError(f"unknown evaluation(s) {sorted(unknown)}; known: {list(KNOWN)}")
    seed = int(opts.get("seed", 0))
    bs = int(opts.get("batch_size", 1024))
    names = list(opts.get("feature_names") or [])
    rep_tr = encode_all(encode, train_data, batch_size=bs)
    rep_te = encode_all(encode, test_data, batch_size=bs)
    y_tr, y_te = np.asarray(train_data["label"]), np.asarray(test_data["label"])
    rep_all, y_all = np.concatenate([rep_tr, rep_te]), np.concatenate([y_tr, y_te])
    kw = lambda name: dict(opts.get(name) or {})  # noqa: E731
    # the untrained reference (same architecture and seed), for the LCT and the anomaly scores
    init_tr = init_te = None
    if (init_encode := opts.get("init_encode")) is not None and which & {"lct", "anomaly"}:
        init_tr = encode_all(init_encode, train_data, batch_size=bs)
        init_te = encode_all(init_encode, test_data, batch_size=bs)
    results: dict[str, EvalResult] = {}

    if "lct" in which:
        from clrdist.eval.lct import linear_classifier_test

        lct_kw = {"n_boot": int(opts.get("n_boot", 30)), "label_names": opts.get("label_names"),
                  **kw("lct")}
        res = linear_classifier_test(rep_tr, y_tr, rep_te, y_te, seed=seed, **lct_kw)
        # the references on the same samples: the untrained encoder and the raw inputs
        if init_tr is not None:
            res = res.merge(linear_classifier_test(init_tr, y_tr, init_te, y_te, seed=seed,
                                                   prefix="lct_init", **{**lct_kw, "figures": False}))
        from clrdist.eval.baselines import raw_inputs

        kind, n_max = str(opts.get("kind", "jet")), opts.get("n_particles")
        results["lct"] = res.merge(linear_classifier_test(
            raw_inputs(train_data, kind, n_max), y_tr, raw_inputs(test_data, kind, n_max), y_te,
            seed=seed, prefix="lct_raw", **{**lct_kw, "figures": False}))
    if "baselines" in which:
        from clrdist.eval.baselines import run_baselines

        results["baselines"] = run_baselines(
            train_data, test_data, seed=seed, feature_names=names,
            kind=str(opts.get("kind", "jet")), model_factory=opts.get("model_factory"),
            rep_train=rep_tr, rep_test=rep_te, **kw("baselines"))
    if "cwola" in which:
        from clrdist.eval.cwola import idealised_cwola_scan

        results["cwola"] = idealised_cwola_scan(rep_all, y_all, seed=seed, **kw("cwola"))
    mjj_col = next((names.index(n) for n in MJJ_NAMES if n in names), None)
    if "bumphunt" in which or ("cwola" in which and mjj_col is not None):
        if mjj_col is None:
            raise KeyError(f"bumphunt needs an m_jj feature ({' or '.join(MJJ_NAMES)}); store "
                           f"features are {names}")
        from clrdist.eval.bumphunt import hunt_at_fractions

        mjj = np.concatenate([train_data["features"][:, mjj_col],
                              test_data["features"][:, mjj_col]]).astype(np.float64)
        hunt = kw("bumphunt")
        sqrt_s = hunt.pop("sqrt_s", None) or opts.get("ecm")
        if not sqrt_s:
            raise KeyError("bumphunt: the store records no collision energy (provenance.ecm); "
                           "set eval.options.bumphunt.sqrt_s (GeV)")
        # blind: sliding windows over the whole spectrum at LHCO-like signal fractions; the
        # labels only make the mixtures, never the signal region
        results["bumphunt"] = hunt_at_fractions(mjj, rep_all, y_all, sqrt_s=float(sqrt_s),
                                                seed=seed, **hunt)
    if "nplm" in which:
        from clrdist.eval.nplm import nplm_evaluation

        res = nplm_evaluation(rep_all, y_all, seed=seed, **kw("nplm"))
        if opts.get("nplm_raw", True):
            from clrdist.eval.baselines import raw_inputs

            kind = str(opts.get("kind", "jet"))
            raw = np.concatenate([raw_inputs(d, kind) for d in (train_data, test_data)])
            res = res.merge(nplm_evaluation(raw, y_all, seed=seed, prefix="nplm_raw",
                                            **kw("nplm")))
        results["nplm"] = res
    if "anomaly" in which:
        from clrdist.eval.anomaly import anomaly_scores

        anomaly_kw = {"label_names": opts.get("label_names"), **kw("anomaly")}
        res = anomaly_scores(rep_tr, y_tr, rep_te, y_te, seed=seed, **anomaly_kw)
        if init_tr is not None:
            res = res.merge(anomaly_scores(init_tr, y_tr, init_te, y_te, seed=seed,
                                           prefix="anomaly_init",
                                           **{**anomaly_kw, "figures": False}))
        results["anomaly"] = res
    results.update(_image_and_openworld(which, opts, train_data, test_data, rep_tr, y_tr, rep_te,
                                        y_te, seed))
    return results


def _image_and_openworld(which, opts, train_data, test_data, rep_tr, y_tr, rep_te, y_te, seed
                         ) -> dict[str, EvalResult]:
    """nae, images, mimic (jet images need jet stores) and orca (needs ``opts["head"]``)."""
    kind = str(opts.get("kind", "jet"))
    names = {int(k): v for k, v in (opts.get("label_names") or {}).items()}
    kw = lambda name: dict(opts.get(name) or {})  # noqa: E731
    for name in ("images", "mimic"):
        if name in which and kind != "jet":
            raise KeyError(f"{name}: jet images need a jet store; this one is {kind!r}")
    out: dict[str, EvalResult] = {}
    if "nae" in which:
        from clrdist.eval.nae import nae_evaluation

        on = ("rep", "images") if kind == "jet" else ("rep",)
        out["nae"] = nae_evaluation(rep_tr, y_tr, rep_te, y_te, train_data=train_data,
                                    test_data=test_data, seed=seed, label_names=names,
                                    **{"on": on, **kw("nae")})
    if "images" in which:
        from clrdist.eval.jetimages import image_ae_scores

        out["images"] = image_ae_scores(train_data, test_data, seed=seed, label_names=names,
                                        **kw("images"))
    if "mimic" in which:
        from clrdist.eval.mimic import mimic_evaluation

        out["mimic"] = mimic_evaluation(train_data, test_data, seed=seed, label_names=names,
                                        **kw("mimic"))
    if "orca" in which:
        from clrdist.eval.openworld import openworld_evaluation

        if opts.get("head") is None:
            raise KeyError("orca: needs the run's classifier head (a run trained with loss.name: orca)")
        out["orca"] = openworld_evaluation(opts["head"](rep_te), y_te, label_names=names,
                                           **kw("orca"))
    return out


def evaluate_during_training(rep_train: np.ndarray, y_train: np.ndarray, rep_val: np.ndarray,
                             y_val: np.ndarray, *, seed: int = 0,
                             max_samples: int = 20000) -> dict[str, float]:
    """Quick LCT for step metrics: ``lct_auc``, ``lct_max_sic``, ``lct_fpr_at_tpr_0.5``
    (plus ``lct_inv_eps_b_at_0.5``). No bootstrap, no figures; at most ``max_samples`` of each
    set (first ones) so it stays within a few seconds."""
    from clrdist.eval.lct import linear_scores

    keep_tr, ytr = binary_labels(np.asarray(y_train)[:max_samples])
    keep_va, yva = binary_labels(np.asarray(y_val)[:max_samples])
    score = linear_scores(np.asarray(rep_train)[:max_samples][keep_tr], ytr,
                          np.asarray(rep_val)[:max_samples][keep_va], seed=seed)
    m, _ = roc_metrics(yva, score, "lct", eps_s=(0.5,))
    return {k: m[k] for k in ("lct_auc", "lct_max_sic", "lct_fpr_at_tpr_0.5",
                              "lct_inv_eps_b_at_0.5")}
