"""Figures for the evaluations (matplotlib, no display).

Figures are built with ``matplotlib.figure.Figure`` directly rather than pyplot: no global state,
no backend switching, nothing to close, safe in Ray workers. mplhep's CMS-like style is used when
installed, else plain matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from clrdist.eval.metrics import DEFAULT_EPS_B_FLOOR, MIN_BKG_EVENTS, Roc, sic_curve

try:  # optional: HEP plot style
    import mplhep as _hep
except ImportError:  # pragma: no cover - depends on the environment
    _hep = None


def new_figure(figsize=(6.0, 5.0)) -> tuple[Figure, object]:
    """A Figure and its Axes, in mplhep's ROOT style when mplhep is installed (fonts scaled to
    the figure size; the style's defaults are made for 10 x 10 inch figures)."""
    if _hep is not None:
        style = {**_hep.style.ROOT, "font.size": 13, "mathtext.fontset": "dejavusans",
                 "legend.fontsize": 10}
        with mpl.rc_context(style):
            fig = Figure(figsize=figsize, layout="constrained")
            ax = fig.subplots()
        return fig, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots()


def roc_figure(curves: Mapping[str, Roc], title: str = "") -> Figure:
    """Background rejection 1/eps_B (log) vs signal efficiency eps_S, one line per tagger."""
    fig, ax = new_figure()
    for name, r in curves.items():
        ok = r.fpr > 0
        ax.plot(r.tpr[ok], 1.0 / r.fpr[ok], label=name)
    x = np.linspace(1e-3, 1, 200)
    ax.plot(x, 1 / x, "k:", lw=1, label="random")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"background rejection $1/\epsilon_B$")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def sic_figure(curves: Mapping[str, Roc], title: str = "", *,
               eps_b_floor: float = DEFAULT_EPS_B_FLOOR,
               min_bkg_events: int = MIN_BKG_EVENTS) -> Figure:
    """SIC = eps_S / sqrt(eps_B) vs eps_S, restricted to working points with enough background."""
    fig, ax = new_figure()
    for name, r in curves.items():
        es, sic = sic_curve(r, eps_b_floor=eps_b_floor, min_bkg_events=min_bkg_events)
        ax.plot(es, sic, label=name)
    x = np.linspace(1e-3, 1, 200)
    ax.plot(x, np.sqrt(x), "k:", lw=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"SIC $=\epsilon_S/\sqrt{\epsilon_B}$")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def scan_figure(x: Sequence[float], series: Mapping[str, Sequence[float]], *, xlabel: str,
                ylabel: str, logx: bool = True, hline: float | None = None,
                errors: Mapping[str, Sequence[float]] | None = None, title: str = "") -> Figure:
    """Metric vs a scanned quantity (e.g. AUC vs signal fraction f), one line per series."""
    fig, ax = new_figure()
    x = np.asarray(x, dtype=float)
    for name, y in series.items():
        y = np.asarray(y, dtype=float)
        err = None if errors is None or name not in errors else np.asarray(errors[name], float)
        ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=2, label=name)
    if hline is not None:
        ax.axhline(hline, color="k", ls=":", lw=1)
    if logx:
        ax.set_xscale("symlog", linthresh=float(np.min(x[x > 0])) if np.any(x > 0) else 1e-4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return fig


def reference_figures(curves: Mapping[str, Mapping[str, object]],
                      results: Mapping[str, object]) -> dict[str, dict[str, Figure]]:
    """The comparison figures of :func:`clrdist.eval.runner.run_evaluations`, ``{evaluation:
    {file name: Figure}}``: each curve the adapters recorded (``Inputs.curve``) for the trained
    representation, the untrained encoder (first init seed), the raw inputs and the supervised
    encoder, in one figure per quantity:

    - ``lct``: ROC and SIC (``lct_roc.png``, ``lct_sic.png``);
    - ``cwola``: test AUC and max SIC vs the signal fraction, per classifier, with the
      supervised encoder's AUC as a line when the baselines ran;
    - ``nplm``: the signal toys' empirical Z (``nplm_z.png``: median and 16-84% band);
    - ``anomaly``: one ROC per label-free score (``anomaly_znorm_roc.png``,
      ``anomaly_ae_roc.png``), drawn when the trained representation has that curve;
    - ``bumphunt``: the global Z of the blind hunt vs the signal fraction."""
    out: dict[str, dict[str, Figure]] = {}
    if curves.get("lct"):
        out["lct"] = {"lct_roc.png": roc_figure(curves["lct"], "linear classifier test"),
                      "lct_sic.png": sic_figure(curves["lct"], "linear classifier test")}
    for key, title in (("anomaly_znorm", "anomaly score |z|"),
                       ("anomaly_ae", "anomaly score: autoencoder on the representation")):
        if "trained" in curves.get(key, {}):  # the representation ran it (not only the ceiling)
            out.setdefault("anomaly", {})[f"{key}_roc.png"] = roc_figure(curves[key], title)
    if curves.get("cwola"):
        sup = getattr(results.get("baselines"), "metrics", {}).get("baseline_supervised_auc")
        figs = {}
        for key, ylabel, name, hline in (("auc", "AUC (test)", "cwola_auc_vs_f.png", 0.5),
                                          ("max_sic", "max SIC (test)", "cwola_sic_vs_f.png", 1.0)):
            series, errors, xs = {}, {}, None
            for view, rows in curves["cwola"].items():
                for clf in dict.fromkeys(r["classifier"] for r in rows):
                    rr = [r for r in rows if r["classifier"] == clf]
                    xs = [r["f"] for r in rr]
                    series[f"{view} ({clf})"] = [r[key] for r in rr]
                    errors[f"{view} ({clf})"] = [r.get(f"{key}_std", 0.0) for r in rr]
            fig = scan_figure(xs, series, errors=errors, xlabel="signal fraction $f$ in the mixed sample",
                              ylabel=ylabel, hline=hline, title="idealised CWoLa")
            if key == "auc" and sup is not None:
                fig.axes[0].axhline(sup, color="tab:gray", ls="--", lw=1,
                                    label="supervised (same encoder)")
                fig.axes[0].legend(fontsize="small")
            figs[name] = fig
        out["cwola"] = figs
    if curves.get("nplm"):
        fig, ax = new_figure()
        for i, (view, z) in enumerate(curves["nplm"].items()):
            lo, med, hi = np.quantile(np.asarray(z, float), [0.16, 0.5, 0.84])
            ax.errorbar([i], [med], yerr=[[med - lo], [hi - med]], marker="o", capsize=3,
                        label=view)
        ax.set_xticks(range(len(curves["nplm"])), list(curves["nplm"]), fontsize="small")
        ax.set_ylabel(r"NPLM $Z$ (empirical) of signal toys")
        ax.grid(alpha=0.3)
        out["nplm"] = {"nplm_z.png": fig}
    if curves.get("bumphunt") and any(curves["bumphunt"].values()):
        pts = {v: p for v, p in curves["bumphunt"].items() if p}
        xs = [f for f, _ in next(iter(pts.values()))]
        series = {v: [z for _, z in p] for v, p in pts.items() if len(p) == len(xs)}
        out["bumphunt"] = {"bumphunt_z_vs_f.png": scan_figure(
            xs, series, xlabel="signal fraction of all events", ylabel="global $Z$ (blind hunt)",
            title="CWoLa bump hunt")}
    return out
