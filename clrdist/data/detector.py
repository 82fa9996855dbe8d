"""A fast, simple calorimeter (``clrdist data generate --detector simple``).

It is not Delphes: no tracker, no magnetic field, no pile-up. It turns the stable visible particles
of an event into calorimeter cells, which are then clustered instead of the particles:

1. Acceptance: particles with |eta| > ``eta_max`` (4.9, the reach of the ATLAS forward
   calorimeter) are lost. Neutrinos and other invisible particles never reach it (the caller
   passes visible particles only).
2. Muons (|id| = 13) do not shower: they are kept as they are (as if measured by a muon system).
3. Every other particle deposits its energy in the cell containing its (eta, phi): a grid of
   ``cell_eta`` x ``cell_phi`` = 0.1 x 0.1 (ATLAS hadronic-calorimeter granularity). Photons and
   electrons (|id| 22, 11) go to the electromagnetic sum of the cell, everything else to the
   hadronic sum.
4. Each cell's EM and hadronic sums are smeared separately with the usual calorimeter resolution
   sigma/E = a / sqrt(E [GeV]) (+) b (+) c / E: EM a = 0.10, b = 0.01, c = 0; hadronic a = 0.50,
   b = 0.03, c = 0 (ATLAS-like). The smeared energy is log-normal with that mean and width, so it
   stays positive.
5. Cells with smeared energy below ``cell_e_min`` (0.5 GeV) are dropped (noise threshold).
6. A surviving cell becomes a massless pseudo-particle at the cell centre with the cell energy.

The output is the list of four-momenta that the jet clustering sees; the jet constituents stored
in a ``--detector simple`` store are these cells (and muons).

Event stores (ADC2021-like) take their isolated leptons from the generator and smear them with
:meth:`SimpleCalorimeter.smear_leptons`: electrons with the EM resolution above (direction
kept), muons' pT with sigma/pT = ``muon_a`` (+) ``muon_b`` * pT (a CMS-like tracker + muon
system: 1% (+) 0.01% / GeV, i.e. 1.4% at 100 GeV).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["SimpleCalorimeter", "DETECTORS"]


@dataclass(frozen=True)
class SimpleCalorimeter:
    cell_eta: float = 0.1  # cell size in pseudorapidity
    cell_phi: float = 0.1  # cell size in azimuth (rounded so that 2 pi is a whole number of cells)
    eta_max: float = 4.9  # calorimeter acceptance |eta|
    em_stochastic: float = 0.10  # a in sigma/E = a/sqrt(E) (+) b (+) c/E for photons and electrons
    em_constant: float = 0.01
    em_noise: float = 0.0  # c, GeV
    had_stochastic: float = 0.50  # the same for hadrons
    had_constant: float = 0.03
    had_noise: float = 0.0
    cell_e_min: float = 0.5  # cells below this smeared energy (GeV) are dropped
    muon_a: float = 0.01  # muon pT resolution: constant term
    muon_b: float = 1.0e-4  # muon pT resolution: term proportional to pT, per GeV

    def to_dict(self) -> dict:
        return {"name": "simple", **asdict(self)}

    def _resolution(self, e: np.ndarray, em: bool) -> np.ndarray:
        a, b, c = (
            (self.em_stochastic, self.em_constant, self.em_noise)
            if em
            else (self.had_stochastic, self.had_constant, self.had_noise)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.sqrt(a**2 / e + b**2 + (c / e) ** 2)
        return np.where(e > 0, rel, 0.0)

    def _smear(self, e: np.ndarray, em: bool, rng: np.random.Generator) -> np.ndarray:
        """Log-normal smearing with mean e and relative width sigma/E."""
        rel = self._resolution(e, em)
        s2 = np.log1p(rel**2)
        out = e * np.exp(rng.standard_normal(e.shape) * np.sqrt(s2) - 0.5 * s2)
        return np.where(e > 0, out, 0.0)

    def smear_leptons(self, kin: np.ndarray, lepton: int, rng: np.random.Generator) -> np.ndarray:
        """(n, 3) (pT, eta, phi) of electrons (``lepton`` 11) or muons (13) -> smeared (pT,
        eta, phi): electrons' energy with the EM resolution (log-normal, as the cells), muons'
        pT with sigma/pT = muon_a (+) muon_b * pT (Gaussian in 1/pT, kept positive)."""
        kin = np.array(kin, dtype=np.float64).reshape(-1, 3)
        pt = kin[:, 0]
        if lepton == 11:
            e = pt * np.cosh(kin[:, 1])
            kin[:, 0] = self._smear(e, True, rng) / np.cosh(kin[:, 1])
        elif lepton == 13:
            rel = np.hypot(self.muon_a, self.muon_b * pt)
            curvature = (1.0 + rel * rng.standard_normal(len(pt))) / np.maximum(pt, 1e-12)
            kin[:, 0] = 1.0 / np.maximum(curvature, 1e-6)
        else:
            raise ValueError(f"smear_leptons: lepton must be 11 or 13, got {lepton}")
        return kin

    def __call__(
        self, p4: np.ndarray, pid: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Visible stable particles -> calorimeter cells and muons.

        p4: (n, 4) (px, py, pz, E) GeV; pid: (n,) PDG ids; rng: the shard's generator.
        Returns (m, 4) four-momenta (cells first, ordered by cell index, then muons).
        """
        p4 = np.asarray(p4, dtype=np.float64)
        pid = np.abs(np.asarray(pid))
        pt = np.hypot(p4[:, 0], p4[:, 1])
        with np.errstate(divide="ignore", invalid="ignore"):
            eta = np.arcsinh(np.where(pt > 0, p4[:, 2] / pt, np.sign(p4[:, 2]) * 1e3))
        phi = np.arctan2(p4[:, 1], p4[:, 0])
        inside = np.abs(eta) < self.eta_max
        muon = inside & (pid == 13)
        calo = inside & ~muon

        n_eta = int(round(2 * self.eta_max / self.cell_eta))
        n_phi = int(round(2 * np.pi / self.cell_phi))
        d_eta = 2 * self.eta_max / n_eta
        d_phi = 2 * np.pi / n_phi
        ie = np.clip(((eta[calo] + self.eta_max) / d_eta).astype(np.int64), 0, n_eta - 1)
        ip = np.clip(((phi[calo] + np.pi) / d_phi).astype(np.int64), 0, n_phi - 1)
        cell = ie * n_phi + ip
        em = np.isin(pid[calo], (11, 22))
        cells, inv = np.unique(cell, return_inverse=True)
        e_calo = p4[calo, 3]
        e_em = np.bincount(inv, weights=np.where(em, e_calo, 0.0), minlength=len(cells))
        e_had = np.bincount(inv, weights=np.where(em, 0.0, e_calo), minlength=len(cells))
        e_cell = self._smear(e_em, True, rng) + self._smear(e_had, False, rng)
        keep = e_cell >= self.cell_e_min
        cells, e_cell = cells[keep], e_cell[keep]
        c_eta = -self.eta_max + (cells // n_phi + 0.5) * d_eta
        c_phi = -np.pi + (cells % n_phi + 0.5) * d_phi
        c_pt = e_cell / np.cosh(c_eta)
        out = np.stack(
            [c_pt * np.cos(c_phi), c_pt * np.sin(c_phi), c_pt * np.sinh(c_eta), e_cell], axis=1
        )
        return np.concatenate([out, p4[muon]], axis=0)


DETECTORS = {"simple": SimpleCalorimeter}
