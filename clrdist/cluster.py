"""Start or join Ray: the one place every command (train, sweep, generate, demo) gets a cluster.

``RAY_ADDRESS`` (set by ``ray job submit``, ``slurm/ray_cluster.sh`` or the user) joins that
cluster, after a real handshake with its GCS within seconds (a port that accepts TCP but is not
Ray made ``ray.init`` retry for minutes); otherwise a local one is started, its dashboard bound to 127.0.0.1
and without Ray's Prometheus metrics endpoint (Ray binds it to every interface, unauthenticated;
docs/reliability.md says how to firewall a cluster you start yourself). A local cluster started here dies with this process even when it is
SIGKILLed: the watchdog (:mod:`clrdist.runtime`) kills whatever of it the kernel leaves behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from clrdist import runtime
from clrdist.errors import ClrdistError

# Ray Train starts a node-drain watcher actor per worker group (an autoscaler reclaiming a node);
# it is created restartable with the workers' actor handles as arguments, which Ray core reports
# as an error every time a worker group starts (ray-project/ray#53727). A local cluster has no
# drains to watch: it gets none unless the user asks (Ray Train passes the variable to its actors).
RAY_DRAIN_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


class ClusterError(ClrdistError):
    """RAY_ADDRESS names a cluster that does not answer."""


# A GCS client in a child process: its constructor retries for minutes against a port that is
# not Ray and cannot be interrupted; a process can be killed at the deadline.
_HANDSHAKE = ("import sys, ray._raylet as r; c = r.GcsClient(address=sys.argv[1]); "
              "c.internal_kv_get(b'clrdist-handshake', None, timeout=5); print(c.cluster_id.hex())")
HANDSHAKE_SECONDS = 15.0  # importing ray in the child takes ~2 s of it on a loaded machine


def check_ray_address(timeout: float = 5.0, handshake: float = HANDSHAKE_SECONDS) -> None:
    """RAY_ADDRESS must be a Ray cluster: for host:port (a GCS) a real handshake within
    ``handshake`` seconds, for ray:// and http(s):// addresses a TCP connection within
    ``timeout``. ray.init waits minutes, deaf to SIGTERM, on a dead or foreign one."""
    addr = os.environ.get("RAY_ADDRESS", "")
    scheme, _, rest = addr.rpartition("://")
    hostport = rest.rstrip("/")
    if not addr or addr in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    fix = ("start one (slurm/ray_cluster.sh, ray start --head) or unset it to start a local "
           "cluster")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise ClusterError(f"RAY_ADDRESS={addr}: no Ray cluster answers within {timeout:g} s ({e}); "
                           f"{fix}") from None
    if scheme:  # a Ray client or dashboard address: no GCS to shake hands with
        return
    try:
        p = subprocess.run([sys.executable, "-c", _HANDSHAKE, hostport], capture_output=True,
                           text=True, timeout=handshake, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"RAY_ADDRESS={addr}: accepts connections but does not answer Ray's "
                           f"handshake within {handshake:g} s (not a Ray GCS address?); {fix}") from None
    if p.returncode != 0:
        last = next((ln for ln in reversed(p.stderr.strip().splitlines()) if ln.strip()), "")
        raise ClusterError(f"RAY_ADDRESS={addr}: Ray's handshake failed ({last[:200]}); {fix}")


def start_local(num_cpus: int, *, log_to_driver: bool = True) -> None:
    """``ray.init`` of a local cluster, the one way (:func:`ensure_ray`; the tests' cluster too).

    The dashboard listens on 127.0.0.1 (it serves the state API Ray Train's controller polls).
    Ray's metrics agent serves Prometheus on 0.0.0.0, unauthenticated, and ray.init turns a
    127.0.0.1 node address back into the host's (services.resolve_ip_for_localhost), so it cannot
    be bound to the loopback: a local cluster collects no metrics (nothing listens); a `ray start
    --head` cluster the user starts keeps its own settings. No node-drain watcher unless the user
    asks (:data:`RAY_DRAIN_WATCHER`).
    """
    # lazy: ray (~0.6 s) only when a command starts a cluster
    import ray

    os.environ.setdefault(RAY_DRAIN_WATCHER, "0")
    ray.init(num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             log_to_driver=log_to_driver, _system_config={"enable_metrics_collection": False})


def ensure_ray(num_cpus: float = 0.0, *, log_to_driver: bool = True) -> bool:
    """Join the cluster in RAY_ADDRESS, or start a local one with at least ``num_cpus`` logical
    CPUs (a laptop may have fewer cores than workers: oversubscribe rather than hang waiting).

    Returns True when this call started or joined Ray, False when Ray was already initialised
    (the caller then must not shut it down). The local dashboard, bound to 127.0.0.1, serves the
    state API that Ray Train's controller polls.
    """
    # lazy: ray (~0.6 s) only when a command starts or joins a cluster
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        check_ray_address()
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log_to_driver)
        return True
    runtime.watch_cluster([], None)  # the watchdog starts before Ray: it must not be Ray's child
    before = runtime.child_pids()
    try:
        start_local(max(os.cpu_count() or 1, int(num_cpus + 0.999)), log_to_driver=log_to_driver)
    finally:  # a half-started cluster is cleaned up too
        try:
            session_dir = ray._private.worker._global_node.get_session_dir_path()
        except AttributeError:  # not started, or the private API moved: the heads still go
            session_dir = None
        runtime.watch_cluster(sorted(runtime.child_pids() - before), session_dir)
    return True
