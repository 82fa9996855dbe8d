"""Verified reads: a missing, truncated or altered shard of any array raises a StoreError naming
the store, the array and the shard (never zeros), on open, on every read path, in
``verify_store``, ``clrdist data info [--verify]`` and ``clrdist data split``."""

import json
import logging

import numpy as np
import pytest

from clrdist.data.store import (
    ARRAYS,
    UNVERIFIED_ENV,
    StoreError,
    StoreWriter,
    _shard_key,
    open_store,
    verify_store,
)
from clrdist.data.stream import ShardedStream

N, P, CHUNK, SHARD_CHUNKS = 100, 5, 16, 2  # shards of 32 samples: 4 per array
NDIM = {"particles": 3, "mask": 2, "label": 1, "features": 2}


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, P)) < 0.7
    particles = rng.uniform(1, 10, (n, P, 3)).astype(np.float32) * mask[..., None]
    label = (np.arange(n) % 2).astype(np.int8)
    features = rng.normal(size=(n, 2)).astype(np.float32)
    return particles, mask, label, features


def write(path, data=None, **kw):
    with StoreWriter(path, kind="jet", particle_features=["pt", "eta", "phi"],
                     feature_names=["a", "b"], label_names={0: "qcd", 1: "top"}, n_particles=P,
                     chunk_size=CHUNK, shard_chunks=SHARD_CHUNKS, **kw) as w:
        w.append(*(data or _data()))
    return path


@pytest.fixture()
def good(tmp_path):
    return write(tmp_path / "good.zarr")


def _main(argv):
    from clrdist.cli import main

    return main(argv)


def _cli_error(capsys, argv):
    rc = _main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("clrdist: error: ") and len(err.splitlines()) == 1, err
    return err


def _damage(store, name, how, shard=1):
    f = store / name / _shard_key(NDIM[name], shard)
    raw = f.read_bytes()
    if how == "delete":
        f.unlink()
    elif how == "truncate":
        f.write_bytes(raw[: len(raw) // 2])
    else:  # alter: same size, one byte in the middle flipped
        i = len(raw) // 2
        f.write_bytes(raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:])
    return f"array {name!r}: shard {_shard_key(NDIM[name], shard)}"


def test_writer_records_every_shard(good):
    rec = json.loads((good / "zarr.json").read_text())["attributes"]["integrity"]
    assert rec["algorithm"] == "crc32c"
    for name in ARRAYS:
        keys = sorted(rec["files"][name])
        assert keys == [_shard_key(NDIM[name], k) for k in range(4)]
        for key, (size, crc) in rec["files"][name].items():
            assert (good / name / key).stat().st_size == size and 0 <= crc < 2**32
    # the all-zero label shard of a one-class store is on disk too (zarr skips it by default)
    one = write(good.parent / "one.zarr", (*_data()[:2], np.zeros(N, np.int8), _data()[3]))
    assert (one / "label" / "c" / "0").is_file()
    assert verify_store(good) == {"path": str(good), "checksums": True, "files_checked": 16,
                                  "files_total": 16, "bytes_checked": sum(
                                      s for f in rec["files"].values() for s, _ in f.values())}
    assert verify_store(good, sample=3)["files_checked"] == 3


@pytest.mark.parametrize("how, problem", [("delete", "is missing"),
                                          ("truncate", "bytes, {} recorded (truncated")])
@pytest.mark.parametrize("name", ARRAYS)
def test_missing_or_truncated_shard_fails_on_open(good, capsys, name, how, problem):
    size = (good / name / _shard_key(NDIM[name], 1)).stat().st_size
    where = _damage(good, name, how)
    with pytest.raises(StoreError) as e:
        open_store(good)
    msg = str(e.value)
    assert msg.startswith(f"{good}: {where} ") and problem.format(size) in msg
    for argv in (["data", "info", str(good)], ["data", "info", str(good), "--verify"],
                 ["data", "split", str(good), "--out-dir", str(good.parent / "parts")]):
        assert where in _cli_error(capsys, argv)
    assert not (good.parent / "parts").exists()


@pytest.mark.parametrize("name", ARRAYS)
def test_altered_shard_fails_on_every_read_path(good, capsys, name):
    where = _damage(good, name, "alter")
    want = f"{good}: {where} does not match its recorded CRC-32C"
    open_store(good)  # sizes still match: opening is cheap and succeeds
    reads = {
        "read_chunk": lambda s: s.read_chunk(2),  # chunk 2 lies in shard 1
        "read (zarr)": lambda s: s.read(40, 45),
        "read_all": lambda s: s.read_all(),
        "capped read_all": lambda s: s.read_all(max_samples=60),
        "stream": lambda s: list(ShardedStream(s, batch_size=10, num_threads=1)),
        "verify_store": verify_store,
    }
    for what, read in reads.items():
        with pytest.raises(StoreError) as e:
            read(open_store(good))
        assert str(e.value).startswith(want), (what, str(e.value))
    # untouched shards still read
    np.testing.assert_array_equal(open_store(good).read_chunk(0)["label"], _data()[2][:16])
    for argv in (["data", "info", str(good)], ["data", "info", str(good), "--verify"],
                 ["data", "split", str(good), "--out-dir", str(good.parent / "parts")]):
        assert want in _cli_error(capsys, argv)
    assert not (good.parent / "parts").exists()


def test_verify_sample_finds_a_damaged_shard_it_draws(good):
    _damage(good, "features", "alter", shard=3)
    hits = 0
    for seed in range(12):
        try:
            verify_store(good, sample=4, seed=seed)
        except StoreError as e:
            assert "array 'features': shard c/3/0" in str(e)
            hits += 1
    assert 0 < hits < 12  # 4 of 16 files per draw


def test_info_verify_reports_counts(good, capsys):
    assert _main(["data", "info", str(good), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verified: 16 files" in out and "sizes and CRC-32C match" in out
    assert _main(["data", "info", str(good), "--verify", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["verified"]["files_checked"] == 16 and info["integrity"]["files"] == 16


def test_split_children_are_verified_too(good, tmp_path):
    from clrdist.data.split import split_store

    outs = split_store(good, {"train": 0.5, "test": 0.5}, out_dir=tmp_path / "parts")
    res = verify_store(outs["train"])
    assert res["files_checked"] == res["files_total"] > 8  # the source_index array is recorded
    key = next(iter(open_store(outs["train"]).integrity.files["source_index"]))
    f = outs["train"] / "source_index" / key
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    with pytest.raises(StoreError, match="array 'source_index': shard c/0 does not match"):
        verify_store(outs["train"])


def _drop_integrity(path):
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].pop("integrity")
    (path / "zarr.json").write_text(json.dumps(meta))


def test_store_without_a_record_is_refused_unless_accepted(good, capsys, caplog, monkeypatch):
    """A removed 'integrity' attribute turned every check off with a warning only: now the store
    is refused (one line) unless the user accepts it with --allow-unverified; then it reads,
    said to be unverifiable, and a split of it carries a record again."""
    _drop_integrity(good)
    with pytest.raises(StoreError, match=r"no integrity record .*--allow-unverified"):
        open_store(good)
    err = _cli_error(capsys, ["data", "info", str(good)])
    assert f"{good}: no integrity record" in err
    with caplog.at_level(logging.WARNING, logger="clrdist.data.store"):
        s = open_store(good, allow_unverified=True)
    assert "no integrity record" in caplog.text and str(good) in caplog.text
    assert s.integrity is None and s.n == N
    np.testing.assert_array_equal(s.read_all()["label"], _data()[2])
    assert verify_store(s)["checksums"] is False
    assert _main(["--allow-unverified", "data", "info", str(good)]) == 0
    assert "warning: no integrity record" in capsys.readouterr().out
    assert "cannot verify: no integrity record" in _cli_error(
        capsys, ["--allow-unverified", "data", "info", str(good), "--verify"])
    from clrdist.data.split import split_store

    monkeypatch.setenv(UNVERIFIED_ENV, "1")
    outs = split_store(good, {"all": 1.0}, out_dir=good.parent / "re")
    monkeypatch.delenv(UNVERIFIED_ENV)
    assert verify_store(outs["all"])["checksums"] is True


@pytest.mark.parametrize("n", [12, 50, 200, 0])
def test_an_edited_array_length_is_refused(good, capsys, n):
    """shape[0] edited in an array's zarr.json added zero 'background' samples or hid some, and
    shape 0 was a ValueError traceback: the record holds every array's shape."""
    meta = json.loads((good / "label" / "zarr.json").read_text())
    meta["shape"][0] = n
    (good / "label" / "zarr.json").write_text(json.dumps(meta))
    err = _cli_error(capsys, ["data", "info", str(good), "--verify"])
    assert f"{good}: arrays disagree on the number of samples (particles {N}, label {n})" in err
    for name in ARRAYS:  # every array, the same way: only the record can tell
        meta = json.loads((good / name / "zarr.json").read_text())
        meta["shape"][0] = n
        (good / name / "zarr.json").write_text(json.dumps(meta))
    err = _cli_error(capsys, ["data", "info", str(good)])
    assert (f"{good}: array 'particles' has no samples" if n == 0
            else f"{good}: array 'particles' has {n} samples, {N} recorded") in err, err


def test_a_version_1_record_is_refused(good):
    """A record without shapes (clrdist before this check) does not cover array lengths."""
    meta = json.loads((good / "zarr.json").read_text())
    meta["attributes"]["integrity"].pop("shapes")
    (good / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="a version-1 integrity record"):
        open_store(good)
    assert open_store(good, allow_unverified=True).integrity is None


@pytest.mark.parametrize("key, value, says", [
    ("label_names", {"zero": "qcd"}, "attribute 'label_names': entry 'zero'"),
    ("label_names", {"0": 5}, "attribute 'label_names': entry '0'"),
    ("label_names", [0, 1], "attribute 'label_names': expected a mapping"),
    ("particle_features", "pt,eta,phi", "attribute 'particle_features': expected a list"),
    ("feature_names", [1, 2], "attribute 'feature_names': expected a list"),
    ("kind", "jets", "attribute 'kind': 'jets' is not one of"),
    ("provenance", "x", "attribute 'provenance': expected a mapping"),
])
def test_store_metadata_is_validated_on_open(good, capsys, key, value, says):
    """Non-integer label_names keys or a non-list particle_features were TypeError tracebacks."""
    meta = json.loads((good / "zarr.json").read_text())
    meta["attributes"][key] = value
    (good / "zarr.json").write_text(json.dumps(meta))
    err = _cli_error(capsys, ["data", "info", str(good)])
    assert f"{good}: {says}" in err, err


def test_truncated_shard_of_an_unverified_store_is_one_line(good, monkeypatch):
    """Without a record the reader still refuses a shard too short for its index (this was an
    OverflowError) or whose index points past its end."""
    _drop_integrity(good)
    monkeypatch.setenv(UNVERIFIED_ENV, "1")
    f = good / "particles" / _shard_key(3, 1)
    raw = f.read_bytes()
    f.write_bytes(raw[:10])
    with pytest.raises(StoreError, match=r"array 'particles': shard c/1/0/0 is truncated \(10 bytes"):
        open_store(good).read_chunk(2)
    f.write_bytes(raw[:100] + raw[-36:])  # the index intact, the data cut
    with pytest.raises(StoreError, match=r"array 'particles': shard c/1/0/0 is truncated or corrupt"):
        open_store(good).read_chunk(3)


def test_corrupt_array_metadata_is_one_line(good, capsys):
    (good / "mask" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "arr')
    err = _cli_error(capsys, ["data", "info", str(good)])
    assert f"{good}: array 'mask': unreadable metadata {good / 'mask' / 'zarr.json'}" in err
