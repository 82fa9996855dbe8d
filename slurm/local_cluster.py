"""A throwaway two-node SLURM on this machine, for the tests and bench/scaling.py.

Debian's slurm-wlm runs several slurmd daemons on one host with ``slurmd -N NAME`` when
slurm.conf gives every node its own ``Port`` and ``%n`` in ``SlurmdSpoolDir``, ``SlurmdPidFile``
and ``SlurmdLogFile``. Everything (munge key and socket, slurm.conf, state, spool, logs) lives in
one folder; nothing in /etc is touched and ``stop()`` ends every daemon it started.

    python slurm/local_cluster.py up DIR      # prints `export SLURM_CONF=DIR/slurm.conf`
    python slurm/local_cluster.py down DIR

Needs root (slurmd runs job steps as their user) and slurm-wlm + munge, which ``install()`` takes
from apt when they are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("slurmctld", "slurmd", "sbatch", "srun", "munged")


def unavailable() -> str | None:
    """Why a local SLURM cannot be started here (None if it can)."""
    if not sys.platform.startswith("linux"):
        return "local SLURM needs Linux"
    if os.geteuid() != 0:
        return "local SLURM needs root (slurmd runs job steps as their user)"
    if all(shutil.which(b) for b in BINARIES):
        return None
    if not shutil.which("apt-get"):
        return f"local SLURM needs {' and '.join(PACKAGES)} (no apt-get to install them)"
    return None


class InstallFailed(RuntimeError):
    """apt-get could not install slurm-wlm + munge (no network, no such package, a held lock)."""


def install(timeout: float = 600) -> None:
    """apt-get install slurm-wlm munge if any of their programs is missing; InstallFailed (with
    apt's last words) if that does not work."""
    if all(shutil.which(b) for b in BINARIES):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    lock = ["-o", "DPkg::Lock::Timeout=120"]  # wait for another apt (unattended upgrades) to end
    for args in (["update", "-qq"],
                 ["install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        try:
            r = subprocess.run(["apt-get", *lock, *args], env=env, capture_output=True, text=True,
                               timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise InstallFailed(f"apt-get {args[0]}: {e}") from None
        if r.returncode != 0:
            raise InstallFailed(f"apt-get {args[0]} exited {r.returncode}: "
                                f"{(r.stderr or r.stdout).strip()[-500:]}")
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        raise InstallFailed(f"installed {' '.join(PACKAGES)} but {', '.join(missing)} not on PATH")


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalSlurm:
    """slurmctld + one slurmd per node name, all on this host, configured under ``root``."""

    def __init__(self, root: str | Path, nodes: tuple[str, ...] = ("n1", "n2"),
                 cpus: int | None = None):
        self.root = Path(root).resolve()
        self.nodes = nodes
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._procs: list[subprocess.Popen] = []

    # -- configuration ------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r / "munge", 0o700)
        key = r / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o600)
        host = socket.gethostname().split(".")[0]
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes))
        lines = [
            "ClusterName=clrdistlocal",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge",
            f"AuthInfo=socket={r / 'munge' / 'munge.socket'}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmdPidFile={r}/slurmd-%n.pid",
            f"SlurmdLogFile={r / 'log'}/slurmd-%n.log",
            f"SlurmctldPidFile={r}/slurmctld.pid",
            f"SlurmctldLogFile={r / 'log'}/slurmctld.log",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "SchedulerType=sched/builtin",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "MpiDefault=none", "ReturnToService=2", "SlurmdParameters=config_overrides",
            "KillWait=10", "InactiveLimit=0", "MinJobAge=600", "JobRequeue=1",
        ]
        for name, port in zip(self.nodes, node_ports, strict=True):
            lines.append(f"NodeName={name} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} "
                         f"CPUs={self.cpus} State=UNKNOWN")
        lines.append(f"PartitionName=local Nodes={','.join(self.nodes)} Default=YES "
                     "MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    # -- lifecycle ----------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 (closed with the daemon)
        self._procs.append(subprocess.Popen(args, env=self.env, stdout=log, stderr=log,
                                            start_new_session=True))
        log.close()

    def start(self, timeout: float = 60) -> LocalSlurm:
        self._write_config()
        m = self.root / "munge"
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={m / 'munge.socket'}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        self._wait(lambda: (m / "munge.socket").exists(), timeout, "munged socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        for name in self.nodes:
            self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-N", name, "-f", str(self.conf)])
        self._wait(self._all_idle, timeout, f"nodes {', '.join(self.nodes)} idle")
        return self

    def _all_idle(self) -> bool:
        r = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=False)
        states = dict(line.split() for line in r.stdout.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in self.nodes)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [p.args[0] for p in self._procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "".join(f"\n--- {f.name}\n{f.read_text()[-2000:]}"
                               for f in sorted((self.root / "log").glob("*")) if f.is_file())
                self.stop()
                raise RuntimeError(f"local SLURM: {what} not ready "
                                   f"({'exited: ' + ', '.join(dead) if dead else 'timeout'}){logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job, wait for it to end, then stop the daemons this object started."""
        if any(p.poll() is None for p in self._procs):
            self.run(["scancel", "--full", "--user=root"], check=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.run(
                    ["squeue", "-h", "-t", "RUNNING,COMPLETING,PENDING,REQUEUED"],
                    check=False).stdout.strip():
                time.sleep(0.5)
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()

    # -- commands -----------------------------------------------------------------------------
    def run(self, args: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
        """A SLURM client command (sbatch, squeue, scontrol, ...) against this cluster."""
        kw.setdefault("env", self.env)
        return subprocess.run(args, check=check, capture_output=True, text=True, **kw)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, Reason, ...)."""
        out = self.run(["scontrol", "show", "job", "-o", job_id], check=False).stdout
        return dict(f.split("=", 1) for f in out.split() if "=" in f)

    def job_state(self, job_id: str) -> str:
        return self.job_info(job_id).get("JobState", "UNKNOWN")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("up", "down"):
        print("usage: local_cluster.py up|down DIR", file=sys.stderr)
        return 2
    root = Path(argv[1])
    if argv[0] == "up":
        if (why := unavailable()) is not None:
            print(f"local_cluster: {why}", file=sys.stderr)
            return 2
        try:
            install()
        except InstallFailed as e:
            print(f"local_cluster: {e}", file=sys.stderr)
            return 2
        cluster = LocalSlurm(root).start()
        pids = " ".join(str(p.pid) for p in cluster._procs)
        (root / "daemons.pid").write_text(pids)
        print(f"export SLURM_CONF={cluster.conf}")
        return 0
    for pid in (root / "daemons.pid").read_text().split():
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
