"""The evaluations a run can ask for: the one list the config, the runner and the CLI read.

Each :class:`Evaluation` has a name (the ``eval.<name>`` switch of the run config, the key of
``eval.options``, the ``clrdist eval --<name>`` flag), a one-line description (the switch's
help), the function that computes it, the adapter the runner calls (``adapter(inputs,
**options) -> EvalResult``, :class:`clrdist.eval.runner.Inputs`; it lives in the evaluation's
module, or in :mod:`clrdist.eval.adapters` for the modules older than the adapters) and the
references it runs next to (the same architecture untrained, the raw inputs). Adding an
evaluation is its module (function + adapter) and one line here. Its options, ``eval.options.<name>``, are that
function's keyword-only arguments (and those of the functions its ``**kwargs`` reach), typed by
their annotations; the arguments the runner fills in from the stores and the model
(``supplied``: seed, label names, ...) are not options. :func:`validate_options` checks a
mapping of options against them: an unknown key or a wrong type is an error naming it.

Nothing here imports the evaluations themselves (sklearn, torch): the option types are read
from the functions the first time options of that evaluation are validated.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model


@dataclass(frozen=True)
class Evaluation:
    name: str
    help: str  # one line: the config switch's comment, the CLI flag's help
    function: str  # "module:function" that computes it; its keyword-only arguments are options
    forwards: tuple[str, ...] = ()  # "module:callable"s its **kwargs go to: their options too
    supplied: tuple[str, ...] = ("seed", "label_names")  # filled in by the runner, not options
    default: bool = False  # eval.<name> when the config does not set it
    adapter: str = ""  # "module:function" the runner calls: (Inputs, **options) -> EvalResult | None
    # the untrained encoder, the raw inputs; "sup": the same encoder trained with labels (the
    # supervised baseline's, on the evaluation's training set)
    references: tuple[str, ...] = ("init", "raw")
    init_seeds: str = "all"  # the untrained reference at "all" init seeds or "one" (costly ones)


_A = "clrdist.eval.adapters:"
EVALUATIONS: dict[str, Evaluation] = {e.name: e for e in (
    Evaluation("lct", "linear classifier test, next to the untrained encoder and the raw inputs",
               "clrdist.eval.lct:linear_classifier_test", default=True,
               supplied=("seed", "label_names", "prefix"), adapter="clrdist.eval.lct:evaluate"),
    Evaluation("baselines", "raw constituents, jet mass + N-subjettiness, EFPs, supervised",
               "clrdist.eval.baselines:run_baselines",
               supplied=("seed", "feature_names", "kind", "model_factory", "rep_train",
                         "rep_test", "supervised_prepare", "supervised", "curves_out"),
               adapter="clrdist.eval.baselines:evaluate", references=()),
    Evaluation("ceiling", "supervised encoder of the same size on the training store's labels",
               "clrdist.eval.finetune:supervised_ceiling", references=(),
               supplied=("seed", "model_factory", "prepare", "train_data", "val_data",
                         "test_data"), adapter="clrdist.eval.finetune:evaluate_ceiling"),
    Evaluation("finetune", "label efficiency: fine-tuned vs from scratch vs linear probe",
               "clrdist.eval.finetune:label_efficiency", references=(),
               supplied=("seed", "model_factory", "pretrained", "prepare", "train_data",
                         "val_data", "test_data"), adapter="clrdist.eval.finetune:evaluate"),
    Evaluation("cwola", "idealised CWoLa scan (and the bump hunt when stores have m_jj)",
               "clrdist.eval.cwola:idealised_cwola_scan", adapter="clrdist.eval.cwola:evaluate",
               # a scan of MLP fits per seed: the LCT carries the seed spread
               references=("init", "raw", "sup"), init_seeds="one"),
    Evaluation("bumphunt", "CWoLa bump hunt in m_jj (dijet stores)",
               "clrdist.eval.bumphunt:hunt_at_fractions", supplied=("seed", "jet_pt"),
               forwards=("clrdist.eval.bumphunt:blind_scan", _A + "per_jet_features"),
               adapter=_A + "bumphunt",
               references=("init", "raw", "sup"), init_seeds="one"),
    Evaluation("nplm", "NPLM test of the representation, next to the untrained encoder, the raw "
               "inputs and the supervised encoder",
               "clrdist.eval.nplm:nplm_evaluation",
               forwards=("clrdist.eval.nplm:nplm_t_kernel", "clrdist.eval.nplm:nplm_t_network"),
               supplied=("seed", "prefix", "n_expected"), adapter=_A + "nplm",
               references=("init", "raw", "sup"), init_seeds="one"),
    Evaluation("anomaly", "label-free anomaly scores", "clrdist.eval.anomaly:anomaly_scores",
               supplied=("seed", "label_names", "prefix"), adapter=_A + "anomaly"),
    Evaluation("nae", "normalised autoencoder on representations (+ jet images for jet stores)",
               "clrdist.eval.nae:nae_evaluation", forwards=("clrdist.eval.nae:NAE",),
               supplied=("seed", "label_names", "train_data", "test_data", "clamp"),
               adapter=_A + "nae", init_seeds="one"),
    Evaluation("images", "jet images + convolutional autoencoder anomaly score (jet stores)",
               "clrdist.eval.jetimages:image_ae_scores",
               supplied=("seed", "label_names", "return_model"), adapter=_A + "images",
               references=()),
    Evaluation("mimic", "EFP mimickers (HLN, PNN) of the jet-image autoencoder (jet stores)",
               "clrdist.eval.mimic:mimic_evaluation", adapter=_A + "mimic", references=()),
    Evaluation("orca", "open-world accuracies of an ORCA run's classifier head (loss.name: orca)",
               "clrdist.eval.openworld:openworld_evaluation",
               adapter="clrdist.eval.openworld:evaluate", references=("init",)),
)}


def check_names(which: Iterable[str]) -> None:
    """KeyError naming the unknown evaluations in ``which`` and the known ones."""
    unknown = sorted(set(which) - set(EVALUATIONS))
    if unknown:
        raise KeyError(f"unknown evaluation(s) {unknown}; known: {list(EVALUATIONS)}")


def _resolve(path: str) -> Callable:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def options_model(name: str) -> type[BaseModel]:
    """The typed options of evaluation ``name``: one field per keyword-only argument of its
    function and forwards (the first one to name an argument types it), none required."""
    check_names([name])
    ev = EVALUATIONS[name]
    fields: dict[str, Any] = {}
    for path in (ev.function, *ev.forwards):
        fn = _resolve(path)
        target = fn.__init__ if inspect.isclass(fn) else fn
        hints = typing.get_type_hints(target)
        for p in inspect.signature(fn).parameters.values():
            if p.kind is not p.KEYWORD_ONLY or p.name in ev.supplied or p.name in fields:
                continue
            default = None if p.default is p.empty else p.default
            fields[p.name] = (hints.get(p.name, Any), default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{name}_options", __config__=config, **fields)


def validate_options(name: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` of evaluation ``name`` checked and converted to the argument types; only the
    keys given come back (the functions keep their own defaults). ValueError naming the key."""
    try:
        given = options_model(name).model_validate(dict(options or {}))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                             f"{'unknown option' if err['type'] == 'extra_forbidden' else err['msg']}"
                             for err in e.errors())
        raise ValueError(f"{name}: {problems}") from None
    return given.model_dump(exclude_unset=True)
