"""clrdist.cluster: the one place commands start or join Ray."""

import socket
import subprocess
import sys

import pytest

from clrdist.cluster import ClusterError, check_ray_address


def test_a_dead_ray_address_is_refused_quickly(monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ClusterError, match=f"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers"):
        check_ray_address(timeout=1.0)


@pytest.mark.parametrize("addr", ["", "auto", "local"])
def test_no_address_or_auto_is_not_probed(monkeypatch, addr):
    monkeypatch.setenv("RAY_ADDRESS", addr)
    check_ray_address(timeout=0.1)  # nothing to dial: no error


@pytest.mark.integration
def test_local_cluster_has_no_drain_watcher_unless_asked(tmp_path):
    """A local cluster (no RAY_ADDRESS) turns Ray Train's node-drain watcher off, a user's
    setting wins, and a second call joins nothing new."""
    code = """
import os, sys, ray
from clrdist.cluster import RAY_DRAIN_WATCHER, ensure_ray
os.environ.pop("RAY_ADDRESS", None)
if sys.argv[1] != "unset":
    os.environ[RAY_DRAIN_WATCHER] = sys.argv[1]
started, again = ensure_ray(1), ensure_ray(1)
print(started, again, os.environ.get(RAY_DRAIN_WATCHER), ray.cluster_resources().get("CPU", 0) >= 1)
ray.shutdown()
"""
    for arg, want in (("unset", "0"), ("1", "1")):
        out = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True,
                             timeout=300, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split()[-4:] == ["True", "False", want, "True"], out.stdout
