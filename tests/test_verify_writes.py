"""Writing stores on an unlucky file system: disk full and read-only file systems are one-line
errors naming the path (real tmpfs mounts where this process may mount), and the temporary
directories of killed writers (real SIGKILL) are removed by the next write to the same place."""

import logging
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from test_verify import _data, write

from clrdist.data.store import StoreError, clean_stale_tmp, open_store


@pytest.fixture()
def tmpfs(tmp_path):
    """mount(options) -> a fresh tmpfs directory (skips where mounting is not permitted)."""
    mounted = []

    def mount(options):
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=False)


def _noise(n):
    """Incompressible samples (so a small file system fills)."""
    rng = np.random.default_rng(5)
    p, mask, label, _ = _data(n)
    particles = (rng.uniform(1, 10, p.shape) * mask[..., None]).astype(np.float32)
    return particles, mask, label, rng.normal(size=(n, 2)).astype(np.float32)


@pytest.mark.parametrize("shuffle", [None, 0])
def test_disk_full_is_one_line_naming_the_path(tmpfs, shuffle):
    mnt = tmpfs("size=128k")
    out = mnt / "s.zarr"
    with pytest.raises(StoreError) as e:
        write(out, _noise(2000), shuffle_seed=shuffle)
    msg = str(e.value)
    assert msg.startswith(f"{out}: cannot ") and "no space left on device" in msg
    assert len(msg.splitlines()) == 1
    assert list(mnt.iterdir()) == []  # the temporary store is gone, nothing at the output


def test_disk_full_through_the_cli(tmpfs, capsys):
    from clrdist.cli import main

    mnt = tmpfs("size=256k")
    assert main(["data", "toy", "--n-per-class", "3000", "--out", str(mnt / "toy.zarr")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"clrdist: error: {mnt / 'toy.zarr'}: cannot ")
    assert "no space left on device" in err and len(err.splitlines()) == 1
    assert list(mnt.iterdir()) == []


def test_read_only_file_system_is_one_line(tmpfs, capsys):
    from clrdist.cli import main

    mnt = tmpfs("size=1m,ro")
    with pytest.raises(StoreError) as e:
        write(mnt / "s.zarr")
    assert str(e.value).startswith(f"{mnt / 's.zarr'}: cannot create the store: read-only file system")
    rc = main(["data", "toy", "--n-per-class", "10", "--out", str(mnt / "toy.zarr")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "read-only file system" in err and len(err.splitlines()) == 1


_WRITER = textwrap.dedent("""
    import time
    import numpy as np
    from clrdist.data.store import StoreWriter
    w = StoreWriter({out!r}, kind="jet", particle_features=["pt", "eta", "phi"],
                    feature_names=["a", "b"], label_names={{0: "qcd", 1: "top"}}, n_particles=5,
                    chunk_size=16, shard_chunks=2, shuffle_seed=0)
    w.append(np.ones((500, 5, 3), np.float32), np.ones((500, 5), bool), np.zeros(500, np.int8),
             np.zeros((500, 2), np.float32))
    print("ready", flush=True)
    time.sleep(120)
""")


def _start_writer(out):
    code = _WRITER.format(out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_killed_writer_leftovers_are_removed_by_the_next_write(tmp_path, caplog):
    out = tmp_path / "s.zarr"
    killed = _start_writer(out)
    (left,) = tmp_path.glob("s.zarr.tmp-*")
    assert (left / ".staging").is_dir()  # half-written
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    killed.stdout.close()
    assert left.is_dir()  # SIGKILL: nothing could clean up
    orphan = tmp_path / "s.zarr.tmp-0123456789ab"  # no writer record (older clrdist)
    orphan.mkdir()
    other = tmp_path / "t.zarr.tmp-0123456789ab"  # another output's: not ours to touch
    other.mkdir()
    with caplog.at_level(logging.WARNING, logger="clrdist.data.store"):
        write(out)
    assert not left.exists()
    assert f"removed {left}: temporary store of a killed writer (pid {killed.pid})" in caplog.text
    assert orphan.is_dir() and f"rm -r {orphan}" in caplog.text
    assert other.is_dir()
    assert open_store(out).n == 100


def test_a_running_writers_temporary_store_is_left_alone(tmp_path):
    out = tmp_path / "s.zarr"
    running = _start_writer(out)
    try:
        (live,) = tmp_path.glob("s.zarr.tmp-*")
        write(out)  # same output, another process still writing: its directory survives
        assert live.is_dir() and open_store(out).n == 100
    finally:
        running.kill()
        running.wait()
        running.stdout.close()
    assert clean_stale_tmp(out) == [live] and not live.exists()  # gone once it is gone
