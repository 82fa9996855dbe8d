"""Training does not call its caller, and the evaluations are listed once.

``clrdist.train`` trains and nothing else: the evaluation after training is
``clrdist.pipeline``'s. The registry ``clrdist.eval.registry.EVALUATIONS`` is the one list of
evaluations: the config's switches and options, the runner and ``clrdist eval``'s flags read it.
"""

import subprocess
import sys

import pytest

from clrdist.cli import main
from clrdist.config import EvalConfig, load_config
from clrdist.eval.registry import EVALUATIONS, options_model, validate_options
from clrdist.eval.runner import run_evaluations


def imported_by(module: str) -> set[str]:
    """The clrdist modules a fresh interpreter has loaded after importing ``module``."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('clrdist')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["clrdist.train.trainer", "clrdist.train.loop",
                                    "clrdist.train.checkpoint", "clrdist.train.inputs"])
def test_training_imports_no_evaluation_driver(module):
    loaded = imported_by(module)
    assert module in loaded
    assert not loaded & {"clrdist.pipeline", "clrdist.evaluation", "clrdist.eval.runner"}, loaded


def test_evaluation_imports_no_training():
    loaded = imported_by("clrdist.evaluation")
    assert not {m for m in loaded if m.startswith("clrdist.train")}, loaded


def test_config_reads_the_registry_without_loading_the_evaluations():
    loaded = imported_by("clrdist.config")
    assert "clrdist.eval.registry" in loaded
    assert not {m for m in loaded if m.startswith("clrdist.eval.") and m != "clrdist.eval.registry"}


def test_the_registry_is_the_list_config_runner_and_cli_read(capsys):
    names = list(EVALUATIONS)
    # the config: one switch per evaluation, its default and its help from the registry
    flags = [n for n in EvalConfig.model_fields if n in EVALUATIONS]
    assert flags == names
    for name, ev in EVALUATIONS.items():
        field = EvalConfig.model_fields[name]
        assert field.default is ev.default and field.description == ev.help
    assert load_config(None).eval.requested() == [n for n, ev in EVALUATIONS.items() if ev.default]
    # the CLI: `clrdist eval --NAME` for every evaluation, with the registry's help
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for name, ev in EVALUATIONS.items():
        assert f"--{name} {ev.help}" in usage, name
    # the runner: unknown names are refused with the registry's list
    with pytest.raises(KeyError, match="known: " + str(names).replace("[", r"\[").replace("]", r"\]")):
        run_evaluations(lambda b: b, train_data={}, test_data={}, which={"lcd"})


def test_options_are_typed_by_the_evaluation_functions():
    from clrdist.config import ConfigError

    assert validate_options("nplm", {"n_ref": "300", "M": 50}) == {"n_ref": 300, "M": 50}
    assert "n_toys" in options_model("bumphunt").model_fields  # forwarded to blind_scan
    assert "seed" not in options_model("lct").model_fields  # the runner supplies it
    with pytest.raises(ConfigError, match="lct: no_such_option: unknown option"):
        load_config(None, ["eval.options={lct: {no_such_option: 1}}"])
    with pytest.raises(ConfigError, match="nplm: n_ref: Input should be a valid integer"):
        load_config(None, ["eval.options={nplm: {n_ref: many}}"])
    with pytest.raises(ConfigError, match=r"unknown evaluation\(s\) \['lcd'\]"):
        load_config(None, ["eval.options={lcd: {}}"])
