"""Physical sanity at the door: NaN / inf, negative pT, masks inconsistent with the particles and
undeclared labels are refused by the writer (tests/test_store.py) and reported by ``clrdist data
info`` and :func:`check_sample_sanity` for stores that hold them anyway (older or foreign)."""

import json

import numpy as np
import pytest
import zarr
from test_verify import N, _data, write

from clrdist.data.store import StoreError, _file_records, check_sample_sanity, open_store


def _rewrite(path, name, fn):
    """Change one array in place through zarr and re-record its checksums (a store that was
    written with bad values, as older clrdist or other tools could)."""
    a = zarr.open_group(str(path), mode="r+")[name]
    a[:] = fn(np.asarray(a[:]))
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["integrity"]["files"][name] = _file_records(path / name)
    (path / "zarr.json").write_text(json.dumps(meta))


def _at(row, slot, col, value):
    def fn(v):
        v = v.copy()
        v[(row, slot, col)[: v.ndim]] = value
        return v
    return fn


_mask = _data()[1]
REAL = int(np.flatnonzero(_mask[37])[0])  # a real slot of sample 37
PAD = int(np.flatnonzero(~_mask[37])[0])  # a padding slot of sample 37

CASES = {
    "nan": ("particles", _at(37, REAL, 1, np.nan), "particles contain NaN or inf"),
    "inf feature": ("features", _at(37, 1, 0, np.inf), "features contain NaN or inf"),
    "negative pt": ("particles", _at(37, REAL, 0, -3.0), "negative pT (-3 GeV)"),
    "padding not zero": ("particles", _at(37, PAD, 2, 0.7),
                         f"padding slot {PAD} holds non-zero values (mask says padding)"),
    "real with pt 0": ("particles", _at(37, REAL, 0, 0.0),
                       f"real particle in slot {REAL} has pT 0 <= 0"),
    "mask marks padding real": ("mask", _at(37, PAD, 0, True),
                                f"real particle in slot {PAD} has pT 0 <= 0"),
    "undeclared label": ("label", _at(37, 0, 0, 7), "label 7 not in the declared labels [0, 1]"),
}


def test_clean_store_passes(tmp_path):
    s = open_store(write(tmp_path / "s.zarr"))
    assert check_sample_sanity(s, n=40) == {"path": str(s.path), "checked": 40, "bad": 0}
    assert check_sample_sanity(s, n=None)["checked"] == N


@pytest.mark.parametrize("case", list(CASES))
def test_bad_values_are_reported(tmp_path, capsys, case):
    from clrdist.cli import main

    name, fn, problem = CASES[case]
    path = write(tmp_path / "s.zarr")
    _rewrite(path, name, fn)
    # data info reports it (exit status 1) ...
    assert main(["data", "info", str(path), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["problems"] == {"samples": 1, "examples": [f"sample 37: {problem}"]}
    assert main(["data", "info", str(path)]) == 1
    assert f"sample 37: {problem}" in capsys.readouterr().out.replace("\n", "")
    # ... and the pre-training check refuses it, naming the store and the sample
    with pytest.raises(StoreError) as e:
        check_sample_sanity(path, n=None)
    assert str(e.value) == (f"{path}: 1 of {N} checked samples fail the sanity checks; "
                            f"first: sample 37: {problem}")
    with pytest.raises(StoreError, match=f"first: sample 37: {problem[:12]}"):
        check_sample_sanity(path, n=N - 1, seed=1)  # a random subset that holds sample 37


def test_sampled_check_names_storage_indices(tmp_path):
    path = write(tmp_path / "s.zarr")
    _rewrite(path, "features", lambda v: np.where(np.arange(N)[:, None] % 10 == 3, np.nan, v))
    with pytest.raises(StoreError) as e:
        check_sample_sanity(path, n=50, seed=0)
    msg = str(e.value)
    first = int(msg.split("first: sample ")[1].split(":")[0])
    assert first % 10 == 3 and "of 50 checked samples" in msg
