"""ORCA: partners and terms against loops, 2 gloo processes against 1, the open-world metrics."""

import itertools
import math

import numpy as np
import pytest
import torch
from _gloo import ddp_vs_one_process, on_ranks

from clrdist.config import LossConfig, ModelConfig
from clrdist.eval.openworld import cluster_accuracy, openworld_evaluation
from clrdist.factory import build_loss, build_model
from clrdist.losses.orca import ORCALoss

KNOWN = [0, 1]


def draws(seed, step, N, frac):
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.rand(N, generator=gen) < frac, torch.rand(N, N, generator=gen)


def slow_orca(l1, l2, rep, labels, known, frac, margin_u, scale=10.0, seed=0, step=0, tau=1.0):
    """The loss for one process, sample by sample."""
    N, C = l1.shape
    draw, rand = draws(seed, step, N, frac)
    head = [known.index(int(y)) if int(y) in known else -1 for y in labels]
    lab = [head[i] >= 0 and bool(draw[i]) for i in range(N)]
    f = [r / r.norm() for r in rep]

    def softmax(v):
        e = [math.exp(float(x) / (scale * tau)) for x in v]
        return [x / sum(e) for x in e]

    p1, p2 = [softmax(r) for r in l1], [softmax(r) for r in l2]
    pair, ce, n_lab = 0.0, 0.0, sum(lab)
    for i in range(N):
        if lab[i]:
            cands = [j for j in range(N) if j != i and lab[j] and head[j] == head[i]]
            j = max(cands, key=lambda c: float(rand[i, c])) if cands else i
            logits = [float(l1[i, k]) + (scale * margin_u if k == head[i] else 0.0) for k in range(C)]
            ce += -(logits[head[i]] - math.log(sum(math.exp(x) for x in logits)))
        else:
            j = max((c for c in range(N) if c != i), key=lambda c: float(f[i] @ f[c]))
        pair += -math.log(sum(a * b for a, b in zip(p1[i], p2[j], strict=True)))
    pbar = [sum(p[k] for p in p1) / N for k in range(C)]
    entropy = -sum(p * math.log(p) for p in pbar)
    conf = [max(p) for p in p1]
    unc = 1 - np.mean([conf[i] for i in range(N) if not lab[i]])
    return ce / max(n_lab, 1) + pair / N - entropy, unc


@pytest.mark.parametrize("tau", [1.0, 0.1])  # 1: ORCA's code (softmax of the raw cosines)
def test_orca_matches_the_slow_formula(tau):
    g = torch.Generator().manual_seed(3)
    N, C = 10, 4
    l1, l2 = torch.randn(N, C, generator=g, dtype=torch.float64) * 5, torch.randn(N, C, generator=g, dtype=torch.float64) * 5
    rep = torch.randn(N, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 0, 2, 3, 0, 2, 1, 3])
    loss = ORCALoss(known_classes=KNOWN, labelled_fraction=0.7, temperature=tau, gather=False)
    out = loss(l1, l2, labels=labels, reps=(rep,))
    want, unc = slow_orca(l1, l2, rep, labels, KNOWN, 0.7, margin_u=min(float(loss.uncertainty), 0.5), tau=tau)
    assert float(loss.uncertainty) == pytest.approx(unc, rel=1e-9)  # first step: the batch value
    assert float(out["loss"]) == pytest.approx(want, rel=1e-9)
    assert float(out["loss"]) == pytest.approx(float(out["ce"] + out["pair"] - out["entropy"]))
    # the next step draws anew, and the uncertainty is an EMA
    out2 = loss(l1, l2, labels=labels, reps=(rep,))
    want2, unc2 = slow_orca(l1, l2, rep, labels, KNOWN, 0.7, margin_u=0.0, step=1, tau=tau)
    assert float(loss.uncertainty) == pytest.approx(0.9 * unc + 0.1 * unc2, rel=1e-9)
    want2, _ = slow_orca(l1, l2, rep, labels, KNOWN, 0.7, margin_u=min(float(loss.uncertainty), 0.5), step=1, tau=tau)
    assert float(out2["loss"]) == pytest.approx(want2, rel=1e-9)
    with pytest.raises(ValueError, match="labels"):
        loss(l1, l2, reps=(rep,))



def _orca_model():
    torch.manual_seed(0)
    cfg = ModelConfig(model_dim=16, ff_dim=32, heads=2, layers=2, head="cosine", head_dims=[16],
                      output_dim=4, dropout=0.0, log_pt_bias=True)
    return build_model(cfg).double()


def _orca_step(model, module, x, mask, labels, gather):
    loss = build_loss(LossConfig(name="orca", known_classes=KNOWN, labelled_fraction=0.6,
                                 gather=gather))
    V = 2  # the two views; the third of the global batch is not used
    rep, z = model(x[:V].flatten(0, 1), mask[:V].flatten(0, 1))
    out = loss(*z.chunk(V), labels=labels, reps=rep.chunk(V))
    out["loss"].backward()
    return out["loss"].detach(), loss.uncertainty.clone()


def _ranks(rank):
    res, ref_unc, unc = ddp_vs_one_process(rank, _orca_model, _orca_step)
    return {**res, "unc_diff": abs(float(unc - ref_unc))}


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
def test_two_processes_match_one_process_on_theglobal_batch():
    for r, v in enumerate(on_ranks(_ranks)):
        assert v["grad_scale"] > 1e-6, (r, v)
        assert v["loss_diff"] < 1e-10 and v["unc_diff"] < 1e-12, (r, v)
        assert v["grad_diff"] < 1e-8, (r, v)


def test_cluster_accuracy_is_the_best_permutation():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    best = max(np.mean([perm[q] == t for q, t in zip(p, y, strict=True)])
               for perm in itertools.permutations(range(3)))
    assert cluster_accuracy(y, p) == pytest.approx(best)
    assert cluster_accuracy(y, (y + 1) % 3) == 1.0  # relabelled clusters are perfect


def test_openworld_metrics():
    # heads: 0 = known class 0, 1-2 novel; signals 1 and 2 land on heads 2 and 1
    label = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, -1])
    head = np.array([0, 0, 0, 1, 2, 2, 1, 1, 1, 1, 0])
    probs = np.full((11, 3), 0.1)
    probs[np.arange(11), head] = 0.8
    res = openworld_evaluation(probs, label, known=[0], label_names={1: "sig a", 2: "b"})
    m = res.metrics
    assert m["orca_known_acc"] == pytest.approx(3 / 4)
    assert m["orca_novel_cluster_acc"] == pytest.approx(5 / 6)
    assert m["orca_all_cluster_acc"] == pytest.approx(8 / 10)
    assert m["orca_anomaly_auc"] > 0.8 and "orca_anomaly_sig_a_auc" in m and "orca_anomaly_b_auc" in m
    assert res.tables["orca_confusion"][0] == {"label": 0, "head_0": 3, "head_1": 1, "head_2": 0}
    with pytest.raises(ValueError, match="no novel"):
        openworld_evaluation(probs[:, :1], label, known=[0])


def adc_toy_events(n, kind, rng):
    """ADC2021-layout events (19 x (pT, eta, phi): MET, 4 e, 4 mu, 10 jets): background (0) with
    0-1 electrons; signal 1 with 3-4 electrons; signal 2 with MET raised by 200 GeV."""
    x = np.zeros((n, 19, 3), np.float32)
    x[:, 0, 0] = rng.exponential(30, n) + (200 if kind == 2 else 0)
    x[:, 0, 2] = rng.uniform(-3, 3, n)
    for first, count, n_on, pt, eta in ((1, 4, rng.integers(3, 5, n) if kind == 1 else rng.integers(0, 2, n), 40, 2.4),
                                        (9, 10, rng.integers(1, 6, n), 50, 3.5)):
        for i in range(count):
            on = n_on > i
            x[:, first + i, 0] = np.where(on, rng.exponential(pt, n) + 15, 0)
            x[:, first + i, 1] = np.where(on, rng.uniform(-eta, eta, n), 0)
            x[:, first + i, 2] = np.where(on, rng.uniform(-3, 3, n), 0)
    return torch.tensor(x), torch.tensor(x[..., 0] > 0), torch.full((n,), kind)


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
def test_orca_learns_known_and_novel_events():
    """SM-like events labelled, two signals unlabelled: after 100 steps of one process, the known
    class keeps its head and the novel-head probability separates the signals."""
    from clrdist.config import AugmentSpec
    from clrdist.physics.augment import build_view

    rng = np.random.default_rng(0)
    parts = [adc_toy_events(n, k, rng) for n, k in ((3000, 0), (300, 1), (300, 2))]
    X, M, Y = (torch.cat([p[i] for p in parts]) for i in range(3))
    torch.manual_seed(0)
    model = build_model(ModelConfig(encoder="dense", frame="event", dense_input_dim=57,
                                    dense_dims=[64, 32], head="cosine", head_dims=[], output_dim=3))
    loss = build_loss(LossConfig(name="orca", known_classes=[0], gather=False))
    view = build_view([AugmentSpec(name="event_smear")])
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    scale = torch.tensor([100.0, 1, 1])
    for _ in range(100):
        idx = torch.randint(len(Y), (128,), generator=g)
        (v1, m1), (v2, m2) = view(X[idx], M[idx], g), view(X[idx], M[idx], g)
        rep, z = model(torch.cat([v1, v2]) / scale, torch.cat([m1, m2]))
        out = loss(*z.chunk(2), labels=Y[idx], reps=rep.chunk(2))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    test = [adc_toy_events(n, k, np.random.default_rng(9)) for n, k in ((1000, 0), (300, 1), (300, 2))]
    Xt, Mt, Yt = (torch.cat([p[i] for p in test]) for i in range(3))
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(model(Xt / scale, Mt)[1], 1).numpy()
    m = openworld_evaluation(probs, Yt.numpy(), known=[0], label_names={1: "leptons", 2: "met"}).metrics
    # known accuracy alone is met by calling everything known: the signals must also land on
    # the novel heads (an all-known classifier puts none there)
    pred = probs.argmax(1)
    novel_recall = float((pred[Yt.numpy() > 0] >= 1).mean())
    assert m["orca_known_acc"] > 0.9 and novel_recall > 0.3, (m, novel_recall)  # all-known: 0
    assert m["orca_anomaly_auc"] > 0.75 and m["orca_anomaly_met_auc"] > 0.75, m


@pytest.mark.slow
def test_orca_learns_on_pythia_jets():
    """Pythia QCD (known, half labelled), top and W (novel, unlabelled), 300 jets each for
    training and 300 for testing, the demo's encoder, 60 steps in one process (bench.selfsup at
    a small size): the trained classifier keeps QCD on its head and splits top from W, which no
    untrained encoder of 5 init seeds does (one that calls everything known has known accuracy
    1 and novel clustering accuracy 0.5)."""
    pytest.importorskip("pythia8mc")
    from bench import selfsup
    from clrdist.factory import initial_model

    train_set, test = selfsup.halves(selfsup.pythia_jets(300, 23))
    cfg = selfsup.config("orca")
    trained = selfsup.orca_metrics(selfsup.train(cfg, train_set, 60)[0], cfg, test)
    untrained = [selfsup.orca_metrics(initial_model(cfg.model, s), cfg, test) for s in range(5)]
    novel_bar = max(u["orca_novel_cluster_acc"] for u in untrained) + 0.1
    all_bar = max(u["orca_all_cluster_acc"] for u in untrained) + 0.1

    def learnt(m):
        return (m["orca_known_acc"] > 0.75 and m["orca_novel_cluster_acc"] > novel_bar
                and m["orca_all_cluster_acc"] > all_bar)

    assert learnt(trained), (trained, untrained)
    assert not any(learnt(u) for u in untrained)  # the margin has teeth
    assert trained["orca_anomaly_auc"] > max(u["orca_anomaly_auc"] for u in untrained), trained
