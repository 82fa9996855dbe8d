"""clrdist.logs: clrdist's lines on the console, Ray's, MLflow's and FastJet's in the log file."""

import io
import logging
import warnings

import pytest

from clrdist.logs import quiet_console

BANNER = "#                     FastJet release 3.5.1 [fjcore]"
REPORT = "Reporting training result 1: TrainingReport(checkpoint=...) from rank 0"


@pytest.fixture
def ray_printer():
    """A stand-in for the printer ray.init(log_to_driver=True) registers (no cluster needed)."""
    from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

    printed = []
    dispatcher.add_handler("ray_print_logs", printed.append)
    yield dispatcher, printed
    dispatcher.remove_handler("ray_print_logs")


def test_worker_output_goes_to_the_file_and_clrdist_lines_to_the_console(tmp_path, ray_printer):
    dispatcher, printed = ray_printer
    console = io.StringIO()
    with quiet_console(tmp_path / "demo.log", console=console) as log:
        log.follow_ray()
        dispatcher.emit({"pid": 11, "task_name": "_remote_shard", "is_err": False,
                         "lines": [BANNER]})
        dispatcher.emit({"pid": 12, "actor_name": "RayTrainWorker", "is_err": True,
                         "lines": [REPORT, "[clrdist] epoch 1/2 step 3 loss 5.7703"]})
        dispatcher.emit({"pid": "autoscaler", "is_err": False,
                         "lines": ["======== Autoscaler status ========"]})
    text = (tmp_path / "demo.log").read_text()
    assert console.getvalue() == "  epoch 1/2 step 3 loss 5.7703\n"
    assert f"(_remote_shard pid=11) {BANNER}" in text
    assert f"(RayTrainWorker pid=12) {REPORT}" in text
    assert "Autoscaler status" not in text
    assert printed == []  # Ray's printer saw nothing while ours was in place ...
    dispatcher.emit({"pid": 13, "lines": ["after"]})
    assert printed == [{"pid": 13, "lines": ["after"]}]  # ... and is back afterwards


def _is_console(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def test_other_loggers_and_warnings_go_to_the_file(tmp_path):
    ray_logger = logging.getLogger("ray")
    handlers = list(ray_logger.handlers)
    # what an earlier test left on the logger must not matter (pytest's live-logging null
    # handler, file handlers): only console handlers are taken off while the console is quiet
    with quiet_console(tmp_path / "demo.log", console=io.StringIO()):
        assert ray_logger.handlers == [h for h in handlers if not _is_console(h)]
        assert not any(_is_console(h) for h in ray_logger.handlers)
        logging.getLogger("ray._private.authentication").warning("Token authentication is on")
        logging.getLogger("mlflow.store").info("Creating initial MLflow database tables")
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("batch_size is clipped", UserWarning, stacklevel=1)
    text = (tmp_path / "demo.log").read_text()
    for line in ("Token authentication is on", "Creating initial MLflow database tables",
                 "batch_size is clipped"):
        assert line in text
    assert ray_logger.handlers == handlers  # put back


def test_verbose_redirects_nothing(tmp_path, ray_printer):
    dispatcher, printed = ray_printer
    with quiet_console(tmp_path / "demo.log", verbose=True) as log:
        log.follow_ray()
        dispatcher.emit({"pid": 11, "lines": [BANNER]})
    assert log.path is None and not (tmp_path / "demo.log").exists()
    assert printed == [{"pid": 11, "lines": [BANNER]}]


# The console of a real demo (its own process and Ray cluster) is checked in
# tests/test_train_integration.py::test_demo_learns_on_pythia_jets_and_keeps_the_console_quiet,
# on the run that also checks that the demo learns (one demo run instead of two in `make test`).
