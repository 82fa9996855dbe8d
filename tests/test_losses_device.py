"""Every loss is device-clean and computes in fp32: run on PyTorch's meta device (a tensor there
has a device and a shape but no data: reading a value back, mixing in a CPU tensor or an
operation whose output shape depends on the data fails), under a dispatch checker that flags
any tensor made on the CPU and any host read, and under bf16 autocast against fp32."""

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from clrdist.config import LossConfig
from clrdist.factory import build_loss
from clrdist.losses import LOSSES
from clrdist.syncs import count_syncs

META = torch.device("meta")
B, D, K = 6, 8, 5
# host reads and data-dependent output shapes (each waits for the device)
SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2",
           "unique_consecutive", "is_nonzero", "equal", "item"}


class DeviceChecker(TorchDispatchMode):
    """Records every op that makes a CPU tensor and every op that waits for the device."""

    def __init__(self):
        super().__init__()
        self.cpu_ops, self.sync_ops, self.ops = [], [], []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        self.ops.append(name)
        if name in SYNCING:
            self.sync_ops.append(name)
        outs = out if isinstance(out, (tuple, list)) else [out]
        if any(isinstance(o, torch.Tensor) and o.device.type == "cpu" for o in outs):
            self.cpu_ops.append(name)
        return out


class Tiny(nn.Module):
    """(representation, projection) of flat inputs, like the encoders' (rep, z)."""

    def __init__(self, out: int = K):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, D), nn.LayerNorm(D))
        self.head = nn.Linear(D, out)

    def forward(self, x, mask):
        h = (self.body(x) * mask[..., None]).sum(1)
        return h, self.head(h)


CONFIGS = {
    "nt_xent": LossConfig(name="nt_xent"),
    "nt_xent_decoupled": LossConfig(name="nt_xent", keep_positive=False),
    "anomalyclr": LossConfig(name="anomalyclr"),
    "anomalyclr_plus": LossConfig(name="anomalyclr_plus"),
    "anomalyclr_anomaly_norm": LossConfig(name="anomalyclr", anomaly_norm=1.0),  # reads reps
    "supcon": LossConfig(name="supcon"),
    "dino": LossConfig(name="dino"),
    "orca": LossConfig(name="orca", known_classes=[0, 1]),
}


def call(loss, rep, z, x, mask, labels):
    """The loss on 3 views, given what it declares it needs (as the training step does)."""
    return loss(*z.chunk(3), labels=labels if loss.needs_labels else None,
                inputs=(x, mask) if loss.needs_inputs else None,
                reps=rep.chunk(3) if loss.needs_inputs else None)


def one_step(name, device, dtype=torch.float32, autocast=False, seed=0):
    """Model, loss, forward over 3 views, backward, after_step, as the training step does."""
    torch.manual_seed(seed)
    model = Tiny().to(dtype)
    loss = build_loss(CONFIGS[name])
    loss.attach(model, total_steps=10)
    model.to(device), loss.to(device)
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(3 * B, 4, 3, generator=g) + 0.1).to(dtype).to(device)
    mask = torch.ones(3 * B, 4, dtype=torch.bool).to(device)
    labels = torch.tensor([0, 1, 2, 0, 1, 3]).to(device)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        rep, z = model(x, mask)
        terms = call(loss, rep, z, x, mask, labels)
    terms["loss"].backward()
    loss.after_step(model)
    return terms, model, loss


def test_every_registered_loss_is_covered():
    assert {c.name for c in CONFIGS.values()} == set(LOSSES)


@pytest.mark.parametrize("name", CONFIGS)
def test_state_moves_with_to_and_a_step_runs_on_the_meta_device(name):
    """Built and attached on the CPU, then moved with .to(): every buffer and submodule (DINO's
    teacher and centre, ORCA's uncertainty, the step counts) follows, and a step runs there."""
    with DeviceChecker() as check:
        terms, model, loss = one_step(name, META)
    assert "loss" in terms and all(t.device == META for t in terms.values()), terms
    assert all(p.grad is not None and p.grad.device == META for p in model.parameters())
    assert all(t.device == META for t in loss.state_dict().values())
    assert check.sync_ops == []


@pytest.mark.parametrize("name", CONFIGS)
def test_the_forward_makes_no_cpu_tensor_and_reads_nothing_back(name):
    """Only the loss's forward + backward + after_step under the checker (on the CPU, where
    the values are real): no op outputs a CPU tensor when everything lives on meta, and no op
    waits for the device."""
    torch.manual_seed(0)
    model = Tiny().to(META)
    loss = build_loss(CONFIGS[name])
    loss.attach(model, total_steps=10)
    x, mask = torch.empty(3 * B, 4, 3, device=META), torch.ones(3 * B, 4, dtype=torch.bool, device=META)
    labels = torch.empty(B, dtype=torch.long, device=META)
    rep, z = model(x, mask)
    with DeviceChecker() as check:
        terms = call(loss, rep, z, x, mask, labels)
        terms["loss"].backward()
        loss.after_step(model)
    assert check.cpu_ops == [] and check.sync_ops == [], (check.cpu_ops, check.sync_ops)


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_and_loss_are_fp32_under_bf16_autocast(name):
    """Under bf16 autocast the loss equals the fp32 loss of the same (bf16-rounded) projections:
    normalised in fp32, logits with autocast off. A bf16 matmul at tau = 0.1 would be off by
    ~1e-2."""
    got, _, _ = one_step(name, torch.device("cpu"), autocast=True)
    assert all(t.dtype in (torch.float32, torch.float64) for t in got.values()), got
    # the reference: the same bf16 projections, the loss in fp32 without autocast
    torch.manual_seed(0)
    model = Tiny()
    loss = build_loss(CONFIGS[name])
    loss.attach(model, total_steps=10)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3 * B, 4, 3, generator=g) + 0.1
    mask = torch.ones(3 * B, 4, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rep, z = model(x, mask)
    # DINO's teacher is a forward of the model: bf16 in both (its outputs then go to fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "dino"):
        want = loss(*z.float().chunk(3), labels=torch.tensor([0, 1, 2, 0, 1, 3]),
                    inputs=(x, mask), reps=rep.float().chunk(3))
    assert float(got["loss"].detach()) == pytest.approx(float(want["loss"].detach()), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_a_loss_forward_and_backward_perform_no_host_sync(name):
    """With real values on the CPU, h1's counter (clrdist.syncs) sees no host read and no
    data-dependent shape in forward + backward + after_step, at gather=False and as configured."""
    torch.manual_seed(0)
    model = Tiny()
    loss = build_loss(CONFIGS[name])
    loss.attach(model, total_steps=10)
    x, mask = torch.rand(3 * B, 4, 3) + 0.1, torch.ones(3 * B, 4, dtype=torch.bool)
    labels = torch.tensor([0, 1, 2, 0, 1, 3])
    rep, z = model(x, mask)
    with count_syncs() as c:
        terms = call(loss, rep, z, x, mask, labels)
        terms["loss"].backward()
        loss.after_step(model)
    assert c.count == 0, c.ops


def test_the_teacher_ema_is_one_fused_update_whatever_the_number_of_tensors():
    small, big = Tiny(), nn.Sequential(*[Tiny() for _ in range(10)])
    counts = []
    for model in (small, big):
        loss = build_loss(CONFIGS["dino"])
        loss.attach(model, total_steps=10)
        with DeviceChecker() as check:
            loss.after_step(model)
        counts.append(len(check.ops))
        assert "_foreach_mul_" in check.ops and "_foreach_add_" in check.ops
    assert counts[0] == counts[1], counts  # no op per tensor


def test_the_step_count_is_a_python_int_that_follows_the_checkpointed_buffer():
    """ORCA's draws and DINO's momentum use the Python count (no read of the device buffer per
    step); the buffer is what checkpoints carry, and loading a state sets the count."""
    loss = build_loss(LossConfig(name="orca", known_classes=[0, 1], gather=False))
    assert loss.step_count == 0 and int(loss.step) == 0
    loss(torch.randn(B, K), torch.randn(B, K), labels=torch.zeros(B, dtype=torch.long),
         reps=(torch.randn(B, D),))
    assert loss.step_count == 1 and int(loss.step) == 1
    fresh = build_loss(LossConfig(name="orca", known_classes=[0, 1]))
    fresh.load_state_dict(loss.state_dict())
    assert fresh.step_count == 1
