"""Jet images and the convolutional autoencoder whose reconstruction error is an anomaly score.

Images (Bradshaw, Chang, Ostdiek, arXiv:2203.01343, following the preprocessing of Macaluso and
Shih, arXiv:1803.00107, and the image autoencoder of Heimel et al., arXiv:1808.08979): every jet's
constituents (pT GeV, eta, phi) are

1. centred on the pT-weighted centroid (phi differences wrapped),
2. rotated so that the principal axis of the pT-weighted inertia tensor points vertically,
3. flipped so that the pT-weighted half-planes x > 0 and y > 0 hold the larger pT,
4. binned into ``size`` x ``size`` pixels over [-extent, extent]^2 (40 x 40, extent 1.0: the
   papers' size) with pixel intensity = sum of pT, divided by the jet's total pT (sum 1).

``ConvAE`` is a small convolutional autoencoder (conv-pool x 2, dense bottleneck, mirrored
decoder); ``image_ae_scores`` trains it on background images by MSE and scores by the per-image
reconstruction error. Metric names ``images_ae_*`` (``roc_metrics`` suffixes), one set per
signal label ``images_ae_<signal>_*`` when the store holds several signals.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from clrdist.eval.metrics import EvalResult, per_signal_metrics, roc_metrics
from clrdist.eval.nplm.network import single_thread_on_cpu

IMAGE_SIZE = 40  # pixels per side (Heimel et al., Bradshaw et al.)
IMAGE_EXTENT = 1.0  # half-width of the image in eta and phi


def preprocess(particles: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, rotate, flip: (n, P, >=3) [pT, eta, phi] + (n, P) mask -> (x, y, w) each (n, P),
    x and y the image coordinates, w = pT / sum pT (0 for padding)."""
    p = np.asarray(particles, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    pt = np.where(m, p[..., 0], 0.0)
    w = pt / np.maximum(pt.sum(1, keepdims=True), 1e-12)
    eta = np.where(m, p[..., 1], 0.0)
    lead = np.argmax(pt, 1)[:, None]
    phi0 = np.take_along_axis(p[..., 2], lead, 1)  # wrap relative to the hardest, then centre
    dphi = np.where(m, (p[..., 2] - phi0 + np.pi) % (2 * np.pi) - np.pi, 0.0)
    x = eta - (w * eta).sum(1, keepdims=True)
    y = dphi - (w * dphi).sum(1, keepdims=True)
    # principal axis: eigenvector of the largest eigenvalue of the pT-weighted inertia tensor
    sxx, syy, sxy = (w * x * x).sum(1), (w * y * y).sum(1), (w * x * y).sum(1)
    theta = 0.5 * np.arctan2(2 * sxy, sxx - syy)  # angle of the principal axis from x
    rot = np.pi / 2 - theta  # rotate it onto the y axis
    c, s = np.cos(rot)[:, None], np.sin(rot)[:, None]
    x, y = c * x - s * y, s * x + c * y
    x = np.where((w * (x > 0)).sum(1, keepdims=True) < (w * (x < 0)).sum(1, keepdims=True), -x, x)
    y = np.where((w * (y > 0)).sum(1, keepdims=True) < (w * (y < 0)).sum(1, keepdims=True), -y, y)
    return np.where(m, x, 0.0), np.where(m, y, 0.0), w


def jet_images(particles: np.ndarray, mask: np.ndarray, *, size: int = IMAGE_SIZE,
               extent: float = IMAGE_EXTENT) -> np.ndarray:
    """pT-weighted jet images (n, size, size) float32, rows = y (vertical), columns = x; each
    image sums to the fraction of the jet's pT inside [-extent, extent]^2 (1 for most jets)."""
    x, y, w = preprocess(particles, mask)
    n = len(w)
    ix = np.floor((x + extent) / (2 * extent) * size).astype(np.int64)
    iy = np.floor((y + extent) / (2 * extent) * size).astype(np.int64)
    inside = (w > 0) & (ix >= 0) & (ix < size) & (iy >= 0) & (iy < size)
    flat = np.zeros(n * size * size, np.float64)
    jet = np.broadcast_to(np.arange(n)[:, None], w.shape)
    np.add.at(flat, (jet * size * size + iy * size + ix)[inside], w[inside])
    return flat.reshape(n, size, size).astype(np.float32)


class ConvAE(nn.Module):
    """(B, 1, S, S) -> (B, 1, S, S); S divisible by 4. ``latent``-dimensional bottleneck, on the
    unit sphere when ``spherical`` (the normalised autoencoder's latent space)."""

    def __init__(self, size: int = IMAGE_SIZE, channels: int = 8, latent: int = 32,
                 spherical: bool = False):
        super().__init__()
        if size % 4:
            raise ValueError(f"image size {size} must be divisible by 4")
        c, q = channels, size // 4
        self.shape = (2 * c, q, q)
        self.spherical = spherical
        self.enc = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(2 * c * q * q, latent))
        self.dec_in = nn.Sequential(nn.Linear(latent, 2 * c * q * q), nn.ReLU())
        self.dec = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * c, c, 3, padding=1), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(c, 1, 3, padding=1))
        self.latent = latent

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        return nn.functional.normalize(z, dim=1) if self.spherical else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(self.dec_in(z).view(-1, *self.shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def per_sample_mse(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Reconstruction error (B,) = mean over all but the batch axis of (net(x) - x)^2."""
    return ((net(x) - x) ** 2).flatten(1).mean(1)


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def fit_autoencoder(net: nn.Module, x: np.ndarray, *, epochs: int, batch_size: int = 256,
                    lr: float = 1e-3, seed: int = 0) -> float:
    """Train ``net`` on ``x`` by MSE (Adam) on the device ``net`` lives on; returns the last
    epoch's mean loss (read back once per epoch)."""
    dev = _device_of(net)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    last = float("nan")
    with single_thread_on_cpu(dev):
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen).to(dev)
            total = torch.zeros((), dtype=torch.float64, device=dev)
            for s in range(0, len(xt), batch_size):
                xb = xt[perm[s:s + batch_size]]
                loss = per_sample_mse(net, xb).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.detach().double() * len(xb)
            last = float(total) / len(xt)
    return last


@torch.no_grad()
def score_autoencoder(net: nn.Module, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Per-sample reconstruction error (n,) float64, on the device ``net`` lives on."""
    dev = _device_of(net)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)
    return torch.cat([per_sample_mse(net, xt[s:s + batch_size])
                      for s in range(0, len(xt), batch_size)]).cpu().numpy().astype(np.float64)


def signal_metrics(label: np.ndarray, score: np.ndarray, prefix: str,
                   label_names: Mapping[int, str] | None = None,
                   eps_s: tuple[float, ...] = (0.2, 0.3, 0.5)) -> dict[str, float]:
    """ROC metrics of ``score`` for all signals (label >= 1) against background (label 0) as
    ``{prefix}_*`` and, when there are several signal labels, for each one against background as
    ``{prefix}_<signal name>_*`` (``metrics.per_signal_metrics``). Labels < 0 are ignored."""
    label = np.asarray(label).reshape(-1)
    keep = label >= 0
    out, _ = roc_metrics((label[keep] > 0).astype(int), np.asarray(score)[keep], prefix,
                         eps_s=eps_s)
    out.update(per_signal_metrics(label, score, prefix, names=dict(label_names or {}),
                                  eps_s=eps_s))
    return out


def image_ae_scores(train_data: Mapping[str, np.ndarray], test_data: Mapping[str, np.ndarray], *,
                    seed: int = 0, size: int = IMAGE_SIZE, extent: float = IMAGE_EXTENT,
                    channels: int = 8, latent: int = 32, epochs: int = 30,
                    batch_size: int = 64, lr: float = 1e-3, max_samples: int | None = None,
                    label_names: Mapping[int, str] | None = None,
                    return_model: bool = False, device: str | None = None):
    """Convolutional AE on the training set's background (label 0) jet images; anomaly score of
    every test jet = its image's reconstruction MSE, fitted and scored on ``device`` (default
    CPU). Returns an EvalResult (and, with ``return_model``, also ``(net, test images, test
    scores)`` for the mimickers)."""
    tr = _first(train_data, max_samples)
    te = _first(test_data, max_samples)
    bkg = np.asarray(tr["label"]) == 0
    if not bkg.any():
        raise ValueError("image autoencoder: the training set has no background (label 0) jets")
    img_tr = jet_images(tr["particles"][bkg], tr["mask"][bkg], size=size, extent=extent)
    img_te = jet_images(te["particles"], te["mask"], size=size, extent=extent)
    scale = float(img_tr.std()) or 1.0  # one global factor: pixel values of order 1
    torch.manual_seed(seed)
    net = ConvAE(size, channels, latent).to(device or "cpu")
    loss = fit_autoencoder(net, img_tr[:, None] / scale, epochs=epochs, batch_size=batch_size,
                           lr=lr, seed=seed)
    score = score_autoencoder(net, img_te[:, None] / scale)
    metrics = signal_metrics(te["label"], score, "images_ae", label_names)
    metrics.update(images_ae_final_loss=loss, images_n_train=float(bkg.sum()),
                   images_n_test=float(len(score)))
    res = EvalResult(metrics=metrics)
    return (res, (net, img_te, score, scale)) if return_model else res


def _first(data: Mapping[str, np.ndarray], n: int | None) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:n] if n else np.asarray(v) for k, v in data.items()}
