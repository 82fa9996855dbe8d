"""Each loss against a slow, loop-based evaluation of its formula (single process)."""

import math

import pytest
import torch

from clrdist.config import ConfigError, LossConfig, load_config
from clrdist.factory import build_loss
from clrdist.losses import LOSSES, anomalyclr, anomalyclr_plus, nt_xent, supcon
from clrdist.losses.contrastive import anomaly_norm_push

# the (z1, z2[, z_anom, labels]) losses; dino and orca need the model's inputs and have their
# own tests (tests/test_dino.py, tests/test_orca.py)
CONTRASTIVE = [n for n in LOSSES if not LOSSES[n].needs_inputs]


def cos(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def views(B=6, D=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, D, generator=g, dtype=torch.float64) for _ in range(3)]


def loop_nt_xent(z1, z2, tau, keep_positive):
    """Mean over both views as anchors; denominator all other samples (and the positive if kept)."""
    B = len(z1)
    allz = list(z1) + list(z2)
    total = 0.0
    for a in range(2 * B):
        i = a % B
        pos = a + B if a < B else a - B
        num = math.exp(cos(allz[a], allz[pos]) / tau)
        den = 0.0
        for c in range(2 * B):
            if c == a or (c == pos and not keep_positive):
                continue
            den += math.exp(cos(allz[a], allz[c]) / tau)
        assert i == a % B
        total += -math.log(num / den)
    return total / (2 * B)


@pytest.mark.parametrize("keep_positive", [True, False])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_loop(keep_positive, tau):
    z1, z2, _ = views()
    got = nt_xent(z1, z2, temperature=tau, keep_positive=keep_positive)
    assert got.item() == pytest.approx(loop_nt_xent(z1, z2, tau, keep_positive), rel=1e-9)


def test_decoupled_form_is_reference_formula_for_anchor_i():
    # docs/reference.md:
    # L_i = -log(exp(s(z_i,z'_i)/t) / sum_{j!=i}[exp(s(z_i,z_j)/t) + exp(s(z_i,z'_j)/t)])
    z1, z2, _ = views(B=4)
    tau = 0.2
    Ls = []
    for zi, zp in ((z1, z2), (z2, z1)):
        for i in range(4):
            den = sum(math.exp(cos(zi[i], zi[j]) / tau) + math.exp(cos(zi[i], zp[j]) / tau)
                      for j in range(4) if j != i)
            Ls.append(-math.log(math.exp(cos(zi[i], zp[i]) / tau) / den))
    got = nt_xent(z1, z2, temperature=tau, keep_positive=False).item()
    assert got == pytest.approx(sum(Ls) / len(Ls), rel=1e-9)


@pytest.mark.parametrize("keep_positive", [False, True])
def test_anomalyclr_matches_loop(keep_positive):
    z1, z2, za = views()
    tau, B = 0.1, len(z1)
    Ls = []
    for zi, zp in ((z1, z2), (z2, z1)):
        for i in range(B):
            num = math.exp((cos(zi[i], zp[i]) - cos(zi[i], za[i])) / tau)
            den = sum(math.exp(cos(zi[i], zi[j]) / tau) + math.exp(cos(zi[i], zp[j]) / tau)
                      for j in range(B) if j != i)
            if keep_positive:
                den += math.exp(cos(zi[i], zp[i]) / tau)
            Ls.append(-math.log(num / den))
    out = anomalyclr(z1, z2, za, temperature=tau, keep_positive=keep_positive)
    assert out["loss"].item() == pytest.approx(sum(Ls) / len(Ls), rel=1e-9)
    assert (out["contrastive"] + out["anomaly"]).item() == pytest.approx(out["loss"].item())


def test_anomalyclr_plus_matches_loop():
    z1, z2, za = views()
    tau, B = 0.3, len(z1)
    Ls = [(cos(zi[i], za[i]) - cos(zi[i], zp[i])) / tau for zi, zp in ((z1, z2), (z2, z1))
          for i in range(B)]
    out = anomalyclr_plus(z1, z2, za, temperature=tau)
    assert out["loss"].item() == pytest.approx(sum(Ls) / len(Ls), rel=1e-9)


@pytest.mark.parametrize("labels", [[0, 1, 0, 2, 1, 1], [-1, -1, -1, -1, -1, -1], [3, 3, -1, 0, 3, -1]])
def test_supcon_matches_loop(labels):
    z1, z2, _ = views()
    tau, B = 0.2, len(z1)
    allz = list(z1) + list(z2)
    lab = labels + labels
    total = 0.0
    for a in range(2 * B):
        other = a + B if a < B else a - B
        P = [p for p in range(2 * B) if p != a and (p == other or (lab[p] == lab[a] and lab[a] >= 0))]
        den = sum(math.exp(cos(allz[a], allz[k]) / tau) for k in range(2 * B) if k != a)
        total += -sum(math.log(math.exp(cos(allz[a], allz[p]) / tau) / den) for p in P) / len(P)
    got = supcon(z1, z2, torch.tensor(labels), temperature=tau)
    assert got.item() == pytest.approx(total / (2 * B), rel=1e-9)
    if all(v < 0 for v in labels):  # no labels: SupCon is NT-Xent with the positive kept
        assert got.item() == pytest.approx(nt_xent(z1, z2, temperature=tau).item(), rel=1e-9)


def test_build_loss_registry_and_named_terms():
    z1, z2, za = (v.float() for v in views())
    for name in CONTRASTIVE:
        loss = build_loss(LossConfig(name=name, temperature=0.2))
        out = loss(z1, z2, z_anom=za, labels=torch.tensor([0, 1, 0, 1, 0, 1]))
        assert "loss" in out and out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match="unknown loss 'ntxent'; known: .*nt_xent"):
        LossConfig(name="ntxent")
    with pytest.raises(ValueError, match="anomaly view"):
        build_loss(LossConfig(name="anomalyclr"))(z1, z2)
    with pytest.raises(ValueError, match="labels"):
        build_loss(LossConfig(name="supcon"))(z1, z2)


def test_low_precision_projections_are_computed_in_float32():
    z1, z2, za = views()
    for name in CONTRASTIVE:
        loss = build_loss(LossConfig(name=name, temperature=0.1))
        ref = loss(z1.float(), z2.float(), z_anom=za.float(), labels=torch.tensor([0, 1, 0, 1, 0, 1]))
        zb = [v.bfloat16().requires_grad_() for v in (z1, z2, za)]
        got = loss(*zb[:2], z_anom=zb[2], labels=torch.tensor([0, 1, 0, 1, 0, 1]))
        assert got["loss"].dtype == torch.float32
        assert abs(got["loss"].item() - ref["loss"].item()) < 0.05 * abs(ref["loss"].item()) + 0.05
        got["loss"].backward()
        assert zb[0].grad is not None and zb[0].grad.dtype == torch.bfloat16


def test_each_loss_defaults_to_its_published_denominator(tmp_path):
    """A config that leaves keep_positive out gets the loss's paper form: NT-Xent (SimCLR /
    JetCLR code) keeps the positive, AnomalyCLR drops it; an explicit value still wins."""
    from clrdist.config import load_config

    (tmp_path / "c.yaml").write_text("loss: {name: anomalyclr, temperature: 0.2}\n")
    cfg = load_config(tmp_path / "c.yaml")
    loss = build_loss(cfg.loss)
    assert loss.keep_positive is False
    z1, z2, za = views()
    got = loss(z1, z2, za)["loss"]
    published = anomalyclr(z1, z2, za, temperature=0.2, keep_positive=False)["loss"]
    kept = anomalyclr(z1, z2, za, temperature=0.2, keep_positive=True)["loss"]
    assert got.item() == pytest.approx(published.item(), rel=1e-12)
    assert abs(got.item() - kept.item()) > 1e-3
    assert build_loss(LossConfig(name="nt_xent")).keep_positive is True
    assert build_loss(LossConfig(name="anomalyclr", keep_positive=True)).keep_positive is True
    assert build_loss(LossConfig(name="nt_xent", keep_positive=False)).keep_positive is False


@pytest.mark.parametrize("name", CONTRASTIVE)
def test_norm_penalty_adds_the_mean_norm_of_the_first_view_and_only_it_acts_on_the_norm(name):
    """DarkCLR's |z| term: loss + w x mean_i |z1_i|. The cosine terms cannot see a view's scale,
    so only the penalty's gradient shrinks z1, and z2 / z_anom get none from it."""
    z1, z2, za = views()
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    plain = build_loss(LossConfig(name=name, temperature=0.2))
    w = 1e-3
    penalised = build_loss(LossConfig(name=name, temperature=0.2, norm_penalty=w))
    base = plain(z1, z2, z_anom=za, labels=labels)
    leaves = [v.clone().requires_grad_() for v in (z1, z2, za)]
    out = penalised(leaves[0], leaves[1], z_anom=leaves[2], labels=labels)
    mean_norm = sum(float(v.norm()) for v in z1) / len(z1)
    assert out["norm"].item() == pytest.approx(mean_norm, rel=1e-9)
    assert out["loss"].item() == pytest.approx(base["loss"].item() + w * mean_norm, rel=1e-9)
    assert "norm" not in base
    out["loss"].backward()
    # the radial part of each gradient: the cosine terms contribute none, the penalty w / B
    grads = [torch.zeros_like(x) if x.grad is None else x.grad for x in leaves]  # za: unused
    radial = [(g * v).sum(1) / v.norm(dim=1) for g, v in zip(grads, (z1, z2, za), strict=True)]
    assert torch.allclose(radial[0], torch.full_like(radial[0], w / len(z1)), atol=1e-12)
    assert torch.allclose(radial[1], torch.zeros_like(radial[1]), atol=1e-12)
    assert torch.allclose(radial[2], torch.zeros_like(radial[2]), atol=1e-12)
    with pytest.raises(ValueError, match="norm_penalty"):
        LossConfig(name=name, norm_penalty=-1e-3)
    # the epoch's collapse check compares the loss with a collapsed projection's: not with a
    # penalty the collapse value does not hold
    if name == "nt_xent":
        assert plain.collapse_value(8) is not None and penalised.collapse_value(8) is None


@pytest.mark.parametrize("name", ["anomalyclr", "anomalyclr_plus"])
def test_anomaly_norm_pushes_the_anomaly_views_representation_longer_than_its_jets(name):
    """loss.anomaly_norm: + w x mean_v,i softplus(log|r_v,i| - log|r*_i|) on the representations
    (what |z| scores), not the projections: log 2 at equal lengths, blind to a common scale,
    and its gradient lengthens r* and shortens the physical views' r."""
    z1, z2, za = views()
    r1, r2, ra = views(D=7, seed=1)
    w = 0.5
    plain = build_loss(LossConfig(name=name, temperature=0.2))
    pushed = build_loss(LossConfig(name=name, temperature=0.2, anomaly_norm=w))
    assert pushed.needs_inputs and not plain.needs_inputs  # the step passes reps only then
    leaves = [v.clone().requires_grad_() for v in (r1, r2, ra)]
    out = pushed(z1, z2, za, reps=tuple(leaves))
    by_hand = sum(math.log1p(math.exp(math.log(float(r[i].norm())) - math.log(float(ra[i].norm()))))
                  for r in (r1, r2) for i in range(len(ra))) / (2 * len(ra))
    assert out["anomaly_norm"].item() == pytest.approx(by_hand, rel=1e-9)
    assert out["loss"].item() == pytest.approx(plain(z1, z2, za)["loss"].item() + w * by_hand, rel=1e-9)
    assert anomaly_norm_push([r1 * 7, r2 * 7], ra * 7).item() == pytest.approx(by_hand, rel=1e-6)
    assert anomaly_norm_push([ra], ra).item() == pytest.approx(math.log(2), rel=1e-6)
    out["loss"].backward()
    radial = [(v.grad * v).sum(1) for v in leaves]  # d loss / d log|r|, per sample
    assert (radial[0] > 0).all() and (radial[1] > 0).all() and (radial[2] < 0).all()
    with pytest.raises(ValueError, match="representations"):
        pushed(z1, z2, za)


@pytest.mark.parametrize("name", ["nt_xent", "supcon"])
def test_anomaly_norm_is_refused_without_an_anomaly_view(name):
    with pytest.raises(ValueError, match="anomaly_norm needs a loss with an anomaly view"):
        LossConfig(name=name, anomaly_norm=1.0)
    with pytest.raises(ConfigError, match=f"^<defaults>: loss: .*anomaly_norm needs .* not '{name}'"):
        load_config(None, [f"loss.name={name}", "loss.anomaly_norm=1"])
    with pytest.raises(ValueError, match="anomaly_norm"):
        LossConfig(name="anomalyclr", anomaly_norm=-1.0)
