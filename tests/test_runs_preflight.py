"""Everything checkable is checked before training, each failure one line through main(argv):
tracking URIs (unsupported, corrupt SQLite, unreachable server), RAY_ADDRESS, evaluation stores
(labels, both classes, held out), the training store's sample sanity, the sweep metric.

Real stores on disk, a real sqlite file, real sockets; no Ray cluster is started by any of these.
"""

import json
import shutil
import socket

import numpy as np
import pytest
import zarr
from _train_toys import CONFIGS, tiny_overrides

from clrdist.cli import main
from clrdist.config import ConfigError
from clrdist.data.store import open_store, write_store
from clrdist.tune import load_sweep

CONFIG = CONFIGS / "demo.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_argv(stores, tmp, *more):
    return ["train", str(CONFIG), *[a for o in [*tiny_overrides(stores, tmp), *more]
                                   for a in ("--set", o)]]


def one_line_error(capsys, rc) -> str:
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("clrdist: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def corrupt_db(tmp_path):
    p = tmp_path / "corrupt.db"
    p.write_bytes(b"this is not an sqlite database " * 200)
    return p


@pytest.mark.parametrize("case", ["unsupported", "corrupt_sqlite", "unreachable_server"])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_tracking_store_problems_are_one_line_errors(ray_starts, case, command, toy_splits, tmp_path,
                                                     corrupt_db, capsys):
    uri, needle = {
        "unsupported": ("ftp://127.0.0.1/mlruns", "unsupported scheme 'ftp'"),
        "corrupt_sqlite": (f"sqlite:///{corrupt_db}", f"{corrupt_db}: not a usable MLflow database"),
        "unreachable_server": (f"http://127.0.0.1:{free_port()}", "server not reachable within 5 s"),
    }[case]
    if command == "train":
        rc = main(train_argv(toy_splits, tmp_path, f"tracking.uri={uri}"))
    else:
        rc = main(["eval", "0123abcd", "--tracking-uri", uri])
    line = one_line_error(capsys, rc)
    assert needle in line
    assert ray_starts == []  # nothing was started


def test_unreachable_ray_address_is_refused_before_anything_starts(ray_starts, toy_splits, tmp_path,
                                                                   monkeypatch, capsys):
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    rc = main(train_argv(toy_splits, tmp_path))
    line = one_line_error(capsys, rc)
    assert f"RAY_ADDRESS={address}: no Ray cluster answers" in line
    assert ray_starts == []


def relabelled(src, dst, label):
    """A copy of store ``src`` with its labels replaced (same provenance: still held out)."""
    s = open_store(src)
    data = s.read_all()
    data["label"] = np.full_like(data["label"], label) if np.isscalar(label) else label(data["label"])
    write_store(dst, data, kind=s.kind, particle_features=s.particle_features,
                feature_names=s.feature_names, label_names={-1: "unknown", **s.label_names},
                provenance=s.attrs["provenance"])
    return dst


@pytest.mark.parametrize("case", ["unlabelled", "one_class", "same_store"])
def test_evaluation_store_problems_are_found_before_training(ray_starts, case, toy_splits, tmp_path, capsys):
    if case == "unlabelled":
        store = relabelled(toy_splits / "eval_test.zarr", tmp_path / "nolabel.zarr", -1)
        key, needle = "data.eval_test_store", "has no labelled samples (all -1)"
    elif case == "one_class":
        store = relabelled(toy_splits / "eval_test.zarr", tmp_path / "qcd.zarr", 0)
        key, needle = "data.eval_test_store", "has only background samples"
    else:
        store, key, needle = toy_splits / "eval_train.zarr", "data.eval_test_store", "shares 480 samples"
    rc = main(train_argv(toy_splits, tmp_path, f"{key}={store}"))
    line = one_line_error(capsys, rc)
    assert needle in line and str(store) in line, line
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run was opened
    assert ray_starts == []


def test_validation_store_labels_are_checked_when_validating(toy_splits, tmp_path, capsys):
    store = relabelled(toy_splits / "val.zarr", tmp_path / "val_nolabel.zarr", -1)
    rc = main(train_argv(toy_splits, tmp_path, f"data.val_store={store}", "eval.lct=false"))
    line = one_line_error(capsys, rc)
    assert "data.val_store" in line and "no labelled samples" in line


def test_nan_particles_in_the_training_store_are_found_before_training(ray_starts, toy_splits, tmp_path, capsys):
    """NaN written into the shard directly (as a faulty converter or a bit flip would), bypassing
    the writer's own check; the checksum record is dropped so only the sanity check can see it."""
    bad = tmp_path / "nan.zarr"
    shutil.copytree(toy_splits / "train.zarr", bad)
    meta = json.loads((bad / "zarr.json").read_text())
    meta["attributes"].pop("integrity", None)
    (bad / "zarr.json").write_text(json.dumps(meta))
    arr = zarr.open_array(str(bad / "particles"), mode="r+")
    p = arr[:]
    p[::10, 0, 0] = np.nan  # every tenth jet: its leading particle's pT
    arr[:] = p
    rc = main(["--allow-unverified", *train_argv(toy_splits, tmp_path, f"data.train_store={bad}")])
    line = one_line_error(capsys, rc)
    assert line.startswith(f"clrdist: error: data.train_store: {bad}") and "sanity" in line, line
    assert ray_starts == []


@pytest.mark.parametrize("every_epochs, ok", [(None, False), (2, False), (1, True)])  # Tune: every epoch
def test_sweep_metric_must_be_reported_by_the_configured_evaluation(ray_starts, toy_splits, tmp_path,
                                                                    every_epochs, ok):
    sweep = tmp_path / "sweep.yaml"
    overrides = [o for o in tiny_overrides(toy_splits, tmp_path) if not o.startswith("eval.every")]
    overrides.append(f"eval.every_epochs={'null' if every_epochs is None else every_epochs}")
    sweep.write_text(json.dumps({"base_config": str(CONFIG), "overrides": overrides,
                                 "space": {"loss.temperature": {"grid": [0.1, 0.2]}},
                                 "metric": "val_lct_auc"}))
    if ok:
        assert load_sweep(sweep).metric == "val_lct_auc"
    else:
        with pytest.raises(ConfigError, match="'val_lct_auc' is reported only during validation"):
            load_sweep(sweep)
    assert ray_starts == []
