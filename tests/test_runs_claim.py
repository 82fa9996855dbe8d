"""Before and around a run: a run name is claimed by one training at a time, and SIGTERM during
preflight (here: while RAY_ADDRESS's handshake waits) ends the command with a message and 143.
Real processes, real sqlite MLflow store; no Ray cluster."""

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from _train_toys import CONFIGS, tiny_overrides

from clrdist.config import ConfigError, load_config
from clrdist.train.resume import RunNameClaim

HOLD = """
import sys, time
from clrdist.config import load_config
from clrdist.train.resume import RunNameClaim
claim = RunNameClaim(load_config(None, sys.argv[1:]))
print("claimed", flush=True)
time.sleep(60)
"""


def test_a_run_name_is_claimed_by_one_training_at_a_time(tmp_path):
    """Two trainings started together with the same tracking.run_name both ran (two FINISHED
    runs of one name): the claim is an flock, so the second is refused while the first holds
    it, and the name is free again once that process is gone, however it ended (SIGKILL here)."""
    sets = [f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "tracking.run_name=shared",
            f"checkpoint.storage_path={tmp_path / 'runs'}"]
    holder = subprocess.Popen([sys.executable, "-c", HOLD, *sets], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(ConfigError, match=rf"tracking.run_name 'shared': another training of this run name is running now \(pid {holder.pid} on "):
            RunNameClaim(load_config(None, sets))
        other = RunNameClaim(load_config(None, [*sets[:1], "tracking.run_name=other", sets[2]]))
        other.release()  # another name: no conflict
    finally:
        holder.kill()
        holder.wait()
    claim = RunNameClaim(load_config(None, sets))
    claim.release()


@pytest.mark.slow
def test_sigterm_during_preflight_exits_143_with_a_message(toy_splits, tmp_path):
    """SIGTERM while the driver waits on RAY_ADDRESS's handshake (before any run or cluster):
    exit 128 + 15 and one line saying no run was started (was: exit 15, no message)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    threading.Thread(target=lambda: [conns.append(srv.accept()) for _ in range(20)],
                     daemon=True).start()
    sets = [*tiny_overrides(toy_splits, tmp_path), "eval.lct=false"]
    argv = [sys.executable, "-m", "clrdist.cli", "train", str(CONFIGS / "demo.yaml"),
            *[a for o in sets for a in ("--set", o)]]
    env = {**__import__("os").environ, "RAY_ADDRESS": f"127.0.0.1:{srv.getsockname()[1]}"}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not conns and time.monotonic() < deadline:  # preflight reached the TCP probe
        time.sleep(0.2)
    time.sleep(1.0)  # the handshake's child process is waiting now
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "clrdist: stopped by SIGTERM; no run was started" in err and "Traceback" not in err
    from clrdist import tracking

    assert tracking.find_run(f"sqlite:///{tmp_path / 'mlflow.db'}", "clrdist", "x") is None
    c = tracking.client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert c.search_runs([e.experiment_id for e in c.search_experiments()]) == []
    srv.close()
