"""Every bad-input case of issue 3 through the real CLI (``clrdist data convert``): one line
naming the file and the problem, exit status 2, nothing left at the output."""

import h5py
import numpy as np
import pandas as pd
import pytest
from _convert import adc_events, toy_dijet_rows, write_adc, write_lhco, write_toptag

from clrdist.data.store import open_store
from clrdist.data.toy import toy_dataset


@pytest.fixture(scope="module")
def toy():
    return toy_dataset(400, seed=3)


def _cli_main():
    """The real entry point: exit status and one-line errors as users see them."""
    from clrdist.cli import main

    return main


def _run_bad(tmp_path, capsys, fmt, inputs, *extra):
    out = tmp_path / "out.zarr"
    before = set(tmp_path.iterdir())
    rc = _cli_main()(["data", "convert", fmt, *map(str, inputs), "--out", str(out),
                      "--no-progress", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clrdist: error: "), err
    assert "Traceback" not in err
    assert not out.exists() and set(tmp_path.iterdir()) == before  # no temp left either
    return lines[0]


@pytest.fixture()
def good_top(tmp_path, toy):
    return write_toptag(tmp_path / "good.h5", toy["particles"][:50], toy["mask"][:50], toy["label"][:50])


def test_bad_truncated(tmp_path, capsys, good_top):
    data = good_top.read_bytes()
    bad = tmp_path / "trunc.h5"
    bad.write_bytes(data[: len(data) // 2])
    msg = _run_bad(tmp_path, capsys, "toptag", [bad])
    assert "trunc.h5" in msg and "truncated" in msg


def test_bad_truncated_adc(tmp_path, capsys):
    good = write_adc(tmp_path / "background_full.h5", adc_events(2000))
    bad = tmp_path / "background_cut.h5"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    good.unlink()
    msg = _run_bad(tmp_path, capsys, "adc2021", [bad])
    assert "background_cut.h5" in msg and "truncated" in msg


def test_bad_empty(tmp_path, capsys):
    (tmp_path / "empty.h5").touch()
    msg = _run_bad(tmp_path, capsys, "lhco", [tmp_path / "empty.h5"])
    assert msg.endswith("empty.h5: empty file")


def test_bad_zero_rows(tmp_path, capsys):
    bad = write_lhco(tmp_path / "norows.h5", np.zeros((0, 2101)))
    assert "norows.h5: no rows" in _run_bad(tmp_path, capsys, "lhco", [bad])


def test_bad_not_hdf5(tmp_path, capsys):
    (tmp_path / "notes.h5").write_text("E_0,PX_0\n1,2\n")
    assert "notes.h5: not an HDF5 file" in _run_bad(tmp_path, capsys, "toptag", [tmp_path / "notes.h5"])


def test_bad_missing_file(tmp_path, capsys):
    assert "nope.h5: no such file" in _run_bad(tmp_path, capsys, "toptag", [tmp_path / "nope.h5"])


def test_bad_missing_column(tmp_path, capsys, toy):
    bad = write_toptag(tmp_path / "nolabel.h5", toy["particles"][:20], toy["mask"][:20],
                       toy["label"][:20], edit=lambda df: df.pop("is_signal_new"))
    msg = _run_bad(tmp_path, capsys, "toptag", [bad])
    assert "nolabel.h5: missing columns is_signal_new" in msg


def test_bad_wrong_table_key(tmp_path, capsys, toy):
    bad = tmp_path / "key.h5"
    pd.DataFrame({"E_0": [1.0], "is_signal_new": [0]}).to_hdf(bad, key="jets", format="table")
    assert "key.h5: no pandas table 'table'" in _run_bad(tmp_path, capsys, "toptag", [bad])


def test_bad_missing_dataset(tmp_path, capsys):
    bad = tmp_path / "background_x.h5"
    with h5py.File(bad, "w") as f:
        f["Objects"] = np.zeros((3, 19, 4))
    msg = _run_bad(tmp_path, capsys, "adc2021", [bad])
    assert "background_x.h5: missing dataset 'Particles'" in msg


def test_bad_wrong_shape_adc(tmp_path, capsys):
    bad = write_adc(tmp_path / "background_y.h5", np.zeros((5, 19, 3)))
    assert "has shape (5, 19, 3), expected (N, 19, 4)" in _run_bad(tmp_path, capsys, "adc2021", [bad])


def test_bad_wrong_shape_lhco(tmp_path, capsys):
    bad = write_lhco(tmp_path / "cols.h5", np.ones((4, 2102)))
    assert "cols.h5: table /df has 2102 columns" in _run_bad(tmp_path, capsys, "lhco", [bad])


def test_bad_nan(tmp_path, capsys):
    _, _, rows = toy_dijet_rows(10, seed=1)
    rows[7, 4] = np.nan
    bad = write_lhco(tmp_path / "nan.h5", rows)
    assert "nan.h5: row 7: NaN or inf in particles" in _run_bad(tmp_path, capsys, "lhco", [bad])


def test_bad_inf(tmp_path, capsys):
    x = adc_events(20)
    x[13, 9, 1] = np.inf
    bad = write_adc(tmp_path / "background_inf.h5", x)
    assert "background_inf.h5: row 13: NaN or inf in Particles" in _run_bad(tmp_path, capsys, "adc2021", [bad])


def test_bad_negative_pt(tmp_path, capsys):
    _, _, rows = toy_dijet_rows(10, seed=1)
    rows[3, 3] = -5.0  # pT of the second particle
    bad = write_lhco(tmp_path / "negpt.h5", rows)
    assert "negpt.h5: row 3: negative particle pT (-5)" in _run_bad(tmp_path, capsys, "lhco", [bad])


def test_bad_negative_energy(tmp_path, capsys, toy):
    def edit(df):
        df.loc[11, "E_2"] = -1.5

    bad = write_toptag(tmp_path / "negE.h5", toy["particles"][:20], toy["mask"][:20],
                       toy["label"][:20], edit=edit)
    assert "negE.h5: row 11: negative constituent energy E (-1.5)" in _run_bad(tmp_path, capsys, "toptag", [bad])


def test_bad_label(tmp_path, capsys, toy):
    lab = toy["label"][:30].astype(np.int64)
    lab[21] = 2
    bad = write_toptag(tmp_path / "lab.h5", toy["particles"][:30], toy["mask"][:30], lab)
    assert "lab.h5: row 21: label 2 outside the known set [0, 1]" in _run_bad(tmp_path, capsys, "toptag", [bad])


def test_bad_lhco_label(tmp_path, capsys):
    _, _, rows = toy_dijet_rows(6, seed=2)
    rows[4, -1] = 3
    bad = write_lhco(tmp_path / "lab3.h5", rows)
    assert "lab3.h5: row 4: label 3 outside the known set [0, 1]" in _run_bad(tmp_path, capsys, "lhco", [bad])


def test_bad_adc_max_particles(tmp_path, capsys):
    good = write_adc(tmp_path / "background_z.h5", adc_events(5))
    msg = _run_bad(tmp_path, capsys, "adc2021", [good], "--max-particles", "10")
    assert "fixed layout of 19 objects" in msg


def test_bad_second_file_leaves_nothing(tmp_path, capsys, good_top):
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    msg = _run_bad(tmp_path, capsys, "toptag", [good_top, tmp_path / "broken.h5"])
    assert "broken.h5: cannot read" in msg


def test_bad_error_late_in_file_leaves_nothing(tmp_path, capsys, toy):
    lab = toy["label"].astype(np.int64)
    lab[-1] = 7  # found only in the last block, after shards were written
    bad = write_toptag(tmp_path / "late.h5", toy["particles"], toy["mask"], lab)
    msg = _run_bad(tmp_path, capsys, "toptag", [bad], "--block-rows", "64", "--chunk-size", "16",
                   "--shard-chunks", "2")
    assert "late.h5: row 799: label 7" in msg


def test_bad_output_exists(tmp_path, capsys, good_top):
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "precious").write_text("x")
    rc = _cli_main()(["data", "convert", "toptag", str(good_top), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "out.zarr: output path already exists" in err and len(err.splitlines()) == 1
    assert (out / "precious").read_text() == "x"
    rc = _cli_main()(["data", "convert", "toptag", str(good_top), "--out", str(out), "--no-progress",
                      "--overwrite"])
    assert rc == 0 and open_store(out).n == 50
