"""Encoding for evaluation: device resolution, the eval.device switch, and the CPU numbers of
the plain fp32 forward pass."""

import numpy as np
import pytest
import torch

from clrdist.config import load_config
from clrdist.data.toy import toy_dataset
from clrdist.evaluation import DEVICE_EVALUATIONS, on_device
from clrdist.factory import build_encoder, initial_model, input_transform
from clrdist.models.encode import encode_dtype, model_inputs, resolve_device

SMALL = ["model.model_dim=16", "model.ff_dim=32", "model.layers=1", "model.heads=2",
         "model.head_dims=[16]", "model.output_dim=16", "data.n_particles=20"]


def test_cpu_encoding_equals_the_plain_forward_pass():
    cfg = load_config(None, SMALL)
    d = toy_dataset(40, seed=1, n_particles=30)
    model = initial_model(cfg.model, 0)
    rep = build_encoder(model, cfg, batch_size=32, device="auto" if not torch.cuda.is_available()
                       else "cpu")(d)
    with torch.no_grad():
        x, m = model_inputs(d["particles"], d["mask"], input_transform(cfg))
        want = model.eval().represent(x, m).float().numpy()
    assert rep.dtype == np.float32 and rep.shape == want.shape == (80, 16)
    np.testing.assert_array_equal(rep, want)  # batches of 32: the same numbers, bit for bit


def test_devices_and_precision():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    cfg = load_config(None, SMALL)
    assert encode_dtype(cfg.scaling.precision, "cpu") is None  # CPU representations stay those of fp32
    cfg_bf16 = load_config(None, [*SMALL, "scaling.precision=bf16"])
    assert encode_dtype(cfg_bf16.scaling.precision, "cuda") == torch.bfloat16


def test_eval_device_setting():
    assert load_config(None).eval.device == "auto"
    assert load_config(None, ["eval.device=cuda:0"]).eval.device == "cuda:0"
    with pytest.raises(Exception, match="eval.device"):
        load_config(None, ["eval.device=gpu"])


def test_evaluations_get_the_device_unless_their_options_name_one():
    opts = {"nplm": {"M": 100}, "anomaly": {"device": "cpu"}}
    which = {"lct", "nplm", "anomaly", "nae"}
    got = on_device(opts, which, torch.device("cuda"))
    assert got == {"nplm": {"M": 100, "device": "cuda"}, "anomaly": {"device": "cpu"},
                   "nae": {"device": "cuda"}}
    assert on_device(opts, which, torch.device("cpu")) == opts  # the CPU: options unchanged
    assert opts == {"nplm": {"M": 100}, "anomaly": {"device": "cpu"}}  # not modified
    from clrdist.eval.registry import validate_options

    for name in DEVICE_EVALUATIONS:  # every one of them accepts the option
        assert validate_options(name, {"device": "cuda"}) == {"device": "cuda"}
