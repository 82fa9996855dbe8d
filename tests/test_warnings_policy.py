"""The warning filters of pyproject.toml: clrdist's own deprecations fail the tests, the listed
third-party packages' own ones do not."""

import warnings

import pytest


def warn_from(module: str, category: type[Warning], message: str = "old API") -> None:
    """Issue a warning as if from a line of ``module``."""
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


def action_for(module: str, category: type[Warning], message: str = "old API") -> str:
    """What the active filters (pyproject.toml's, as pytest installs them) do with a warning."""
    for action, msg, cat, mod, _ in warnings.filters:
        if ((msg is None or msg.match(message)) and issubclass(category, cat)
                and (mod is None or mod.match(module))):
            return action
    return warnings.defaultaction


@pytest.mark.parametrize("category", [DeprecationWarning, PendingDeprecationWarning, FutureWarning,
                                      ResourceWarning, UserWarning])
def test_warnings_from_clrdist_are_errors(category):
    with pytest.raises(category):
        warn_from("clrdist.train.loop", category)


@pytest.mark.parametrize("module", ["ray.data.context", "mlflow.store.tracking.sqlalchemy_store"])
def test_deprecations_inside_allowed_packages_are_ignored(module):
    assert action_for(module, DeprecationWarning) == "ignore"
    assert action_for("clrdist.train.loop", DeprecationWarning) == "error"
    warn_from(module, DeprecationWarning)  # and it does not raise


def test_torch_jit_script_method_notice_is_ignored_other_torch_deprecations_are_not():
    warn_from("torch.jit._script", DeprecationWarning,
              "`torch.jit.script_method` is deprecated. Please switch to `torch.compile`")
    with pytest.raises(DeprecationWarning):
        warn_from("torch.nn.functional", DeprecationWarning)
