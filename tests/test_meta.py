"""Device-clean: every encoder, head, the view pipeline and the training step run with all their
tensors on PyTorch's ``meta`` device (no data, shapes only). Any tensor made on the CPU behind the
caller's back (``torch.tensor(..)`` without a device, a CPU generator, a numpy round trip) meets
a meta tensor and fails, as it would meet a CUDA tensor on a GPU."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from clrdist.models.dense import DenseEncoder
from clrdist.models.heads import ContrastiveModel, ProjectionHead
from clrdist.models.prototypes import CosineClassifier, DINOHead
from clrdist.models.transformer import TransformerEncoder
from clrdist.physics.augment import AUGMENTATIONS, build_view
from clrdist.physics.augment_event import N_OBJECTS
from clrdist.train.engine import LocalEngine, LossGuard
from clrdist.train.step import train_step

META = torch.device("meta")

ENCODERS = {
    "transformer": lambda: TransformerEncoder(3, 16, 32, 2, 2, log_pt_bias=True),
    "transformer_mean_buckets": lambda: TransformerEncoder(6, 16, 32, 4, 1, pooling="mean",
                                                           norm_first=False, buckets=2),
    "transformer_no_pt_embed": lambda: TransformerEncoder(3, 16, 32, 2, 1, embed_pt=False),
    "dense_layer": lambda: DenseEncoder(57, (24, 8), norm="layer"),
    "dense_batch": lambda: DenseEncoder(57, (24, 8), norm="batch"),
}
HEADS = {
    "mlp": lambda d: ProjectionHead(d, [12], 6),
    "mlp_batchnorm": lambda d: ProjectionHead(d, [12], 6, batchnorm=True),
    "dino": lambda d: DINOHead(d, [12], 6),
    "cosine": lambda d: CosineClassifier(d, [12], 6),
}


def _inputs(encoder, B=8):
    if isinstance(encoder, DenseEncoder):
        return torch.randn(B, N_OBJECTS, 3, device=META), torch.ones(B, N_OBJECTS, dtype=torch.bool, device=META)
    width = encoder.embed.in_features + (0 if encoder.embed_pt else 1)
    return torch.randn(B, 10, width, device=META), torch.ones(B, 10, dtype=torch.bool, device=META)


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("enc", sorted(ENCODERS))
def test_every_encoder_and_head_runs_on_meta(enc, head):
    encoder = ENCODERS[enc]()
    model = ContrastiveModel(encoder, HEADS[head](encoder.out_dim)).to(META).train()
    tensors = [*model.parameters(), *model.buffers()]
    assert tensors and all(t.device == META for t in tensors)  # buffers move with the module
    x, mask = _inputs(encoder)
    rep, z = model(x, mask)
    assert rep.device == META and rep.shape == (8, encoder.out_dim)
    assert z.device == META and z.shape == (8, 6)
    z.sum().backward()
    assert all(p.grad is not None and p.grad.device == META for p in model.parameters()
               if p.requires_grad)


def test_models_build_directly_on_meta():
    with META:
        model = ContrastiveModel(TransformerEncoder(3, 16, 32, 2, 1), ProjectionHead(16, [8], 4))
    assert all(p.device == META for p in model.parameters())
    x, mask = _inputs(model.encoder)
    assert model.represent(x, mask).device == META


def _batch(name, B=6):
    P = N_OBJECTS if name.startswith("event_") else 12
    x = torch.rand(B, P, 3, device=META)
    return x, torch.ones(B, P, dtype=torch.bool, device=META)


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_every_augmentation_runs_on_meta(name):
    x, mask = _batch(name)
    view = build_view([{"name": name}])
    y, m = view(x, mask, None)
    assert y.device == META and m.device == META
    assert y.shape == x.shape and m.shape == mask.shape and m.dtype == torch.bool


@pytest.mark.parametrize("case", ["jetclr", "darkclr", "event_transformer", "event_dense"])
def test_a_full_training_step_runs_on_meta(case):
    from tests.test_step import setup

    cfg, engine, loss_fn, views, batch, prec = setup(case)
    engine = LocalEngine(engine.module, cfg, 10, device=META)
    assert all(t.device == META for t in [*engine.module.parameters(), *engine.module.buffers()])
    batch = {k: v.to(META) for k, v in batch.items()}
    with CPUTensors() as made:
        # AdamW keeps 0-d CPU step counters unless fused (CUDA, CPU): its step is not watched
        engine.optimizer.register_step_pre_hook(lambda *_: setattr(made, "paused", True))
        engine.optimizer.register_step_post_hook(lambda *_: setattr(made, "paused", False))
        out = train_step(engine, loss_fn, views, batch, None, cfg, prec, step=1,
                         guard=LossGuard(META))
    assert made.ops == []
    assert out.terms["loss"].device == META and out.z.device == META
    assert out.info["grad_norm"].device == META


class CPUTensors(TorchDispatchMode):
    """Records every operation that returns a CPU tensor (none should, with all inputs on meta)."""

    def __init__(self):
        super().__init__()
        self.ops, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.ops += [str(func) for t in tree_flatten(out)[0]
                         if isinstance(t, torch.Tensor) and t.device.type == "cpu"]
        return out


def test_the_cpu_tensor_recorder_sees_an_implicit_cpu_tensor():
    with CPUTensors() as made:
        torch.ones(3, device=META) * torch.tensor(2.0)  # a 0-d CPU tensor mixes silently
    assert made.ops == ["aten.lift_fresh.default"]
