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


def test_an_address_that_is_not_ray_is_refused_within_seconds(monkeypatch):
    """A RAY_ADDRESS that accepts TCP but is not Ray passed the TCP probe and hung train in
    ray.init for minutes: the handshake is a real GCS request, with a deadline."""
    import threading
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: [conns.append(srv.accept()) for _ in range(50)],
                     daemon=True).start()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=rf"RAY_ADDRESS=127.0.0.1:{port}: accepts connections but does not answer Ray's handshake within 4 s"):
        check_ray_address(timeout=1.0, handshake=4.0)
    assert time.monotonic() - t0 < 8
    srv.close()


@pytest.mark.integration
def test_a_local_cluster_exposes_nothing_and_answers_the_handshake(tmp_path):
    """Ray's Prometheus metrics endpoint listened on 0.0.0.0 during training: a local cluster
    serves none (Ray cannot bind it to the loopback), and its dashboard listens on 127.0.0.1.
    The same cluster, named in RAY_ADDRESS, passes the real GCS handshake."""
    code = """
import os, ray
from clrdist.cluster import check_ray_address, ensure_ray
os.environ.pop("RAY_ADDRESS", None)
ensure_ray(1)
node = ray._private.worker._global_node
ports = {"metrics": node.metrics_export_port, "dashboard": int(ray._private.worker.get_dashboard_url().rsplit(":", 1)[1])}
listening = {}
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    for line in open(table).readlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip, port = local.rsplit(":", 1)
        if state == "0A":
            listening.setdefault(int(port, 16), set()).add(ip)
os.environ["RAY_ADDRESS"] = node.gcs_address
check_ray_address()
for name, port in ports.items():
    print(name, sorted(listening.get(port, ())))
ray.shutdown()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines()[-2:])
    assert lines == {"metrics": "[]", "dashboard": "['0100007F']"}, out.stdout
