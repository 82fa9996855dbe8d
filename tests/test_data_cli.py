"""``clrdist data toy|info|split`` through the real CLI entry point, and split_store itself."""

import json

import numpy as np
import pytest

from clrdist.data.split import check_disjoint, source_index, split_store
from clrdist.data.store import StoreError, open_store
from clrdist.data.toy import write_toy_store


def _main():
    """The real entry point: exit status and one-line errors as users see them."""
    from clrdist.cli import main

    return main


@pytest.fixture(scope="module")
def toy_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "toy.zarr"
    assert _main()(["data", "toy", "--n-per-class", "1500", "--out", str(out), "--seed", "4"]) == 0
    return out


def test_toy_command(toy_store, capsys):
    s = open_store(toy_store)
    assert s.n == 3000 and s.attrs["provenance"]["seed"] == 4
    rc = _main()(["data", "toy", "--n-per-class", "10", "--out", str(toy_store)])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and str(toy_store) in err


def test_info_json(toy_store, capsys):
    assert _main()(["data", "info", str(toy_store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    d = open_store(toy_store).read_all()
    assert info["samples"] == 3000
    assert info["labels"] == {"qcd (0)": 1500, "top (1)": 1500}
    mult = d["mask"].sum(1)
    assert info["multiplicity"]["min"] == mult.min() and info["multiplicity"]["max"] == mult.max()
    assert info["multiplicity"]["mean"] == pytest.approx(mult.mean())
    assert info["multiplicity"]["median"] == int(np.quantile(mult, 0.5, method="inverted_cdf"))
    mass = info["features"]["jet_mass"]
    assert mass["min"] == pytest.approx(d["features"][:, 3].min())
    assert mass["max"] == pytest.approx(d["features"][:, 3].max())
    assert info["chunk_shape"]["particles"] == [4096, 50, 3]
    assert info["shard_shape"]["particles"] == [65536, 50, 3]
    raw = sum(a.nbytes for a in d.values())
    assert info["bytes_uncompressed"] == raw
    assert info["compression_ratio"] == pytest.approx(raw / info["bytes_on_disk"])
    assert info["compression_ratio"] > 1.2


def test_info_table(toy_store, capsys):
    assert _main()(["data", "info", str(toy_store)]) == 0
    out = capsys.readouterr().out
    for word in ("samples", "3000", "multiplicity", "jet_mass", "ratio"):
        assert word in out


def test_info_not_a_store(tmp_path, capsys):
    (tmp_path / "x.zarr").mkdir()
    rc = _main()(["data", "info", str(tmp_path / "x.zarr")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("clrdist: error: ") and "not a clrdist store" in err
    assert len(err.splitlines()) == 1


def test_split_command_disjoint_and_recorded(toy_store, tmp_path, capsys):
    rc = _main()(["data", "split", str(toy_store), "--fractions", "0.8,0.1,0.1",
                  "--out-dir", str(tmp_path), "--seed", "1"])
    assert rc == 0
    paths = [tmp_path / f"toy_{n}.zarr" for n in ("train", "val", "test")]
    stores = [open_store(p) for p in paths]
    assert [s.n for s in stores] == [2400, 300, 300]
    check_disjoint(*paths)
    parent = open_store(toy_store)
    pdata = parent.read_all()
    idx = [source_index(s) for s in stores]
    np.testing.assert_array_equal(np.sort(np.concatenate(idx)), np.arange(3000))
    for s, i in zip(stores, idx, strict=True):
        rec = s.attrs["provenance"]["split"]
        assert rec["parent"] == str(toy_store.resolve())
        assert rec["parent_content_sha256"] == parent.content_hash()
        np.testing.assert_array_equal(s.read_all()["particles"], pdata["particles"][i])
        assert s.attrs["provenance"]["seed"] == 4  # the parent's provenance is kept
    # the same seed gives the same split; a different seed a different one
    again = split_store(toy_store, {"train": 0.8, "val": 0.1, "test": 0.1}, out_dir=tmp_path / "b",
                        seed=1)
    np.testing.assert_array_equal(source_index(again["val"]), idx[1])
    other = split_store(toy_store, {"train": 0.8, "val": 0.1, "test": 0.1}, out_dir=tmp_path / "c",
                        seed=2)
    assert not np.array_equal(source_index(other["val"]), idx[1])


def test_disjointness_check_catches_overlap_and_other_parents(toy_store, tmp_path):
    a = split_store(toy_store, {"x": 0.5, "y": 0.5}, out_dir=tmp_path / "a", seed=0)
    b = split_store(toy_store, {"x": 0.5, "y": 0.5}, out_dir=tmp_path / "b", seed=1)
    with pytest.raises(StoreError, match="shares .* samples"):
        check_disjoint(a["x"], b["x"])
    other = write_toy_store(tmp_path / "other.zarr", n_per_class=200, seed=9)
    c = split_store(other, {"x": 0.5, "y": 0.5}, out_dir=tmp_path / "c", seed=0)
    with pytest.raises(StoreError, match="different parents"):
        check_disjoint(a["x"], c["y"])
    with pytest.raises(StoreError, match="not a split store"):
        check_disjoint(toy_store)


def test_split_bad_fractions_and_existing(toy_store, tmp_path, capsys):
    m = _main()
    assert m(["data", "split", str(toy_store), "--fractions", "0.8,0.3", "--out-dir", str(tmp_path)]) == 2
    assert "sum to at most 1" in capsys.readouterr().err
    assert m(["data", "split", str(toy_store), "--fractions", "a,b", "--out-dir", str(tmp_path)]) == 2
    assert "expected comma-separated numbers" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "toy_val.zarr").mkdir()
    assert m(["data", "split", str(toy_store), "--out-dir", str(tmp_path)]) == 2
    assert "toy_val.zarr: output path already exists" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy_val.zarr"]  # nothing else written
    assert m(["data", "split", str(toy_store), "--out-dir", str(tmp_path), "--overwrite"]) == 0
    assert open_store(tmp_path / "toy_val.zarr").n == 300


def test_split_sizes_when_fractions_do_not_fill(toy_store, tmp_path):
    out = split_store(toy_store, {"a": 0.25, "b": 0.5}, out_dir=tmp_path, seed=0)
    assert open_store(out["a"]).n == 750 and open_store(out["b"]).n == 1500
    check_disjoint(*out.values())


@pytest.mark.parametrize("argv, needle", [
    (["--fractions", "0.5,nan"], "split fractions must be positive"),
    (["--fractions", "0.5,inf"], "split fractions must be positive"),
    (["--fractions", "0.5,0.5", "--names", "../../escaped,b"], "split name 'toy_../../escaped'"),
    (["--fractions", "0.5,0.5", "--names", "a/b,c"], "split name 'toy_a/b'"),
])
def test_split_refuses_before_writing_anything(toy_store, tmp_path, capsys, argv, needle):
    """--fractions 0.5,nan exited 2 but left a finished val_train.zarr; --names ../../escaped
    wrote outside the output folder. Now both fail in one line and nothing is written."""
    out = tmp_path / "out"
    out.mkdir()
    rc = _main()(["data", "split", str(toy_store), "--out-dir", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.rglob("*.zarr*")) == [] and list(toy_store.parent.parent.glob("escaped*")) == []


def test_a_failing_split_leaves_no_split(toy_store, tmp_path, monkeypatch):
    """All splits or none: the second child failing at its close removes the first one."""
    from clrdist.data.store import StoreWriter

    real_close, calls = StoreWriter.close, []

    def close(self):
        calls.append(self.path)
        if len(calls) == 2:
            raise StoreError(f"{self.path}: cannot write the store: no space left on device")
        return real_close(self)

    monkeypatch.setattr(StoreWriter, "close", close)
    with pytest.raises(StoreError, match="no space left"):
        split_store(toy_store, {"a": 0.5, "b": 0.5}, out_dir=tmp_path)
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []
