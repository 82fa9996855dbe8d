"""The runner's adapters of the evaluations whose modules were written before the adapters:
``adapter(inputs, **options) -> EvalResult | None`` (:class:`clrdist.eval.runner.Inputs`), each
named by its line in :data:`clrdist.eval.registry.EVALUATIONS`. A new evaluation keeps its
adapter in its own module (``clrdist.eval.lct:evaluate``, ``clrdist.eval.cwola:evaluate``).

On a reference (the untrained encoder, the raw inputs) an adapter draws no figures of its own;
what it records with ``inputs.curve`` goes into the comparison figures of
:func:`clrdist.eval.plots.reference_figures`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from clrdist.data.schema import MJJ_NAMES
from clrdist.eval.bumphunt import SIGNAL_FRACTIONS, MjjCorrelationError, hunt_at_fractions
from clrdist.eval.metrics import EvalResult, eps_tag
from clrdist.eval.runner import Inputs, encode_all, mjj_column

log = logging.getLogger(__name__)


def _figures(inp: Inputs, options: dict[str, Any]) -> bool:
    return inp.reference == "" and options.get("figures", True)


def _names(inp: Inputs) -> dict[int, str]:
    return {int(k): v for k, v in (inp.ctx.label_names or {}).items()}


def nplm(inp: Inputs, **options: Any) -> EvalResult:
    # lazy: an evaluation's module (torch, ~2 s) loads only when that evaluation runs
    from clrdist.eval.nplm import nplm_evaluation, z_empirical

    res = nplm_evaluation(inp.rep_all, inp.y_all, seed=inp.seed,
                          **{**options, "figures": _figures(inp, options)})
    rows = res.tables.get("nplm_toys", [])
    t0, t1 = (np.array([r["t"] for r in rows if r["kind"] == k]) for k in ("null", "signal"))
    if len(t0) and len(t1):
        inp.curve("nplm", z_empirical(t1, t0))
    return res


def anomaly(inp: Inputs, **options: Any) -> EvalResult:
    """Its ROC curves go into the comparison figures ``anomaly_<method>_roc.png``."""
    # lazy: an evaluation's module (torch, ~2 s) loads only when that evaluation runs
    from clrdist.eval.anomaly import anomaly_scores

    curves: dict = {}
    res = anomaly_scores(inp.rep_train, inp.y_train, inp.rep_test, inp.y_test, seed=inp.seed,
                         label_names=inp.ctx.label_names, curves_out=curves,
                         **{**options, "figures": _figures(inp, options)})
    if options.get("figures", True):
        for method, r in curves.items():
            inp.curve(f"anomaly_{method}", r)
    return res


def nae(inp: Inputs, **options: Any) -> EvalResult | None:
    """On representations and (jet stores, the trained view only: images do not depend on the
    encoder) on jet images."""
    # lazy: an evaluation's module (torch, ~2 s) loads only when that evaluation runs
    from clrdist.eval.nae import nae_evaluation

    on = options.pop("on", ("rep", "images") if inp.ctx.kind == "jet" else ("rep",))
    on = tuple(on) if inp.reference == "" else tuple(o for o in on if o == "rep")
    if not on:
        return None
    return nae_evaluation(inp.rep_train, inp.y_train, inp.rep_test, inp.y_test,
                          train_data=inp.train_data, test_data=inp.test_data, seed=inp.seed,
                          label_names=_names(inp), on=on, **options)


def _jet_store(name: str, inp: Inputs) -> None:
    if inp.ctx.kind != "jet":
        raise KeyError(f"{name}: jet images need a jet store; this one is {inp.ctx.kind!r}")


def images(inp: Inputs, **options: Any) -> EvalResult:
    # lazy: an evaluation's module (torch, ~2 s) loads only when that evaluation runs
    from clrdist.eval.jetimages import image_ae_scores

    _jet_store("images", inp)
    return image_ae_scores(inp.train_data, inp.test_data, seed=inp.seed, label_names=_names(inp),
                           **options)


def mimic(inp: Inputs, **options: Any) -> EvalResult:
    # lazy: an evaluation's module (torch, ~2 s) loads only when that evaluation runs
    from clrdist.eval.mimic import mimic_evaluation

    _jet_store("mimic", inp)
    return mimic_evaluation(inp.train_data, inp.test_data, seed=inp.seed, label_names=_names(inp),
                            **options)


def per_jet_features(inp: Inputs, *, per_jet: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The bump hunt's features of every event (train then test) and, per jet, the jets' pT.

    With ``per_jet`` on a dijet store (the leading jet's constituent slots, then the
    subleading's; ``pt_J1``, ``pt_J2`` among its features) and an encoder (not the raw inputs):
    each jet encoded alone, the two representations side by side, and the jets' pT (n, 2), with
    which the hunt whitens each jet's representation against its own pT
    (``hunt_at_fractions(jet_pt=...)``): the event's m_jj grows with its jets' pT, so features
    that change with a jet's pT would sculpt a bump (docs/bumphunt.md). Otherwise the event's
    representation as it is, and None."""
    names = list(inp.ctx.feature_names)
    slots = inp.train_data["particles"].shape[1]
    if not (per_jet and inp.encode is not None and inp.ctx.kind == "dijet"
            and {"pt_J1", "pt_J2"} <= set(names) and slots % 2 == 0):
        return inp.rep_all, None
    half = slots // 2
    reps, pts = [], []
    for data in (inp.train_data, inp.test_data):
        jets = [encode_all(inp.encode, {**data, "particles": data["particles"][:, s],
                                        "mask": data["mask"][:, s]},
                           batch_size=inp.ctx.batch_size)
                for s in (slice(None, half), slice(half, None))]
        reps.append(np.concatenate(jets, 1))
        pts.append(data["features"][:, [names.index("pt_J1"), names.index("pt_J2")]])
    return np.concatenate(reps), np.concatenate(pts).astype(np.float64)


def bumphunt(inp: Inputs, **options: Any) -> EvalResult:
    """Blind sliding-window hunts over the whole m_jj spectrum at LHCO-like signal fractions;
    the labels only make the mixtures, never the signal region. On dijet stores each jet is
    encoded alone and whitened against its pT (:func:`per_jet_features`)."""
    names = list(inp.ctx.feature_names)
    col = mjj_column(names)
    if col is None:
        raise KeyError(f"bumphunt needs an m_jj feature ({' or '.join(MJJ_NAMES)}); store "
                       f"features are {names}")
    sqrt_s = options.pop("sqrt_s", None) or inp.ctx.ecm
    if not sqrt_s:
        raise KeyError("bumphunt: the store records no collision energy (provenance.ecm); "
                       "set eval.options.bumphunt.sqrt_s (GeV)")
    mjj = np.concatenate([inp.train_data["features"][:, col],
                          inp.test_data["features"][:, col]]).astype(np.float64)
    x, jet_pt = per_jet_features(inp, per_jet=options.pop("per_jet", True))
    per_jet = {"bumphunt_per_jet": float(jet_pt is not None)}
    try:
        res = hunt_at_fractions(mjj, x, inp.y_all, sqrt_s=float(sqrt_s), seed=inp.seed,
                                jet_pt=jet_pt, **{**options, "figures": _figures(inp, options)})
    except MjjCorrelationError as e:  # a refusal is a result: the other evaluations go on
        log.warning("%s", e)
        return EvalResult(metrics={"bumphunt_refused": 1.0, "bumphunt_mjj_corr": float(e.corr),
                                   **per_jet},
                          tables={"bumphunt_refusal": [{"reason": str(e)}]})
    res.metrics.update(per_jet)
    fractions = options.get("fractions")
    if fractions is None:
        fractions = SIGNAL_FRACTIONS
    z = [(f, res.metrics.get(f"bumphunt_f_{eps_tag(f)}_global_z")) for f in fractions]
    inp.curve("bumphunt", [(f, v) for f, v in z if v is not None])
    return res
