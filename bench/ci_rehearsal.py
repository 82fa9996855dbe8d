"""What CI does, on this machine: clone the repository fresh, run ``bash .ci/run`` in the clone,
and record how long it took and what each pytest call reported. Writes a results file.

    python -m bench.ci_rehearsal --out docs/results/ci_rehearsal.json [--repo .] [--dir DIR]

The clone has no ``.venv``: the run installs everything as CI does (``make`` creates it), so the
total includes the install. Rows: one per pytest summary line of the log (the cluster tier, then
``make test``), with its passed / skipped / failed / deselected counts, pytest's own seconds and
the ten slowest tests it printed. The log stays in DIR/ci_run.log. Run it with
nothing else on the machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_results  # noqa: E402

SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<seconds>[\d.]+)s")
DURATION = re.compile(r"^(?P<seconds>[\d.]+)s (?P<when>call|setup|teardown)\s+(?P<test>\S+)")
STAGES = ("cluster tier (make test-cluster)", "make test")


def parse_log(text: str) -> list[dict]:
    """One row per pytest summary line of a ``.ci/run`` log, in order, each with the slowest
    durations pytest printed before it (its own ``--durations``)."""
    rows, pending = [], []
    for line in text.splitlines():
        if m := SUMMARY.match(line.strip()):
            counts = {k: int(n) for n, k in re.findall(r"(\d+) (\w+)", m["counts"])}
            rows.append({"name": STAGES[len(rows)] if len(rows) < len(STAGES)
                         else f"pytest call {len(rows) + 1}",  # .ci/run: cluster tier, make test
                         "passed": counts.get("passed", 0), "skipped": counts.get("skipped", 0),
                         "failed": counts.get("failed", 0) + counts.get("errors", 0)
                         + counts.get("error", 0),
                         "deselected": counts.get("deselected", 0),
                         "pytest_s": float(m["seconds"]), "slowest": pending[:10]})
            pending = []
        elif m := DURATION.match(line.strip()):
            pending.append({"test": m["test"], "when": m["when"], "seconds": float(m["seconds"])})
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent),
                   help="the repository to clone (its committed HEAD; default: this checkout)")
    p.add_argument("--dir", default=None, help="where to clone (default: a new temporary folder)")
    p.add_argument("--out", default="docs/results/ci_rehearsal.json")
    a = p.parse_args(argv)
    where = Path(a.dir or tempfile.mkdtemp(prefix="ci_rehearsal_"))
    if where.exists() and any(where.iterdir()):
        p.error(f"--dir {where}: not empty")
    subprocess.run(["git", "clone", "--quiet", a.repo, str(where)], check=True)
    commit = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    log = where / "ci_run.log"
    print(f"[ci_rehearsal] bash .ci/run in {where} at {commit}; log {log}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(["bash", ".ci/run"], cwd=where, stdout=f, stderr=subprocess.STDOUT
                            ).returncode
    total = time.perf_counter() - t0
    result = {"commit": commit, "exit_code": rc, "total_s": round(total, 1),
              "total_min": round(total / 60, 1), "log": str(log),
              "rows": parse_log(log.read_text(errors="replace"))}
    write_results(a.out, result, argv)
    print(f"[ci_rehearsal] exit {rc} in {total / 60:.1f} min; wrote {a.out}", flush=True)
    return result


if __name__ == "__main__":
    main()
