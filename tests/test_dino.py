"""DINO: the cross-entropy against loops, the teacher EMA and its schedule, the centre, and two
real gloo processes against one process on the global batch (loss, centre, every gradient)."""

import math

import pytest
import torch
from _gloo import ddp_vs_one_process, on_ranks

from clrdist.config import LossConfig, ModelConfig
from clrdist.factory import build_loss, build_model
from clrdist.losses.dino import DINOLoss, dino_cross_entropy, teacher_momentum


def loop_dino(student, teacher, centre, ts, tt):
    B, K = student[0].shape
    total, pairs = 0.0, 0
    for a in range(len(teacher)):
        for v in range(len(student)):
            if v == a:
                continue
            ce = 0.0
            for b in range(B):
                zt = [math.exp((float(teacher[a][b, k]) - float(centre[k])) / tt) for k in range(K)]
                zs = [math.exp(float(student[v][b, k]) / ts) for k in range(K)]
                ce += -sum(zt[k] / sum(zt) * math.log(zs[k] / sum(zs)) for k in range(K))
            total += ce / B
            pairs += 1
    return total / pairs


def test_cross_entropy_matches_the_loop_over_view_pairs():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(4)]
    teacher = [torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    centre = torch.randn(6, generator=g, dtype=torch.float64) * 0.1
    got = dino_cross_entropy(student, teacher, centre, student_temperature=0.1,
                             teacher_temperature=0.04)
    assert float(got) == pytest.approx(loop_dino(student, teacher, centre, 0.1, 0.04), rel=1e-5)


def test_momentum_schedule_and_ema_update():
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx(0.998)
    # a schedule that ends below 1 (teacher_momentum_end): constant when both ends agree
    assert teacher_momentum(50, 100, 0.99, end=0.995) == pytest.approx(0.9925)
    assert teacher_momentum(100, 100, 0.99, end=0.995) == pytest.approx(0.995)
    assert all(teacher_momentum(k, 100, 0.99, end=0.99) == pytest.approx(0.99) for k in (0, 37, 100))
    torch.manual_seed(0)
    student = build_model(ModelConfig(encoder="dense", dense_input_dim=6, dense_dims=[8, 4],
                                      head="dino", head_dims=[8], output_dim=10))
    loss = DINOLoss(teacher_momentum=0.9)
    loss.attach(student, total_steps=4)
    before = {k: v.clone() for k, v in loss.teacher.state_dict().items()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    student.train()
    student(torch.randn(16, 6))  # BatchNorm running statistics move
    loss.after_step(student)
    s_state = student.state_dict()
    for k, t in loss.teacher.state_dict().items():
        if k.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(t, s_state[k]), k  # buffers are copied
        else:
            torch.testing.assert_close(t, 0.9 * before[k] + 0.1 * s_state[k])
    assert int(loss.step) == 1 and not any(p.requires_grad for p in loss.teacher.parameters())


def test_centre_follows_the_teacher_batch_mean_and_state_round_trips():
    torch.manual_seed(1)
    model = build_model(ModelConfig(model_dim=8, ff_dim=8, heads=2, layers=1, head="dino",
                                    head_dims=[8], output_dim=12, dropout=0.0))
    loss = build_loss(LossConfig(name="dino", centre_momentum=0.8))
    loss.attach(model, total_steps=10)
    x, mask = torch.rand(3 * 4, 5, 3) + 0.1, torch.ones(3 * 4, 5, dtype=torch.bool)
    _, z = model(x, mask)
    out = loss(*z.chunk(3), inputs=(x, mask))
    with torch.no_grad():
        _, t = loss.teacher(x[:8], mask[:8])
    torch.testing.assert_close(loss.centre, 0.2 * t.mean(0))  # from zero: (1 - 0.8) mean
    assert {"loss", "teacher_entropy"} <= set(out) and out["loss"].requires_grad
    # evaluation uses the teacher
    assert loss.eval_model(model) is loss.teacher and DINOLoss().eval_model(model) is model
    fresh = DINOLoss()
    fresh.attach(model, total_steps=10)
    fresh.load_state_dict(loss.state_dict())
    torch.testing.assert_close(fresh.centre, loss.centre)
    with pytest.raises(ValueError, match="attach"):
        DINOLoss()(z, z, inputs=(x, mask))



def _dino_model():
    torch.manual_seed(0)
    cfg = ModelConfig(model_dim=16, ff_dim=32, heads=2, layers=2, head="dino", head_dims=[16],
                      output_dim=20, dropout=0.0, log_pt_bias=True)
    return build_model(cfg).double()


def _dino_step(model, student_module, x, mask, labels, gather):
    """3 views (2 global + 1 local) stacked view-major, as the training loop does."""
    loss = DINOLoss(gather=gather)
    loss.attach(student_module, total_steps=10)
    loss.double()
    V, B = x.shape[0], x.shape[1]
    xs, ms = x.flatten(0, 1), mask.flatten(0, 1)
    _, z = model(xs, ms)
    out = loss(*z.view(V, B, -1).unbind(0), inputs=(xs, ms))
    out["loss"].backward()
    return out["loss"].detach(), loss.centre.clone()


def _ranks(rank):
    res, ref_centre, centre = ddp_vs_one_process(rank, _dino_model, _dino_step)
    return {**res, "centre_diff": (centre - ref_centre).abs().max().item(),
            "centre_scale": ref_centre.abs().max().item()}


@pytest.mark.slow  # > 30 s on 2 shared cores: the slow tier (make test)
def test_two_processes_match_one_process_on_theglobal_batch():
    for r, v in enumerate(on_ranks(_ranks)):
        assert v["centre_scale"] > 1e-4 and v["grad_scale"] > 1e-6, (r, v)  # not vacuous
        assert v["centre_diff"] < 1e-12, (r, v)  # all-reduced centre = global-batch centre
        assert v["loss_diff"] < 1e-10, (r, v)
        assert v["grad_diff"] < 1e-8, (r, v)


@pytest.mark.parametrize("name", ["dino_adc2021_dense", "dino_adc2021_transformer", "orca_adc2021"])
def test_configs_take_one_training_step_as_the_loop_does(name):
    """The shipped configs, shrunk: views (global + local), attach, loss, backward, after_step."""
    from pathlib import Path

    from clrdist.config import load_config
    from clrdist.physics.augment import build_view
    from clrdist.train.trainer import check_components

    shrink = [] if "dense" in name or "orca" in name else [  # the dense encoder is small already
        "model.model_dim=16", "model.ff_dim=16", "model.layers=1"]
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.yaml", shrink)
    check_components(cfg)
    g = torch.Generator().manual_seed(0)
    B = 8
    x = torch.rand(B, 19, 3, generator=g) * 50 + 1
    mask = torch.rand(B, 19, generator=g) < 0.6
    mask[:, 0] = True
    x = torch.where(mask[..., None], x, torch.zeros(()))
    views = [build_view(v) for v in [*cfg.augment.views, *cfg.augment.local_views]]
    outs = [v(x, mask, g) for v in views]
    xs = torch.cat([o[0] for o in outs]) / torch.tensor([cfg.data.pt_scale, 1, 1])
    ms = torch.cat([o[1] for o in outs])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    loss = build_loss(cfg.loss)
    loss.attach(model, total_steps=5)
    rep, z = model(xs, ms)
    terms = loss(*z.chunk(len(views)), labels=torch.tensor([0, 0, 0, 1, 2, 0, 3, 4]),
                 inputs=(xs, ms), reps=rep.chunk(len(views)))
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and len(views) == (4 if "dino" in name else 2)
    loss.after_step(model)
    assert int(loss.step) == (1 if "dino" in name else 0) + (1 if "orca" in name else 0)


def test_teacher_momentum_end_reaches_the_loss_and_may_not_fall(tmp_path):
    from clrdist.config import ConfigError, load_config
    from clrdist.factory import build_loss

    cfg = load_config(None, ["loss.name=dino", "loss.teacher_momentum=0.99",
                             "loss.teacher_momentum_end=0.995"])
    loss = build_loss(cfg.loss)
    assert (loss.base_momentum, loss.end_momentum) == (0.99, 0.995)
    assert build_loss(load_config(None, ["loss.name=dino"]).loss).end_momentum == 1.0  # DINO's
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: {name: dino, teacher_momentum: 0.99, teacher_momentum_end: 0.9}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: loss: .*teacher_momentum_end \(0.9\) is below"):
        load_config(bad)


@pytest.mark.slow  # ~1.5 minutes: 1800 Pythia jets and 200 DINO steps in one process
def test_dino_learns_on_pythia_jets():
    """Pythia QCD, top and W, 600 jets each (half to train, half to test), the demo's encoder
    with bench.selfsup's DINO (no labels), 200 steps: the teacher, what clrdist evaluates,
    separates W from QCD in the linear classifier test better than the same encoder untrained at
    any of 5 init seeds, by a margin none of them meets (bench.selfsup at this size and sample,
    docs/results/selfsup_test_size.json: teacher 0.924 and 0.921 at training seeds 0 and 1,
    untrained 0.899 +- 0.004, best 0.904; docs/selfsup.md has it on another sample too). Top vs
    QCD is not separated at this size: the untrained encoder is already at 0.94-0.95 there."""
    pytest.importorskip("pythia8mc")
    from bench import selfsup
    from clrdist.factory import initial_model

    train_set, test = selfsup.halves(selfsup.pythia_jets(600, 23))
    cfg = selfsup.config("dino")
    teacher, _ = selfsup.train(cfg, train_set, 200)
    untrained = [selfsup.lct_auc(initial_model(cfg.model, s), cfg, train_set, test, signal=2)
                 for s in range(5)]
    trained = selfsup.lct_auc(teacher, cfg, train_set, test, signal=2)
    # 0.01 above the best untrained seed: about one statistical error of an AUC on these 600
    # test jets, 2.5 standard deviations of the untrained seeds
    assert trained > max(untrained) + 0.01, (trained, untrained)
