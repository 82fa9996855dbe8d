"""Start or join Ray: the one place every command (train, sweep, generate, demo) gets a cluster.

``RAY_ADDRESS`` (set by ``ray job submit``, ``slurm/ray_cluster.sh`` or the user) joins that
cluster; otherwise a local one is started, its dashboard bound to 127.0.0.1. A local cluster
started here dies with this process even when it is SIGKILLed: the watchdog
(:mod:`clrdist.runtime`) kills whatever of it the kernel leaves behind.
"""

from __future__ import annotations

import os
import socket

from clrdist import runtime
from clrdist.errors import ClrdistError

# Ray Train starts a node-drain watcher actor per worker group (an autoscaler reclaiming a node);
# it is created restartable with the workers' actor handles as arguments, which Ray core reports
# as an error every time a worker group starts (ray-project/ray#53727). A local cluster has no
# drains to watch: it gets none unless the user asks (Ray Train passes the variable to its actors).
RAY_DRAIN_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


class ClusterError(ClrdistError):
    """RAY_ADDRESS names a cluster that does not answer."""


def check_ray_address(timeout: float = 5.0) -> None:
    """RAY_ADDRESS=host:port must accept a connection: ray.init waits minutes on a dead one."""
    addr = os.environ.get("RAY_ADDRESS", "")
    hostport = addr.split("://", 1)[-1].rstrip("/")
    if not addr or addr in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise ClusterError(f"RAY_ADDRESS={addr}: no Ray cluster answers within {timeout:g} s ({e}); "
                           "start one (slurm/ray_cluster.sh, ray start --head) or unset it "
                           "to start a local cluster") from None


def ensure_ray(num_cpus: float = 0.0, *, log_to_driver: bool = True) -> bool:
    """Join the cluster in RAY_ADDRESS, or start a local one with at least ``num_cpus`` logical
    CPUs (a laptop may have fewer cores than workers: oversubscribe rather than hang waiting).

    Returns True when this call started or joined Ray, False when Ray was already initialised
    (the caller then must not shut it down). The local dashboard, bound to 127.0.0.1, serves the
    state API that Ray Train's controller polls.
    """
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        check_ray_address()
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=log_to_driver)
        return True
    os.environ.setdefault(RAY_DRAIN_WATCHER, "0")
    runtime.watch_cluster([], None)  # the watchdog starts before Ray: it must not be Ray's child
    before = runtime.child_pids()
    try:
        ray.init(num_cpus=max(os.cpu_count() or 1, int(num_cpus + 0.999)), include_dashboard=True,
                 dashboard_host="127.0.0.1", log_to_driver=log_to_driver)
    finally:  # a half-started cluster is cleaned up too
        try:
            session_dir = ray._private.worker._global_node.get_session_dir_path()
        except AttributeError:  # not started, or the private API moved: the heads still go
            session_dir = None
        runtime.watch_cluster(sorted(runtime.child_pids() - before), session_dir)
    return True
