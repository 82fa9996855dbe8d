"""The driver's watchdog (clrdist.runtime): a driver that ends without closing its MLflow run
leaves it KILLED with the reason, one that closed it leaves it alone, the watchdog then exits, and
the driver's interpreter exits without a child still running (Python's ResourceWarning).
tests/test_runs_resume.py SIGKILLs a real training driver with its Ray cluster."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _waiting import wait_for

from clrdist import tracking

pytestmark = pytest.mark.integration  # real driver processes and MLflow stores, ~15 s

DRIVER = """
import sys
from clrdist import runtime, tracking
uri = sys.argv[1]
run_id = tracking.start_run(uri, "watched", {})
runtime.watch_run(uri, run_id)
if sys.argv[2] == "release":
    runtime.release_run(run_id)
print(run_id)
"""


def watchdogs_of(pid: int) -> list[int]:
    """Processes whose command line runs ``clrdist.runtime._watch(pid)``."""
    found = []
    for d in (d for d in os.listdir("/proc") if d.isdigit()):
        try:
            if f"r._watch({pid})" in Path(f"/proc/{d}/cmdline").read_text():
                found.append(int(d))
        except OSError:
            continue
    return found


@pytest.mark.parametrize("ending", ["exit", "release"])
def test_the_watchdog_closes_what_the_driver_left_open_and_then_exits(tmp_path, ending):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    driver = subprocess.Popen([sys.executable, "-X", "dev", "-c", DRIVER, uri, ending],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 0, err[-3000:]
    assert "ResourceWarning" not in err, err[-3000:]  # no child still running at exit
    run_id = out.split()[-1]
    wait_for(lambda: not watchdogs_of(driver.pid), 60, "the watchdog to exit")
    run = tracking.get_run(uri, run_id)
    if ending == "release":  # closed by the driver (here: released only): left alone
        assert run["status"] == "RUNNING" and "clrdist.failure_reason" not in run["tags"]
    else:
        assert run["status"] == "KILLED"
        assert f"driver process {driver.pid} on" in run["tags"]["clrdist.failure_reason"]
