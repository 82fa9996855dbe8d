"""CWoLa hunting (Collins, Howe, Nachman, arXiv:1805.02664 / 1902.02634) on dijet samples, blind.

The signal region is never taken from the truth labels. :func:`blind_scan` slides a window over
the whole m_jj spectrum and, per window:

0a. Optional decorrelation (``decorrelate="sideband"``; the default ``"none"`` hunts on the
   features as given): per window, each feature's mean is fitted as a quadratic in ln m_jj over
   the events outside the SR and subtracted from every event (:func:`decorrelate_mjj`). The SR's
   own events never enter the fit, so a resonance cannot be fitted away. It helps features whose
   mean tracks m_jj (a ptfrac representation, whose jets' angular size goes as 1/pT) and hurts
   features that barely depend on m_jj (docs/bumphunt.md: the fit's own errors add m_jj
   dependence that trees find); the remedy for representations is inputs without an absolute
   angle (``model.input_features: boost``).
0. Sculpting guard (before anything is trained): an out-of-fold regression of ln m_jj on the
   (decorrelated) features by gradient-boosted trees (:func:`mjj_dependence`, k = 3: the most
   sensitive family; after decorrelation a linear model finds nothing by construction). The SR-vs-SB classifier
   learns any m_jj information in its inputs and makes a bump of background where there was
   none; the look-elsewhere toys cannot reproduce such a bump. When the regression's
   out-of-fold correlation exceeds ``max_mjj_corr`` (0.1) the hunt is refused
   (:class:`MjjCorrelationError`, the measured correlation in the message) unless
   ``allow_mjj_correlated=True``; the correlation is reported either way (``_mjj_corr``).
   Representations for the hunt should come from inputs without an absolute scale (each jet
   encoded alone, ``model.input_features: boost``: pT fractions, and angles relative to the jet
   axis in units of the jet's own angular size m/pT; docs/bumphunt.md).
1. Bins: log-spaced m_jj bins; the signal region (SR) is ``sr_bins`` bins, the classifier's
   sidebands (SB) the ``sb_bins`` bins on each side.
2. A classifier learns SR (class 1) vs SB (class 0) from the event features (the
   representation). Every event in the m_jj range (SR, SB and the bins outside) is dealt to one
   of k = 5 folds. For each fold, the other folds' SR/SB events train k - 1 models (each other
   fold once the validation fold); their average scores *every* event of the fold. The
   validation log loss is reported next to its no-information value, the entropy of the SR
   share of the training events (ln 2 only for equal SR and SB sizes).
3. Selection-efficiency scan: for each eps in ``efficiencies``, an event passes when its score
   is above the threshold that keeps a fraction eps of its own fold's sideband events. One model
   family and one threshold definition for every event, inside and outside SR u SB, so the
   background-only efficiency is flat in m_jj (no step at the sideband edges; tested, and
   checked in every window by :func:`efficiency_flatness`, a chi2 against a flat efficiency;
   ``_flatness_p`` combines the windows and efficiencies < 1 by Bonferroni).
4. Fit f(y) = p1 (1-y)^p2 y^-p3, y = m_jj / sqrt(s), to the selected counts of all bins outside
   the SR by a binned Poisson likelihood (log-linear in the parameters: Newton's method on a
   convex function, right in the sparse bins at eps <= 0.01 where least squares is biased);
   predict the SR background with its uncertainty from the inverse Fisher information. sqrt(s)
   comes from the store (``provenance.ecm``). A fit that fails is reported (``fit_ok`` false,
   Z = nan, counted in ``_n_failed_fits``), never turned into Z = 0; every row carries chi2/ndf
   (Pearson).
5. Local significance of the SR count vs the prediction (Cowan's formula for a Poisson count with
   a Gaussian background uncertainty), signed.

Global significance (:func:`global_significance`): the largest local Z over all windows and
efficiencies, against the same maximum in background-only toys. Smooth toys (``n_toys``, cheap):
per window and efficiency the selected spectrum's background-only fit gives Poisson means; each
toy redraws the spectra (eps = 1 shares one spectrum across windows, as the data do; the others
are drawn independently per window: conservative) and repeats steps 4-5. Full toys
(``n_full_toys``, each a whole hunt, classifier included): the m_jj values are permuted over the
events, which keeps the spectrum and the features and removes any feature-m_jj relation (valid
because step 0 checked there is none to speak of); they add the classifier's own fluctuations.
Beyond the toys: the toys' maxima are fitted as the maximum of N_eff independent unit normals,
P(max Z < z) = Phi(z)^N_eff (one parameter, closed-form maximum likelihood, N_eff clipped to
[1, number of tests]); the global p is the empirical (k + 1) / (n + 1) while at least
``MIN_TAIL`` toys reach the observed maximum, else the fitted tail. The fitted p always lies
between the local p and the Bonferroni bound n_tests * p_local, which hold for any correlation;
the fit's Kolmogorov-Smirnov p-value on the toys is reported (``_toy_fit_ks_p``) as its check.

:func:`hunt_at_fractions` runs the scan at LHCO-like signal fractions (0 as the control, 0.1%,
0.3%, 1% of all events) made by mixing signal events into the background (``mix_signal``),
never on the ~50% signal of a labelled store; each point is named by its fraction and carries
the actual injected count (``_n_sig``; a fraction that rounds to no signal event is refused).
The hunt itself sees only the mixture (:func:`hunt_mixture`; the truth is used for diagnostics
after the window is chosen, tested by hunting with shuffled truth). Metric names, per fraction f
(tag as in ``eps_tag``): ``bumphunt_f_0.01_max_local_z``, ``_global_z``, ``_global_p``,
``_global_from_fit`` (1 when the fitted tail gave it), ``_global_p_empirical``, ``_n_eff``,
``_toy_fit_ks_p``, ``_n_toys`` (and ``_global_z_full_toys``, ``_n_full_toys``), ``_flatness_p``, ``_best_sr_lo``, ``_best_sr_hi``, ``_best_eps``, ``_n_sig``, ``_n_bkg``,
``_val_logloss``, ``_val_logloss_ref``, ``_mjj_corr``, ``_n_failed_fits``, and the
after-the-fact diagnostic ``_signal_in_best_sr`` (the injected signal's share inside the chosen
SR); table ``bumphunt_scan`` (every window, efficiency and fraction); figures
``bumphunt_f_<f>_scan.png``. :func:`cwola_hunt` is the same analysis in one given signal region
(``bumphunt_z_eps_0.01``, ...).
"""


from clrdist.eval.bumphunt.fit import (
    MIN_TAIL,
    GlobalSignificance,
    SidebandFit,
    dijet_function,
    fit_n_eff,
    fit_sidebands,
    global_significance,
    log_bins,
    significance,
)
from clrdist.eval.bumphunt.guard import (
    DECORRELATIONS,
    MAX_MJJ_CORR,
    MjjCorrelationError,
    MjjDependence,
    check_mjj_dependence,
    decorrelate_mjj,
    mjj_dependence,
    whiten_dijet_given_jet_pt,
    whiten_given_jet_pt,
)
from clrdist.eval.bumphunt.scan import (
    EFFICIENCIES,
    SCAN_EFFICIENCIES,
    SIGNAL_FRACTIONS,
    ScanResult,
    blind_scan,
    cwola_hunt,
    hunt_at_fractions,
    hunt_mixture,
    lee_toys,
    mix_signal,
    scan_windows,
)
from clrdist.eval.bumphunt.selection import (
    FoldScores,
    Window,
    efficiency_flatness,
    fold_scores,
    select,
    window_selections,
)

__all__ = [
    "DECORRELATIONS", "EFFICIENCIES", "MAX_MJJ_CORR", "MIN_TAIL", "SCAN_EFFICIENCIES",
    "SIGNAL_FRACTIONS", "FoldScores", "GlobalSignificance", "MjjCorrelationError",
    "MjjDependence", "ScanResult", "SidebandFit", "Window", "blind_scan", "check_mjj_dependence",
    "cwola_hunt", "decorrelate_mjj", "dijet_function", "efficiency_flatness", "fit_n_eff",
    "fit_sidebands", "fold_scores", "global_significance", "hunt_at_fractions", "hunt_mixture",
    "lee_toys", "log_bins", "mix_signal", "mjj_dependence", "scan_windows", "select",
    "significance", "whiten_dijet_given_jet_pt", "whiten_given_jet_pt", "window_selections",
]
