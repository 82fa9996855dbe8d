"""Figures for the evaluations (matplotlib, no display).

Figures are built with ``matplotlib.figure.Figure`` directly rather than pyplot: no global state,
no backend switching, nothing to close, safe in Ray workers. mplhep's CMS-like style is used when
installed, else plain matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        import matplotlib as mpl

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
