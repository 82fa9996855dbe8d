"""bench.ci_rehearsal's reading of a `.ci/run` log: one row per pytest summary, the durations."""

from bench.ci_rehearsal import parse_log

LOG = """\
.venv/bin/ruff check clrdist tests bench jobs tuning
All checks passed!
....                                                                     [100%]
============================== slowest 5 durations ===============================
120.50s call     tests/test_slurm.py::test_sbatch_training_on_two_nodes
4 passed, 991 deselected in 298.84s (0:04:58)
============================= slowest 30 durations =============================
229.41s call     tests/test_train_integration.py::test_demo_learns_on_pythia_jets
9.76s setup    tests/test_generate.py::test_constituents_hardest_first
=========================== short test summary info ============================
SKIPPED [1] tests/test_tracking.py:216: running as root
2 failed, 988 passed, 1 skipped in 794.29s (0:13:14)
"""


def test_summaries_become_rows_in_the_order_of_ci():
    cluster, test = parse_log(LOG)
    assert cluster["name"] == "cluster tier (make test-cluster)"
    assert (cluster["passed"], cluster["deselected"], cluster["pytest_s"]) == (4, 991, 298.84)
    assert [d["seconds"] for d in cluster["slowest"]] == [120.5]
    assert test["name"] == "make test" and (test["passed"], test["failed"], test["skipped"]) == \
        (988, 2, 1) and test["pytest_s"] == 794.29
    assert test["slowest"][1] == {"test": "tests/test_generate.py::test_constituents_hardest_first",
                                  "when": "setup", "seconds": 9.76}
