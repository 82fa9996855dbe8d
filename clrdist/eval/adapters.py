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
from typing import TYPE_CHECKING, Any

import numpy as np

from clrdist.data.schema import MJJ_NAMES
from clrdist.eval.bumphunt import SIGNAL_FRACTIONS, MjjCorrelationError, hunt_at_fractions
from clrdist.eval.metrics import EvalResult, eps_tag
from clrdist.eval.runner import mjj_column

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs

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


def bumphunt(inp: Inputs, **options: Any) -> EvalResult:
    """Blind sliding-window hunts over the whole m_jj spectrum at LHCO-like signal fractions;
    the labels only make the mixtures, never the signal region."""
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
    try:
        res = hunt_at_fractions(mjj, inp.rep_all, inp.y_all, sqrt_s=float(sqrt_s), seed=inp.seed,
                                **{**options, "figures": _figures(inp, options)})
    except MjjCorrelationError as e:  # a refusal is a result: the other evaluations go on
        log.warning("%s", e)
        return EvalResult(metrics={"bumphunt_refused": 1.0, "bumphunt_mjj_corr": float(e.corr)},
                          tables={"bumphunt_refusal": [{"reason": str(e)}]})
    fractions = options.get("fractions")
    if fractions is None:
        fractions = SIGNAL_FRACTIONS
    z = [(f, res.metrics.get(f"bumphunt_f_{eps_tag(f)}_global_z")) for f in fractions]
    inp.curve("bumphunt", [(f, v) for f, v in z if v is not None])
    return res
