"""The model frame of a jet: eta, phi relative to the pT-weighted centroid, pT in GeV.

Stores hold absolute (pT, eta, phi); the model sees jets centred on their pT-weighted
centroid (phi differences wrapped into (-pi, pi]) and, last, pT divided by ``data.pt_scale``.
Augmentations act between the two steps (they need pT in GeV: the soft-smearing width is
Lambda_soft / pT).
"""

from __future__ import annotations

import math

import torch

from clrdist.physics import INPUT_FEATURES

__all__ = ["wrap_phi", "centroid", "to_model_frame", "scale_pt", "keep_hardest", "input_features",
           "INPUT_FEATURES"]


def wrap_phi(phi: torch.Tensor) -> torch.Tensor:
    """Angles wrapped into (-pi, pi]."""
    out = torch.remainder(phi + math.pi, 2 * math.pi) - math.pi  # [-pi, pi)
    return torch.where(out <= -math.pi, out + 2 * math.pi, out)


def centroid(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """pT-weighted centroid (B, 2) of (eta, phi) in a frame where phi needs no wrapping.

    x: (B, P, >=3) [pT, eta, phi]; mask: (B, P) bool. Rows without pT give (0, 0).
    """
    w = x[..., 0] * mask
    wsum = w.sum(-1, keepdim=True)
    w = w / wsum.clamp_min(torch.finfo(x.dtype).tiny)
    return (w.unsqueeze(-1) * x[..., 1:3]).sum(1)  # not einsum: a batch of tiny bmm is slow on CPU


def to_model_frame(particles: torch.Tensor, mask: torch.Tensor,
                   jet_axis: torch.Tensor | None = None) -> torch.Tensor:
    """particles: (B, P, F>=3) float, [pT GeV, absolute eta, phi, ...]; mask: (B, P) bool.

    Returns (B, P, F) with eta, phi relative to the pT-weighted centroid (or to ``jet_axis``,
    (B, 2) eta, phi, when given), phi differences wrapped into (-pi, pi], pT still in GeV, extra
    features untouched, padding all zeros.
    """
    x = particles
    m = mask.to(torch.bool)
    pt, eta, phi = x[..., 0], x[..., 1], x[..., 2]
    if jet_axis is None:
        # phi is circular: measure differences from the hardest constituent first, so a jet that
        # straddles phi = +-pi is averaged correctly, then take the pT-weighted mean.
        lead = torch.where(m, pt, torch.full_like(pt, -1.0)).argmax(-1, keepdim=True)
        phi_ref = phi.gather(-1, lead)
        dphi = wrap_phi(phi - phi_ref)
        w = pt * m
        wsum = w.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        eta_c = (w * eta).sum(-1, keepdim=True) / wsum
        phi_c = phi_ref + (w * dphi).sum(-1, keepdim=True) / wsum
    else:
        eta_c, phi_c = jet_axis[:, 0:1].to(x.dtype), jet_axis[:, 1:2].to(x.dtype)
    out = x.clone()
    out[..., 1] = eta - eta_c
    out[..., 2] = wrap_phi(phi - phi_c)
    return torch.where(m.unsqueeze(-1), out, torch.zeros((), dtype=out.dtype, device=out.device))


def scale_pt(x: torch.Tensor, pt_scale: float) -> torch.Tensor:
    """x: (B, P, F) with pT (GeV) in column 0 -> a copy with pT / pt_scale (JetCLR: 600 GeV)."""
    out = x.clone()
    out[..., 0] = x[..., 0] / pt_scale
    return out


def keep_hardest(x: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n highest-pT real slots of each row, hardest first (padding last): (B, n, F), (B, n).

    Views made on more slots than the model sees (``augment.slots``) are cut back this way, so
    collinear splits and smearing decide which soft constituents the model gets. A fixed-width
    top-k: no output shape depends on the data (no host sync on a GPU). Rows of at most n slots
    are returned as they are (the encoder does not depend on the order of its inputs, and fixed
    layouts such as the ADC2021 event rows keep their places).
    """
    if x.shape[1] <= n:
        return x, mask
    key = torch.where(mask, x[..., 0], torch.full_like(x[..., 0], -1.0))
    order = key.topk(n, dim=1).indices  # sorted: hardest first, padding (key -1) last
    return x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1])), mask.gather(1, order)


_ANGLE = 5.0  # eta, phi offsets and Delta R in units of 0.2 (a jet of R = 0.8 spans about +-4)
_BOOST_ANGLE = 0.5  # boost: in units of 2 theta_J (a jet's core spans about +-2)


def input_features(x: torch.Tensor, mask: torch.Tensor, kind: str, pt_scale: float) -> torch.Tensor:
    """x: (B, P, F>=3) in the model frame, pT in GeV -> model inputs (B, P, W + F - 3).

    kind "pt" (JetCLR): [pT / pt_scale, d_eta, d_phi]. kind "log" (as Particle Transformer):
    [z, 0.7 (ln z + 4.7), 0.7 (ln pT/GeV - 1.7), 5 d_eta, 5 d_phi, 5 Delta R] with z = pT / sum pT
    of the jet, each of order one for R = 0.8 jets. kind "ptfrac": "log" without ln pT, so no
    absolute scale: what a bump hunt in m_jj may see (its SR-vs-sideband classifier learns any
    m_jj information in its inputs; clrdist/eval/bumphunt/). kind "boost": "ptfrac" with the
    angles in units of 2 theta_J, the jet's own angular size (:func:`jet_angular_size`), so no absolute angle
    either: a jet's angular size shrinks as m/pT, which is how a ptfrac representation still
    knows m_jj. Column 0 is linear in pT in all (pT-weighted pooling and the log-pT attention
    bias read it). Extra store features follow unchanged;
    padding is zero.
    """
    if kind == "pt":
        return scale_pt(x, pt_scale)
    if kind not in ("log", "ptfrac", "boost"):
        raise ValueError(f"unknown input features {kind!r}; known: {', '.join(INPUT_FEATURES)}")
    tiny = torch.finfo(x.dtype).tiny
    pt = x[..., 0]
    z = pt / (pt * mask).sum(1, keepdim=True).clamp_min(tiny)
    # boost: angles in units of 2 theta_J, the same for every angle x kappa (a boost along the
    # jet axis at small angles); else in units of 0.2
    unit = _BOOST_ANGLE / _angular_size(z * mask, x[..., 1:3]) if kind == "boost" else _ANGLE
    deta, dphi = x[..., 1], x[..., 2]
    cols = [z, 0.7 * (torch.log(z.clamp_min(tiny)) + 4.7), 0.7 * (torch.log(pt.clamp_min(tiny)) - 1.7),
            unit * deta, unit * dphi, unit * torch.sqrt(deta.square() + dphi.square())]
    if kind != "log":  # no absolute scale: the same inputs for a jet with every pT x lambda
        del cols[2]
    out = torch.cat([torch.stack(cols, -1), x[..., 3:]], -1)
    return torch.where(mask.unsqueeze(-1), out, torch.zeros((), dtype=out.dtype, device=out.device))


def jet_angular_size(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, 1) the pT-weighted angular spread of each jet, theta_J = sqrt(sum_ij z_i z_j
    Delta R_ij^2 / 2), with z the pT fractions: m_J / pT_J for massless constituents at small
    angles. Computed as sum_i z_i |r_i|^2 - |sum_i z_i r_i|^2 (r = (d_eta, d_phi)): O(P), and
    the same wherever the frame's origin is."""
    pt = x[..., 0] * mask
    return _angular_size(pt / pt.sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny),
                         x[..., 1:3])


def _angular_size(z: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """theta_J (B, 1) from the pT fractions z (B, P; zero for padding) and angles r (B, P, 2)."""
    mean = (z.unsqueeze(-1) * r).sum(1)  # (B, 2)
    spread = (z * r.square().sum(-1)).sum(1) - mean.square().sum(-1)
    return spread.clamp_min(0).sqrt().clamp_min(1e-6).unsqueeze(1)

