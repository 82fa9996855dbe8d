"""Run the selected evaluations on store samples through an encoder.

``run_evaluations(encode, train_data=..., test_data=..., which={"lct", ...})`` is what
``clrdist eval`` and the post-training evaluation call; ``evaluate_during_training`` is the
few-second LCT used as step metrics every N epochs. Inputs are the dicts of
``SampleStore.read_all()``: ``particles (n, P, F) float32 pT in GeV``, ``mask (n, P) bool``,
``label (n,) int8``, ``features (n, K) float32``. The evaluations and their options are those of
:mod:`clrdist.eval.registry`; what they know beside the samples is a :class:`Context`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clrdist.data.schema import MJJ_NAMES
from clrdist.eval.metrics import EvalResult, binary_labels, roc_metrics
from clrdist.eval.registry import check_names, validate_options

Batch = Mapping[str, np.ndarray]
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]



@dataclass
class Context:
    """What the evaluations know beside the samples: the stores' attributes and, from the
    trained run, its references. Every field is optional."""

    seed: int = 0
    batch_size: int = 1024  # samples per encode call
    n_boot: int = 30  # bootstrap resamples of the LCT's errors
    feature_names: Sequence[str] = ()  # the store's attrs["feature_names"] (baselines; m_jj)
    kind: str = "jet"  # the store's attrs["kind"]: jet, dijet, event (baselines, raw inputs)
    label_names: Mapping[int, str] | None = None  # per-signal metrics when several signals
    n_particles: int | None = None  # constituents in the raw-input LCT (lct_raw_*)
    ecm: float | None = None  # sqrt(s) in GeV (the stores' provenance.ecm): the bump hunt's
    nplm_raw: bool = True  # NPLM on the raw inputs too (nplm_raw_*)
    init_encode: Encoder | None = None  # the same architecture untrained: lct_init_*, anomaly_init_*
    model_factory: Callable[[], Any] | None = None  # a fresh encoder: the supervised baseline
    supervised_prepare: Callable[[np.ndarray, np.ndarray], tuple] | None = None  # its inputs
    head: Callable[[np.ndarray], np.ndarray] | None = None  # ORCA: representations -> (n, K) probs
    known_classes: Sequence[int] | None = None  # ORCA's known classes (orca's ``known``)


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
                    which: set[str], context: Context | None = None,
                    options: Mapping[str, Mapping[str, Any]] | None = None,
                    ) -> dict[str, EvalResult]:
    """Encode both sets and run the evaluations named in ``which`` (names of
    :data:`clrdist.eval.registry.EVALUATIONS`).

    ``train_data`` fits classifiers (LCT, baselines, anomaly AE); ``test_data`` (disjoint) scores
    them. CWoLa and NPLM draw their own disjoint subsets from the union of both sets.
    ``"cwola"`` runs the idealised scan and, when the stores carry an m_jj feature, the blind
    bump hunt too (``"bumphunt"`` alone runs only the hunt; it needs ``context.ecm`` or
    ``bumphunt: {sqrt_s: ...}``). The LCT always reports the raw inputs (``lct_raw_*``) and,
    with ``context.init_encode``, the untrained encoder (``lct_init_*``, ``anomaly_init_*``);
    with several signal processes in ``context.label_names`` (e.g. ADC2021) lct and anomaly also
    report each one against the background (``lct_Ato4l_auc``, ...).

    ``options``: per-evaluation keyword arguments, ``{name: {argument: value}}``, checked
    against the registry's typed options (ValueError naming an unknown or mistyped one).
    Returns ``{evaluation name: EvalResult}``; metric names are unique across evaluations.
    """
    ctx = context or Context()
    check_names(which)
    kw = {name: validate_options(name, (options or {}).get(name)) for name in which}
    seed, bs, names = ctx.seed, ctx.batch_size, list(ctx.feature_names)
    rep_tr = encode_all(encode, train_data, batch_size=bs)
    rep_te = encode_all(encode, test_data, batch_size=bs)
    y_tr, y_te = np.asarray(train_data["label"]), np.asarray(test_data["label"])
    rep_all, y_all = np.concatenate([rep_tr, rep_te]), np.concatenate([y_tr, y_te])
    # the untrained reference (same architecture and seed), for the LCT and the anomaly scores
    init_tr = init_te = None
    if ctx.init_encode is not None and which & {"lct", "anomaly"}:
        init_tr = encode_all(ctx.init_encode, train_data, batch_size=bs)
        init_te = encode_all(ctx.init_encode, test_data, batch_size=bs)
    results: dict[str, EvalResult] = {}

    if "lct" in which:
        from clrdist.eval.baselines import raw_inputs
        from clrdist.eval.lct import linear_classifier_test

        lct_kw = {"n_boot": ctx.n_boot, "label_names": ctx.label_names, **kw["lct"]}
        res = linear_classifier_test(rep_tr, y_tr, rep_te, y_te, seed=seed, **lct_kw)
        # the references on the same samples: the untrained encoder and the raw inputs
        refs = {**lct_kw, "figures": False}
        if init_tr is not None:
            res = res.merge(linear_classifier_test(init_tr, y_tr, init_te, y_te, seed=seed,
                                                   prefix="lct_init", **refs))
        raw_tr, raw_te = (raw_inputs(d, ctx.kind, ctx.n_particles) for d in (train_data, test_data))
        results["lct"] = res.merge(linear_classifier_test(raw_tr, y_tr, raw_te, y_te, seed=seed,
                                                          prefix="lct_raw", **refs))
    if "baselines" in which:
        from clrdist.eval.baselines import run_baselines

        results["baselines"] = run_baselines(
            train_data, test_data, seed=seed, feature_names=names, kind=ctx.kind,
            model_factory=ctx.model_factory, supervised_prepare=ctx.supervised_prepare,
            rep_train=rep_tr, rep_test=rep_te, **kw["baselines"])
    if "cwola" in which:
        from clrdist.eval.cwola import idealised_cwola_scan

        results["cwola"] = idealised_cwola_scan(rep_all, y_all, seed=seed, **kw["cwola"])
    mjj_col = next((names.index(n) for n in MJJ_NAMES if n in names), None)
    if "bumphunt" in which or ("cwola" in which and mjj_col is not None):
        if mjj_col is None:
            raise KeyError(f"bumphunt needs an m_jj feature ({' or '.join(MJJ_NAMES)}); store "
                           f"features are {names}")
        from clrdist.eval.bumphunt import hunt_at_fractions

        mjj = np.concatenate([train_data["features"][:, mjj_col],
                              test_data["features"][:, mjj_col]]).astype(np.float64)
        hunt = validate_options("bumphunt", (options or {}).get("bumphunt"))
        sqrt_s = hunt.pop("sqrt_s", None) or ctx.ecm
        if not sqrt_s:
            raise KeyError("bumphunt: the store records no collision energy (provenance.ecm); "
                           "set eval.options.bumphunt.sqrt_s (GeV)")
        # blind: sliding windows over the whole spectrum at LHCO-like signal fractions; the
        # labels only make the mixtures, never the signal region
        results["bumphunt"] = hunt_at_fractions(mjj, rep_all, y_all, sqrt_s=float(sqrt_s),
                                                seed=seed, **hunt)
    if "nplm" in which:
        from clrdist.eval.nplm import nplm_evaluation

        res = nplm_evaluation(rep_all, y_all, seed=seed, **kw["nplm"])
        if ctx.nplm_raw:
            from clrdist.eval.baselines import raw_inputs

            raw = np.concatenate([raw_inputs(d, ctx.kind) for d in (train_data, test_data)])
            res = res.merge(nplm_evaluation(raw, y_all, seed=seed, prefix="nplm_raw",
                                            **kw["nplm"]))
        results["nplm"] = res
    if "anomaly" in which:
        from clrdist.eval.anomaly import anomaly_scores

        anomaly_kw = {"label_names": ctx.label_names, **kw["anomaly"]}
        res = anomaly_scores(rep_tr, y_tr, rep_te, y_te, seed=seed, **anomaly_kw)
        if init_tr is not None:
            res = res.merge(anomaly_scores(init_tr, y_tr, init_te, y_te, seed=seed,
                                           prefix="anomaly_init",
                                           **{**anomaly_kw, "figures": False}))
        results["anomaly"] = res
    results.update(_image_and_openworld(which, ctx, kw, train_data, test_data, rep_tr, y_tr,
                                        rep_te, y_te))
    return results


def _image_and_openworld(which, ctx: Context, kw, train_data, test_data, rep_tr, y_tr, rep_te,
                         y_te) -> dict[str, EvalResult]:
    """nae, images, mimic (jet images need jet stores) and orca (needs ``ctx.head``)."""
    seed = ctx.seed
    names = {int(k): v for k, v in (ctx.label_names or {}).items()}
    for name in ("images", "mimic"):
        if name in which and ctx.kind != "jet":
            raise KeyError(f"{name}: jet images need a jet store; this one is {ctx.kind!r}")
    out: dict[str, EvalResult] = {}
    if "nae" in which:
        from clrdist.eval.nae import nae_evaluation

        on = ("rep", "images") if ctx.kind == "jet" else ("rep",)
        out["nae"] = nae_evaluation(rep_tr, y_tr, rep_te, y_te, train_data=train_data,
                                    test_data=test_data, seed=seed, label_names=names,
                                    **{"on": on, **kw["nae"]})
    if "images" in which:
        from clrdist.eval.jetimages import image_ae_scores

        out["images"] = image_ae_scores(train_data, test_data, seed=seed, label_names=names,
                                        **kw["images"])
    if "mimic" in which:
        from clrdist.eval.mimic import mimic_evaluation

        out["mimic"] = mimic_evaluation(train_data, test_data, seed=seed, label_names=names,
                                        **kw["mimic"])
    if "orca" in which:
        from clrdist.eval.openworld import openworld_evaluation

        if ctx.head is None:
            raise KeyError("orca: needs the run's classifier head (a run trained with loss.name: orca)")
        known = {} if ctx.known_classes is None else {"known": list(ctx.known_classes)}
        out["orca"] = openworld_evaluation(ctx.head(rep_te), y_te, label_names=names,
                                           **{**known, **kw["orca"]})
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
