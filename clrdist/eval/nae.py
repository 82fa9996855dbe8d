"""Normalised autoencoder (NAE): an autoencoder turned into an energy-based model.

Yoon, Noh, Park, "Autoencoding under normalization constraints" (arXiv:2105.05735); for jet
images Dillon, Favaro, Plehn, Sorrenson, Kraemer, arXiv:2206.14225. The energy of a sample is
its reconstruction error, E(x) = |x - D(E(x))|^2 / (d T), and the model density
p(x) = exp(-E(x)) / Z. Maximum likelihood gives the loss

    L = E(x+) - E(x-) + gamma (E(x+)^2 + E(x-)^2)

with x+ the training (background) samples and x- samples of the model, drawn by Langevin
dynamics with the on-manifold initialisation of Yoon et al.: z0 uniform on the latent sphere,
``z_steps`` Langevin steps in latent space on E(D(z)), then ``x_steps`` Langevin steps in input
space on E(x) starting at D(z). One Langevin step: x <- x - step grad E(x) + noise N(0, 1).
The NAE phase starts from an autoencoder pre-trained by plain MSE (``ae_epochs``).

Anomaly score: E(x) on the test set. ``nae_evaluation`` runs it on representations (prefix
``nae_rep_``) and, for jet stores, on jet images (``nae_images_``, the DarkCLR comparison row:
NAE on jet images AUC 0.76, 1/eps_B(0.2) = 41 on semi-visible vs QCD jets).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from clrdist.eval.jetimages import (
    IMAGE_EXTENT,
    IMAGE_SIZE,
    ConvAE,
    fit_autoencoder,
    jet_images,
    signal_metrics,
)
from clrdist.eval.metrics import EvalResult
from clrdist.eval.nplm.network import single_thread_on_cpu


class MLPAE(nn.Module):
    """(B, dim) -> (B, dim): dim-h-h-latent (ReLU) and mirrored decoder; latent on the unit
    sphere when ``spherical``."""

    def __init__(self, dim: int, hidden: int = 64, latent: int = 8, spherical: bool = True):
        super().__init__()
        self.spherical, self.latent = spherical, latent
        self.enc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        z = self.enc(x)
        return nn.functional.normalize(z, dim=1) if self.spherical else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def energy(net: nn.Module, x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """E(x) = mean squared reconstruction error / T, shape (B,)."""
    return ((net(x) - x) ** 2).flatten(1).mean(1) / temperature


def langevin(f, x0: torch.Tensor, *, steps: int, step_size: float, noise: float,
             generator: torch.Generator, clamp: tuple[float, float] | None = None,
             sphere: bool = False) -> torch.Tensor:
    """``steps`` of x <- x - step_size grad f(x) + noise N(0, 1); f: (B, ...) -> (B,). Projected
    back onto the unit sphere (``sphere``) or into ``clamp`` after every step; no graph kept."""
    x = x0.detach()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(f(x).sum(), x)
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = (x - step_size * grad + noise * eps).detach()
        if sphere:
            x = nn.functional.normalize(x, dim=1)
        if clamp is not None:
            x = x.clamp(*clamp)
    return x


def sample_negatives(net: nn.Module, n: int, *, generator: torch.Generator, z_steps: int = 20,
                     z_step: float = 0.1, z_noise: float = 0.02, x_steps: int = 20,
                     x_step: float = 0.01, x_noise: float = 0.005, temperature: float = 1.0,
                     clamp: tuple[float, float] | None = None) -> torch.Tensor:
    """On-manifold negative samples (n, ...): Langevin in latent space on E(D(z)) from z0 uniform
    on the sphere, then Langevin in input space on E(x) from D(z)."""
    was_training = net.training
    net.eval()
    z0 = nn.functional.normalize(torch.randn(n, net.latent, generator=generator,
                                             device=generator.device), dim=1)
    z = langevin(lambda z: energy(net, net.decode(z), temperature), z0, steps=z_steps,
                 step_size=z_step, noise=z_noise, generator=generator, sphere=True)
    with torch.no_grad():
        x0 = net.decode(z)
    x = langevin(lambda x: energy(net, x, temperature), x0, steps=x_steps, step_size=x_step,
                 noise=x_noise, generator=generator, clamp=clamp)
    net.train(was_training)
    return x


def nae_loss(e_pos: torch.Tensor, e_neg: torch.Tensor, gamma: float) -> torch.Tensor:
    """E(x+) - E(x-) + gamma (E(x+)^2 + E(x-)^2), means over the batches."""
    return e_pos.mean() - e_neg.mean() + gamma * ((e_pos ** 2).mean() + (e_neg ** 2).mean())


class NAE:
    """Fit a normalised autoencoder on background samples and score by energy.

    ``net``: a module with ``encode``/``decode``, a spherical latent of size ``latent``.
    """

    def __init__(self, net: nn.Module, *, ae_epochs: int = 20, nae_steps: int = 200,
                 batch_size: int = 128, lr: float = 1e-3, nae_lr: float = 1e-4,
                 gamma: float = 1.0, temperature: float = 1.0, seed: int = 0,
                 clamp: tuple[float, float] | None = None, langevin: Mapping | None = None,
                 device: str | None = None):
        self.device = torch.device(device or "cpu")
        self.net, self.ae_epochs, self.nae_steps = net.to(self.device), ae_epochs, nae_steps
        self.batch_size, self.lr, self.nae_lr = batch_size, lr, nae_lr
        self.gamma, self.temperature, self.seed, self.clamp = gamma, temperature, seed, clamp
        self.langevin = dict(langevin or {})
        self.history: list[dict[str, float]] = []

    def fit(self, x: np.ndarray) -> NAE:
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        torch.manual_seed(self.seed)
        self.ae_loss = fit_autoencoder(self.net, xt.numpy(), epochs=self.ae_epochs,
                                       batch_size=self.batch_size, lr=self.lr, seed=self.seed)
        xt = xt.to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.nae_lr)
        # random numbers drawn on the device (the CPU's stream is the one it always was)
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        energies = []
        with single_thread_on_cpu(self.device):
            for _ in range(self.nae_steps):
                idx = torch.randint(len(xt), (min(self.batch_size, len(xt)),), generator=gen,
                                    device=self.device)
                neg = sample_negatives(self.net, len(idx), generator=gen,
                                       temperature=self.temperature, clamp=self.clamp,
                                       **self.langevin)
                e_pos = energy(self.net, xt[idx], self.temperature)
                e_neg = energy(self.net, neg, self.temperature)
                loss = nae_loss(e_pos, e_neg, self.gamma)
                opt.zero_grad()
                loss.backward()
                opt.step()
                energies.append(torch.stack([e_pos.detach().mean(), e_neg.detach().mean()]))
        # read back once, after training (no host sync per step)
        for e_pos, e_neg in torch.stack(energies).tolist() if energies else []:
            self.history.append({"e_pos": e_pos, "e_neg": e_neg})
        return self

    @torch.no_grad()
    def score(self, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Energy E(x) (n,) float64: the anomaly score."""
        self.net.eval()
        xt = torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)
        return torch.cat([energy(self.net, xt[s:s + batch_size], self.temperature)
                          for s in range(0, len(xt), batch_size)]).cpu().numpy().astype(np.float64)


def _nae_kwargs(kw: Mapping) -> dict:
    keys = ("ae_epochs", "nae_steps", "batch_size", "lr", "nae_lr", "gamma", "temperature",
            "langevin")
    return {k: kw[k] for k in keys if k in kw}


def nae_evaluation(rep_train: np.ndarray, y_train: np.ndarray, rep_test: np.ndarray,
                   y_test: np.ndarray, *, train_data: Mapping[str, np.ndarray] | None = None,
                   test_data: Mapping[str, np.ndarray] | None = None, seed: int = 0,
                   on: tuple[str, ...] = ("rep", "images"), hidden: int = 64, latent: int = 8,
                   image_size: int = IMAGE_SIZE, image_extent: float = IMAGE_EXTENT,
                   image_latent: int = 32, channels: int = 8, max_samples: int | None = None,
                   label_names: Mapping[int, str] | None = None, device: str | None = None,
                   **kw) -> EvalResult:
    """NAE anomaly scores trained on the training set's background (label 0).

    on: ``rep`` (standardised representations, MLP AE) and/or ``images`` (jet images of
    ``train_data`` / ``test_data`` scaled by one global factor, conv AE, samples clamped >= 0).
    Other keywords go to :class:`NAE` (``ae_epochs``, ``nae_steps``, ``gamma``, ...);
    ``device``: where the NAEs train (default CPU).
    Metrics ``nae_<on>_*`` (``signal_metrics``), ``nae_<on>_e_pos``, ``nae_<on>_e_neg`` (mean
    energies of data and negative samples over the last 10 NAE steps).
    """
    metrics: dict[str, float] = {}
    ytr, yte = np.asarray(y_train)[:max_samples], np.asarray(y_test)[:max_samples]
    for what in on:
        if what == "rep":
            xtr = np.asarray(rep_train, np.float64)[:max_samples][ytr == 0]
            mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
            xtr = (xtr - mu) / sd
            xte = (np.asarray(rep_test, np.float64)[:max_samples] - mu) / sd
            torch.manual_seed(seed)
            net: nn.Module = MLPAE(xtr.shape[1], hidden, latent)
            clamp = None
        elif what == "images":
            if train_data is None or test_data is None:
                raise ValueError("nae on images needs train_data and test_data (jet stores)")
            keep = ytr == 0
            xtr = jet_images(train_data["particles"][:max_samples][keep],
                             train_data["mask"][:max_samples][keep], size=image_size,
                             extent=image_extent)[:, None]
            xte = jet_images(test_data["particles"][:max_samples],
                             test_data["mask"][:max_samples], size=image_size,
                             extent=image_extent)[:, None]
            scale = float(xtr.std()) or 1.0
            xtr, xte = xtr / scale, xte / scale
            torch.manual_seed(seed)
            net = ConvAE(image_size, channels, image_latent, spherical=True)
            clamp = (0.0, float(xtr.max()))
        else:
            raise KeyError(f"nae: unknown input {what!r}; known: ['rep', 'images']")
        nae = NAE(net, seed=seed, clamp=clamp, device=device, **_nae_kwargs(kw)).fit(xtr)
        s = nae.score(xte)
        metrics.update(signal_metrics(yte, s, f"nae_{what}", label_names))
        tail = nae.history[-10:] or [{"e_pos": float("nan"), "e_neg": float("nan")}]
        metrics[f"nae_{what}_e_pos"] = float(np.mean([h["e_pos"] for h in tail]))
        metrics[f"nae_{what}_e_neg"] = float(np.mean([h["e_neg"] for h in tail]))
    return EvalResult(metrics=metrics)
