"""NPLM: the New Physics Learning Machine (D'Agnolo, Wulzer; Grosso, Letizia et al.).

A goodness-of-fit test of data D against a background-only reference sample R in any feature
space (here: the learned representation, or the raw inputs). With w = N_D(expected) / N_R, a
function f(x) (the log density ratio n(x|D) / n(x|R)) minimises

    L(f) = w * sum_{x in R} (exp f(x) - 1) - sum_{x in D} f(x)            (+ regulariser)

and the test statistic is t = -2 min L = 2 [ sum_D f + w sum_R (1 - exp f) ].

Models for f:
- ``kernel``: Nystrom Gaussian-kernel model f(x) = sum_j a_j k(x, c_j) with M centres drawn from
  R u D, width sigma = 90th percentile of pairwise distances of reference points (features
  standardised with reference statistics), L2 penalty n lam a^T K_MM a (n = N_R + N_D, the
  Falkon convention); the convex loss is minimised by damped Newton iterations in torch, on
  whatever device the inputs live on (CUDA when given CUDA tensors or ``device="cuda"``).
- ``network``: a small network (sigmoid hidden layer) with weight clipping, full-batch Adam,
  trained until the loss has converged (no decrease by more than ``tol`` = 5e-3 in the last
  ``patience`` = 1000 steps; at most ``max_steps`` = 1e5, else the toy counts as unconverged).

Calibration: reference-only toys give the null distribution of t; a chi2 with free degrees of
freedom (loc 0, scale 1) is fitted to one set of them and checked (KS) on an independent set.
The kernel model's penalty lam, unless given, is the smallest of ``LAM_GRID`` whose fitting toys
follow their fitted chi2 (KS p >= ``LAM_KS`` and variance <= ``LAM_VAR`` x 2 dof, since KS is
blind to a tail of a few toys; :func:`choose_lambda`): lam as small as possible
while t stays chi2-distributed (Letizia et al. 2022). Too small a lam at small N_R lets single
isolated data events (discrete raw features: empty object slots, rare multiplicities) carry a
spike of f, and the null t grows a tail far beyond any chi2 (ADC2021-like raw features, N_R 1000,
M 100: var t / 2 dof 356 at lam 1e-6, a chi2 has 1; chi2-like from lam 1e-4, docs/events.md).
Signal-injected toys (Poisson(N_sig) signal events) give the empirical Z from
p = (k + 1) / (n + 1) (k of the n null toys of both sets at or above t) and, only when the
evaluation is calibrated (KS p-value of the independent null toys against the fitted chi2 > 0.01
and every fit converged), Z = Phi^-1(F_chi2(t; dof)).

Devices: toys are drawn in the same order whatever the device; on GPUs many toys are fitted at
once (the kernel model's Newton iterations batched over toys with no host read per step, in
float32; the network model as stacked per-toy weights), on CPUs one by one in float64 as before.

Metric names (prefix ``nplm`` by default): ``nplm_calibrated`` (1 / 0), ``nplm_dof``,
``nplm_ks_pvalue``, ``nplm_n_unconverged``, ``nplm_t_null_median``, ``nplm_t_sig_median``,
``nplm_z_emp_median``, ``nplm_z_chi2_median`` and ``nplm_z_chi2_at_median_t`` (calibrated only),
the medians' bootstrap errors over the signal toys ``nplm_z_emp_median_std`` and
``nplm_z_chi2_median_std``,
``nplm_n_ref``, ``nplm_n_data``, ``nplm_n_sig``, ``nplm_n_toys_null``, ``nplm_n_toys_sig``,
``nplm_n_toys_dof``,
``nplm_sigma``, ``nplm_M``, ``nplm_lam`` (kernel); figure ``nplm_t.png``; table ``nplm_toys``.

Modules: :mod:`.kernel` (the kernel model), :mod:`.network` (the network model),
:mod:`.toys` (drawing and fitting toys), :mod:`.calibration` (the null calibration and Z),
:mod:`.evaluation` (:func:`nplm_evaluation`); every name is importable from here.
"""

from __future__ import annotations

from clrdist.eval.nplm.calibration import (
    KS_MIN,
    LAM_GRID,
    LAM_KS,
    LAM_VAR,
    NullCalibration,
    calibrate_null,
    choose_lambda,
    fit_dof,
    z_chi2,
    z_empirical,
    z_empirical_max,
)
from clrdist.eval.nplm.evaluation import median_error, nplm_evaluation, t_figure
from clrdist.eval.nplm.kernel import (
    KernelFit,
    default_dtype,
    full_fp32,
    kernel_width,
    newton_batched,
    nplm_t_kernel,
)
from clrdist.eval.nplm.kernel import _gauss as _gauss  # tests check the kernel pieces
from clrdist.eval.nplm.kernel import _kernel_features as _kernel_features
from clrdist.eval.nplm.network import (
    NetworkFit,
    fit_networks_batched,
    nplm_t_network,
    single_thread_on_cpu,
)
from clrdist.eval.nplm.toys import default_toy_batch, run_toys

__all__ = [
    "KS_MIN",
    "LAM_GRID",
    "LAM_KS",
    "LAM_VAR",
    "KernelFit",
    "NetworkFit",
    "NullCalibration",
    "calibrate_null",
    "choose_lambda",
    "default_dtype",
    "default_toy_batch",
    "fit_dof",
    "fit_networks_batched",
    "full_fp32",
    "kernel_width",
    "median_error",
    "newton_batched",
    "nplm_evaluation",
    "nplm_t_kernel",
    "nplm_t_network",
    "run_toys",
    "single_thread_on_cpu",
    "t_figure",
    "z_chi2",
    "z_empirical",
    "z_empirical_max",
]
