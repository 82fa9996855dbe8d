"""The label-trained evaluations (the supervised reference, the ceiling, the fine-tuning) train
on the evaluation's device: proven on the CPU with the ``meta`` device, where every tensor op of
the training must run on meta until the first host read (the validation loss) fails."""

import re
from collections import Counter

import numpy as np
import pytest
import torch
from _eval_toys import TinyDeepSet
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from clrdist.eval.finetune import fit_classifier, supervised_ceiling
from clrdist.eval.runner import Context, run_evaluations

READ = re.escape("Tensor.item() cannot be called on meta tensors")  # float(validation loss), once an epoch
# host ops allowed once training is on the device: copies to it, the head's initial draw (on the
# host, so every device starts from the same head), the batch order, Adam's step counters
HOST_OPS = {"aten._to_copy.default", "aten.lift_fresh.default", "aten.uniform_.default",
            "aten.empty.memory_format", "aten.randperm.generator", "aten.add_.Tensor",
            "aten._local_scalar_dense.default"}


class Devices(TorchDispatchMode):
    """Each op's name and the device types of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops: list[tuple[str, frozenset]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devs = {a.device.type for a in pytree.tree_leaves((args, kwargs))
                if isinstance(a, torch.Tensor)}
        self.ops.append((str(func), frozenset(devs)))
        return func(*args, **kwargs)


def data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5, 3)).astype(np.float32), np.ones((n, 5), bool),
            (rng.random(n) > 0.5).astype(np.float32))


def assert_trained_on_meta(mode: Devices) -> None:
    first = next(i for i, (_, d) in enumerate(mode.ops) if "meta" in d)
    after = mode.ops[first:]
    on_meta = sum(d == {"meta"} for _, d in after)
    host = Counter(f for f, d in after if "cpu" in d and f not in HOST_OPS)
    assert on_meta > 100 and not host, (on_meta, host)  # forward, backward, Adam: all on meta


def test_a_classifier_trains_where_it_is_told():
    x, m, y = data()
    mode = Devices()
    with pytest.raises(RuntimeError, match=READ), mode:
        fit_classifier(TinyDeepSet(), (x, m, y), (x[:16], m[:16], y[:16]), device="meta",
                       max_epochs=2)
    assert_trained_on_meta(mode)
    score, info = fit_classifier(TinyDeepSet(), (x, m, y), (x[:16], m[:16], y[:16]),
                                 max_epochs=2)  # the default: the host, as before
    assert score(x, m).shape == (64,) and info["epochs"] == 2


def test_the_ceiling_and_the_supervised_reference_take_the_evaluation_device():
    x, m, y = data(200)
    batch = {"particles": x, "mask": m, "label": y.astype(np.int8)}
    mode = Devices()
    with pytest.raises(RuntimeError, match=READ), mode:
        supervised_ceiling(batch, batch, batch, model_factory=TinyDeepSet,
                           prepare=lambda p, mk: (p, mk), device="meta", max_epochs=2)
    assert_trained_on_meta(mode)
    # the runner's supervised reference (baselines, <search>_sup_*) trains on Context.device
    mode = Devices()
    with pytest.raises(RuntimeError, match=READ), mode:
        run_evaluations(lambda b: b["particles"].reshape(len(b["label"]), -1),
                        train_data=batch, test_data=batch, which={"baselines"},
                        context=Context(n_boot=0, model_factory=TinyDeepSet, n_particles=5,
                                        supervised_prepare=lambda p, mk: (p, mk),
                                        device="meta"),
                        options={"baselines": {"which": ["supervised"], "figures": False}})
    assert_trained_on_meta(mode)


def test_fine_tuning_encodes_and_trains_on_the_evaluation_device():
    from clrdist.eval.finetune import label_efficiency

    x, m, y = data(200)
    batch = {"particles": x, "mask": m, "label": y.astype(np.int8)}
    mode = Devices()
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"), mode:
        label_efficiency(batch, batch, batch, pretrained=TinyDeepSet, model_factory=TinyDeepSet,
                         prepare=lambda p, mk: (p, mk), fractions=(1.0,), n_seeds=1,
                         methods=("scratch",), figures=False, device="meta")
    first = next(i for i, (_, d) in enumerate(mode.ops) if "meta" in d)
    assert all(d <= {"meta"} or f in HOST_OPS for f, d in mode.ops[first:])  # the frozen encoder
