"""Label-free anomaly scores on representations, and their AUC against truth where it exists.

- ``znorm``: the L2 norm |z| of the representation (DarkCLR: the anomaly augmentation teaches the
  encoder to map anomalous jets to a different norm).
- ``ae``: an autoencoder on the (standardised) representation (AnomalyCLR): 256-128-64-32-16
  with a bottleneck of 5, MSE, Adam 1e-3, batch 4096, 100 epochs in the paper; ``scale`` < 1
  shrinks the widths, ``epochs`` the training. The anomaly score is the per-sample
  reconstruction error. It is fitted on the training set's background (label 0; the papers'
  "SM" training data) or, with ``train_on="all"``, on every training sample.

Metric names: ``anomaly_znorm_*`` and ``anomaly_ae_*`` with the suffixes of ``roc_metrics``
(``auc``, ``inv_eps_b_at_0.2`` — DarkCLR's working point — ``0.3``, ``0.5``, ``max_sic``,
``fpr_at_tpr_0.5``), ``anomaly_ae_final_loss``; figures ``anomaly_roc.png``,
``anomaly_scores.png``, and (through ``clrdist eval``'s runner) one ROC per method with the
trained representation, the untrained encoder, the raw inputs and the supervised encoder
together: ``anomaly_znorm_roc.png``, ``anomaly_ae_roc.png``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from clrdist.eval.metrics import EvalResult, Roc, binary_labels, per_signal_metrics, roc_metrics
from clrdist.eval.nplm.network import single_thread_on_cpu
from clrdist.eval.plots import new_figure, roc_figure

AE_WIDTHS = (256, 128, 64, 32, 16)  # AnomalyCLR encoder widths; decoder mirrors them
AE_BOTTLENECK = 5


def znorm_score(rep: np.ndarray) -> np.ndarray:
    """|z|: (n, D) -> (n,)."""
    return np.linalg.norm(np.asarray(rep, dtype=np.float64), axis=1)


def _mlp(dims: Sequence[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def autoencoder(dim: int, *, scale: float = 1.0, bottleneck: int = AE_BOTTLENECK
                ) -> torch.nn.Module:
    # hidden widths are floored at 16: narrower ReLU layers die and the AE learns only the mean
    widths = [max(16, int(round(w * scale))) for w in AE_WIDTHS]
    enc = [dim, *widths, bottleneck]
    return torch.nn.Sequential(_mlp(enc), _mlp(enc[::-1]))  # linear bottleneck


class AEScorer:
    """Standardise with training statistics, fit an autoencoder by MSE, score by per-sample MSE."""

    def __init__(self, *, scale: float = 1.0, bottleneck: int = AE_BOTTLENECK, epochs: int = 100,
                 batch_size: int = 4096, lr: float = 1e-3, seed: int = 0,
                 device: str | None = None):
        self.scale, self.bottleneck, self.epochs = scale, bottleneck, epochs
        self.batch_size, self.lr, self.seed = batch_size, lr, seed
        self.device = torch.device(device or "cpu")  # "cuda": fit and score on the GPU
        self.final_loss = float("nan")

    def fit(self, rep: np.ndarray) -> AEScorer:
        x = np.asarray(rep, dtype=np.float64)
        self.mu, self.sd = x.mean(0), x.std(0) + 1e-8
        xt = torch.as_tensor((x - self.mu) / self.sd, dtype=torch.float32, device=self.device)
        torch.manual_seed(self.seed)
        self.net = autoencoder(x.shape[1], scale=self.scale, bottleneck=self.bottleneck)
        self.net.to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        with single_thread_on_cpu(self.device):
            for _ in range(self.epochs):
                perm = torch.randperm(len(xt), generator=gen).to(self.device)
                total = torch.zeros((), dtype=torch.float64, device=self.device)
                for s in range(0, len(xt), self.batch_size):
                    xb = xt[perm[s:s + self.batch_size]]
                    loss = torch.nn.functional.mse_loss(self.net(xb), xb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.detach().double() * len(xb)  # read once, after training
            self.final_loss = float(total) / len(xt)
        return self

    def score(self, rep: np.ndarray) -> np.ndarray:
        x = (np.asarray(rep, dtype=np.float64) - self.mu) / self.sd
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        out = []
        with torch.no_grad():
            for s in range(0, len(xt), 16384):
                xb = xt[s:s + 16384]
                out.append(((self.net(xb) - xb) ** 2).mean(1).cpu().numpy())
        return np.concatenate(out).astype(np.float64)


def anomaly_scores(rep_train: np.ndarray, y_train: np.ndarray, rep_test: np.ndarray,
                   y_test: np.ndarray, *, seed: int = 0, methods: Sequence[str] = ("znorm", "ae"),
                   train_on: str = "background", ae_scale: float = 1.0, ae_epochs: int = 100,
                   ae_batch_size: int = 4096, device: str | None = None,
                   eps_s: tuple[float, ...] = (0.2, 0.3, 0.5), figures: bool = True,
                   label_names: dict[int, str] | None = None,
                   prefix: str = "anomaly", curves_out: dict[str, Roc] | None = None
                   ) -> EvalResult:
    """Anomaly scores on the test set and their ROC metrics against the test labels.

    rep_*: (n, D) representations; y_*: store labels (-1 unknown, 0 background, >= 1 signal).
    The autoencoder trains on ``rep_train`` (background only unless ``train_on="all"``; the
    unknown-label samples count as background-like data when ``train_on="all"``).
    Metric names are ``<prefix>_znorm_*``, ``<prefix>_ae_*`` (``anomaly_init`` for the untrained
    encoder's reference). ``curves_out`` (a dict) receives each method's ROC curve by method.
    """
    keep_te, yte = binary_labels(y_test)
    x_te = np.asarray(rep_test)[keep_te]
    metrics: dict[str, float] = {}
    curves: dict[str, Roc] = {}
    scores: dict[str, np.ndarray] = {}
    for method in methods:
        if method == "znorm":
            s = znorm_score(x_te)
        elif method == "ae":
            y_tr = np.asarray(y_train).reshape(-1)
            if train_on == "background":
                x_tr = np.asarray(rep_train)[y_tr == 0]
            elif train_on == "all":
                x_tr = np.asarray(rep_train)
            else:
                raise ValueError(f"train_on must be 'background' or 'all', not {train_on!r}")
            ae = AEScorer(scale=ae_scale, epochs=ae_epochs, batch_size=ae_batch_size,
                          seed=seed, device=device).fit(x_tr)
            s = ae.score(x_te)
            metrics[f"{prefix}_ae_final_loss"] = ae.final_loss
        else:
            raise KeyError(f"unknown anomaly score {method!r}; known: ['znorm', 'ae']")
        m, r = roc_metrics(yte, s, f"{prefix}_{method}", eps_s=eps_s)
        metrics.update(m)
        # several signal processes (ADC2021): each one against the background, as the challenge
        metrics.update(per_signal_metrics(np.asarray(y_test)[keep_te], s, f"{prefix}_{method}",
                                          names=label_names, eps_s=eps_s))
        curves[{"znorm": "|z|", "ae": "autoencoder"}[method]] = r
        scores[method] = s
        if curves_out is not None:
            curves_out[method] = r
    figs = {}
    if figures:
        figs["anomaly_roc.png"] = roc_figure(curves, "label-free anomaly scores")
        fig, axes = new_figure(figsize=(5.5 * len(scores), 4.5))
        fig.clear()
        axs = fig.subplots(1, len(scores), squeeze=False)[0]
        for ax, (name, s) in zip(axs, scores.items(), strict=True):
            bins = np.linspace(*np.quantile(s, [0.001, 0.999]), 50)
            for cls, lab in ((0, "background"), (1, "signal")):
                ax.hist(s[yte == cls], bins=bins, density=True, histtype="step", label=lab)
            ax.set_xlabel({"znorm": "|z|", "ae": "reconstruction MSE"}[name])
            ax.set_yscale("log")
            ax.legend(fontsize="small")
        figs["anomaly_scores.png"] = fig
    return EvalResult(metrics=metrics, figures=figs)
