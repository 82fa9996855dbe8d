"""The Zarr v3 sample store: layout, codecs, atomic writes, validation."""

import json
import shutil

import numpy as np
import pytest
import zarr

import clrdist
from clrdist.data.store import SCHEMA_VERSION, StoreError, StoreWriter, open_store
from clrdist.errors import ClrdistError

P, F, K = 6, 3, 2


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    particles = rng.uniform(0, 10, (n, P, F)).astype(np.float32)
    mask = rng.random((n, P)) < 0.7
    particles[~mask] = 0
    label = rng.integers(0, 2, n).astype(np.int8)
    features = rng.normal(size=(n, K)).astype(np.float32)
    return particles, mask, label, features


def _writer(path, **kw):
    args = dict(kind="jet", particle_features=["pt", "eta", "phi"], feature_names=["a", "b"],
                label_names={0: "qcd", 1: "top"}, n_particles=P, chunk_size=16, shard_chunks=4,
                provenance={"source": "unit-test"})
    args.update(kw)
    return StoreWriter(path, **args)


def test_roundtrip_many_small_appends(tmp_path):
    out = tmp_path / "s.zarr"
    d = _data(1000)
    with _writer(out) as w:
        for i in range(0, 1000, 7):  # appends that never align with chunks or shards
            w.append(*(a[i:i + 7] for a in d))
    s = open_store(out)
    assert (s.n, s.n_particles, s.chunk_size, s.shard_size) == (1000, P, 16, 64)
    assert s.n_chunks == 63
    got = s.read_all()
    for k, a in zip(("particles", "mask", "label", "features"), d, strict=True):
        assert got[k].dtype == a.dtype
        np.testing.assert_array_equal(got[k], a)
    np.testing.assert_array_equal(s.read(990, 2000)["label"], d[2][990:])
    c = s.read_chunk(62)
    assert len(c["label"]) == 1000 - 62 * 16
    # a capped read is a seeded random subset, in storage order
    sub = s.read_all(max_samples=10)
    rows = [int(np.flatnonzero((d[3] == f).all(1))[0]) for f in sub["features"]]
    assert rows == sorted(rows) and rows != list(range(10)) and len(set(rows)) == 10
    np.testing.assert_array_equal(sub["particles"], d[0][rows])
    np.testing.assert_array_equal(s.read_all(max_samples=10, seed=0)["features"], sub["features"])
    assert not np.array_equal(s.read_all(max_samples=10, seed=1)["features"], sub["features"])
    # temporary directory renamed away: only the store is left
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_layout_codecs_and_attributes(tmp_path):
    out = tmp_path / "s.zarr"
    with _writer(out) as w:
        w.append(*_data(200))
    g = zarr.open_group(str(out), mode="r")
    for name in ("particles", "mask", "label", "features"):
        arr = g[name]
        assert arr.chunks[0] == 16 and arr.shards[0] == 64
        meta = json.loads((out / name / "zarr.json").read_text())
        (sharding,) = [c for c in meta["codecs"] if c["name"] == "sharding_indexed"]
        blosc = [c for c in sharding["configuration"]["codecs"] if c["name"] == "blosc"][0]
        assert blosc["configuration"]["cname"] == "zstd"
        assert blosc["configuration"]["clevel"] == 3
        assert blosc["configuration"]["shuffle"] == "shuffle"
    # 200 samples in shards of 64: 4 shard files per array, not 13 chunk files
    assert len([f for f in (out / "particles").rglob("*") if f.is_file() and f.name != "zarr.json"]) == 4
    attrs = open_store(out).attrs
    assert attrs["schema_version"] == SCHEMA_VERSION
    assert attrs["kind"] == "jet"
    assert attrs["particle_features"] == ["pt", "eta", "phi"]
    assert attrs["feature_names"] == ["a", "b"]
    assert attrs["label_names"] == {"0": "qcd", "1": "top"}
    assert attrs["provenance"]["clrdist_version"] == clrdist.__version__
    assert attrs["provenance"]["source"] == "unit-test"


def test_buffers_whole_shards(tmp_path):
    w = _writer(tmp_path / "s.zarr")
    d = _data(150)
    w.append(*(a[:60] for a in d))
    assert w.n == 0  # nothing written until a whole shard (64) is buffered
    w.append(*(a[60:150] for a in d))
    assert w.n == 128
    w.close()
    assert open_store(tmp_path / "s.zarr").n == 150


def test_exception_leaves_nothing(tmp_path):
    out = tmp_path / "s.zarr"
    with pytest.raises(RuntimeError), _writer(out) as w:
        w.append(*_data(300))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    out = tmp_path / "s.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(StoreError, match="already exists") as e:
        _writer(out)
    assert str(out) in str(e.value)
    assert (out / "keep.txt").read_text() == "precious"
    with _writer(out, overwrite=True) as w:
        w.append(*_data(20))
    assert open_store(out).n == 20
    assert not (out / "keep.txt").exists()


def test_empty_store_refused(tmp_path):
    with pytest.raises(StoreError, match="no samples"), _writer(tmp_path / "s.zarr"):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad, match", [
    (lambda d: (d[0][:, :, :2], *d[1:]), "particles has shape"),
    (lambda d: (d[0], d[1], d[2] + 5, d[3]), r"sample 30: label [56] not in the declared labels \[0, 1\]"),
    (lambda d: (np.where(d[0] > 9, np.nan, d[0]), *d[1:]), "particles contain NaN or inf"),
    (lambda d: (d[0], d[1], d[2], np.full_like(d[3], np.inf)), "sample 30: features contain NaN or inf"),
    (lambda d: (_set(d[0], (3, 0, 0), -2.0), _set(d[1], (3, 0), True), *d[2:]),
     r"sample 33: negative pT \(-2 GeV\)"),
    (lambda d: (_set(d[0], (4, 1, 2), 0.5), _set(d[1], (4, 1), False), *d[2:]),
     r"sample 34: padding slot 1 holds non-zero values"),
    (lambda d: (_set(d[0], (5, 2, 0), 0.0), _set(d[1], (5, 2), True), *d[2:]),
     r"sample 35: real particle in slot 2 has pT 0 <= 0"),
])
def test_append_validates(tmp_path, bad, match):
    with pytest.raises(StoreError, match=match) as e, _writer(tmp_path / "s.zarr") as w:
        w.append(*_data(30))  # the index in the message counts earlier appends
        w.append(*bad(_data(30, seed=1)))
    assert str(e.value).startswith(f"{tmp_path / 's.zarr'}: append: ")
    assert list(tmp_path.iterdir()) == []


def _set(a, where, value):
    a = a.copy()
    a[where] = value
    return a


def test_store_error_is_user_facing():
    assert issubclass(StoreError, ClrdistError) and issubclass(StoreError, ValueError)


@pytest.fixture()
def good(tmp_path):
    out = tmp_path / "good.zarr"
    with _writer(out) as w:
        w.append(*_data(100))
    return out


def _edit_attrs(path, fn):
    meta = json.loads((path / "zarr.json").read_text())
    fn(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta))


def test_open_missing_and_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no such store"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "file.zarr").write_text("hello")
    with pytest.raises(StoreError, match="not a clrdist store") as e:
        open_store(tmp_path / "file.zarr")
    assert str(tmp_path / "file.zarr") in str(e.value)
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not a clrdist store"):
        open_store(tmp_path / "plain.zarr")


def test_open_wrong_schema_version(good):
    _edit_attrs(good, lambda a: a.update(schema_version=99))
    with pytest.raises(StoreError, match="schema version 99") as e:
        open_store(good)
    assert str(good) in str(e.value)


def test_open_missing_array(good):
    shutil.rmtree(good / "mask")
    with pytest.raises(StoreError, match="missing array 'mask'"):
        open_store(good)


def test_open_shape_disagreement(good):
    zarr.open_group(str(good), mode="r+").create_array(
        "label", shape=(99,), dtype="int8", chunks=(16,), overwrite=True)
    with pytest.raises(StoreError, match="disagree on the number of samples"):
        open_store(good)


def test_open_dtype_disagreement(good):
    zarr.open_group(str(good), mode="r+").create_array(
        "features", shape=(100, 2), dtype="float64", chunks=(16, 2), overwrite=True)
    with pytest.raises(StoreError, match="'features' has dtype float64"):
        open_store(good)


def test_open_feature_names_disagree(good):
    _edit_attrs(good, lambda a: a.update(feature_names=["a", "b", "c"]))
    with pytest.raises(StoreError, match="features have 2 columns but feature_names names 3"):
        open_store(good)


def test_open_missing_attribute(good):
    _edit_attrs(good, lambda a: a.pop("label_names"))
    with pytest.raises(StoreError, match="missing group attribute 'label_names'"):
        open_store(good)


def test_direct_shard_reads_match_zarr(tmp_path):
    out = tmp_path / "s.zarr"
    d = _data(1000, seed=3)
    with _writer(out) as w:
        w.append(*d)
    s = open_store(out)
    assert s._fast.ok  # the layout StoreWriter writes is read straight from the shard files
    for i in range(s.n_chunks):
        fast = s.read_chunk(i)
        ref = {k: np.asarray(a[slice(*s.chunk_bounds(i))]) for k, a in s.arrays.items()}
        for k in ref:
            assert fast[k].dtype == ref[k].dtype and fast[k].flags.writeable
            np.testing.assert_array_equal(fast[k], ref[k])
    assert len(s.read_chunk(s.n_chunks - 1)["label"]) == 1000 - 62 * 16


def test_other_layouts_fall_back_to_zarr(tmp_path):
    out = tmp_path / "s.zarr"
    d = _data(100)
    with _writer(out) as w:
        w.append(*d)
    # rewrite one array without sharding: still a valid store, read through zarr (its shard
    # checksums no longer apply: drop the record, as for a store written before checksums)
    zarr.open_group(str(out), mode="r+").create_array(
        "label", data=d[2], chunks=(16,), overwrite=True)
    _edit_attrs(out, lambda a: a.pop("integrity"))
    s = open_store(out, allow_unverified=True)
    assert not s._fast.ok
    np.testing.assert_array_equal(s.read_chunk(6)["label"], d[2][96:])
    np.testing.assert_array_equal(s.read_chunk(2)["particles"], d[0][32:48])


@pytest.mark.parametrize("bad", [0.7, 257, float("nan"), 1.2, -129])
def test_labels_are_checked_before_the_cast(tmp_path, bad):
    """The writer turned labels 0.7, 257, NaN, 1.2 into 0, 1, 0, 1 without an error; now the
    append is refused naming the sample, and nothing is written."""
    out = tmp_path / "s.zarr"
    p, m, lab, f = _data(40)
    lab = lab.astype(np.float64 if isinstance(bad, float) else np.int64)
    lab[17] = bad
    with pytest.raises(StoreError, match=rf"{out}: append: sample 17: label .* is not an integer in -128..127"):
        with _writer(out) as w:
            w.append(p, m, lab, f)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_integer_valued_float_labels_are_written(tmp_path):
    out = tmp_path / "s.zarr"
    p, m, lab, f = _data(40)
    with _writer(out) as w:
        w.append(p, m, lab.astype(np.float32), f)
    np.testing.assert_array_equal(open_store(out).read_all()["label"], lab)
