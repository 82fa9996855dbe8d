"""Run the selected evaluations on store samples through an encoder, next to their references.

``run_evaluations(encode, train_data=..., test_data=..., which={"lct", ...})`` is what
``clrdist eval`` and the post-training evaluation call; ``evaluate_during_training`` is the
few-second LCT used as step metrics every N epochs. Inputs are the dicts of
``SampleStore.read_all()``: ``particles (n, P, F) float32 pT in GeV``, ``mask (n, P) bool``,
``label (n,) int8``, ``features (n, K) float32``.

Every evaluation of :mod:`clrdist.eval.registry` is one adapter ``adapter(inputs, **options)``
that reads an :class:`Inputs` (one representation of both sets, and the :class:`Context`) and
returns an ``EvalResult`` (None: not applicable to this representation). The runner calls it on
the representation and then, for the references the registry line names, on the same
architecture untrained (``<name>_init_*``, mean over the init seeds with ``_seed_std``,
``_min``, ``_max``; the per-seed values in the table ``<name>_init_seeds``), on the raw inputs
(``<name>_raw_*``) and on the same architecture trained with the labels of the training set
(``<name>_sup_*``: the encoder of the supervised baseline, trained once); the figures that
compare them are drawn once all have run (:func:`clrdist.eval.plots.reference_figures`).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clrdist.data.schema import MJJ_NAMES
from clrdist.eval.metrics import EvalResult, binary_labels, roc_metrics
from clrdist.eval.registry import EVALUATIONS, check_names, validate_options

log = logging.getLogger("clrdist.eval")

Batch = Mapping[str, np.ndarray]
Encoder = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass
class Context:
    """What the evaluations know beside the samples: the stores' attributes and, from the
    trained run, its references. Every field is optional."""

    seed: int = 0
    batch_size: int = 1024  # samples per encode call
    n_boot: int = 30  # bootstrap resamples of the LCT's errors
    feature_names: Sequence[str] = ()  # the store's attrs["feature_names"] (baselines; m_jj)
    kind: str = "jet"  # the store's attrs["kind"]: jet, dijet, event (baselines, raw inputs)
    label_names: Mapping[int, str] | None = None  # per-signal metrics when several signals
    n_particles: int | None = None  # constituents in the raw-input reference (<name>_raw_*)
    ecm: float | None = None  # sqrt(s) in GeV (the stores' provenance.ecm): the bump hunt's
    raw_reference: bool = True  # the evaluations on the raw inputs too (<name>_raw_*)
    init_encode: Encoder | None = None  # the same architecture untrained (one init seed)
    init_encoders: Sequence[Encoder] = ()  # ... at several init seeds (<name>_init_*: their mean)
    init_seeds: Sequence[int] = ()  # the seeds of init_encoders (tables, figure labels)
    init_heads: Sequence[Callable[[np.ndarray], np.ndarray]] = ()  # ORCA: their heads
    model_factory: Callable[[], Any] | None = None  # a fresh encoder: the supervised baseline
    supervised_prepare: Callable[[np.ndarray, np.ndarray], tuple] | None = None  # its inputs
    device: str = "cpu"  # where the supervised encoder, the ceiling and the fine-tuning train
    head: Callable[[np.ndarray], np.ndarray] | None = None  # ORCA: representations -> (n, K) probs
    known_classes: Sequence[int] | None = None  # ORCA's known classes (orca's ``known``)
    # the ceiling and fine-tuning: the labelled jets the encoder was trained on, the validation
    # store (early stopping) and the trained encoder itself (a torch module to fine-tune)
    label_train_data: Batch | None = None
    val_data: Batch | None = None
    pretrained: Callable[[], Any] | None = None  # a fresh copy of the trained encoder

    def untrained(self) -> list[tuple[int, Encoder, Callable | None]]:
        """(init seed, encoder, head) of the untrained references."""
        encs = list(self.init_encoders) or ([self.init_encode] if self.init_encode else [])
        seeds = list(self.init_seeds) or [self.seed + i for i in range(len(encs))]
        heads = list(self.init_heads) or [None] * len(encs)
        return list(zip(seeds, encs, heads, strict=True))


LABELS = {"": "trained", "init": "untrained", "raw": "raw inputs",
          "sup": "supervised (same encoder)"}


@dataclass
class Inputs:
    """One representation of both evaluation sets: what an adapter reads."""

    train_data: Batch
    test_data: Batch
    rep_train: np.ndarray  # (n_train, D)
    rep_test: np.ndarray  # (n_test, D)
    ctx: Context
    reference: str = ""  # "": the representation; "init": the untrained encoder; "raw": inputs
    index: int = 0  # which init seed (0: the first; only it draws curves)
    init_seed: int | None = None
    head: Callable[[np.ndarray], np.ndarray] | None = None  # ORCA's head for this representation
    # the encoder of the same size trained with train_data's labels (baselines.SupervisedFit),
    # trained on first call and shared: the supervised baseline and the searches' reference
    supervised: Callable[[], Any] | None = None
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)  # shared: figure -> label -> data
    encode: Encoder | None = None  # what made rep_train / rep_test (None: the raw inputs)

    @property
    def seed(self) -> int:
        return self.ctx.seed

    @property
    def y_train(self) -> np.ndarray:
        return np.asarray(self.train_data["label"])

    @property
    def y_test(self) -> np.ndarray:
        return np.asarray(self.test_data["label"])

    @property
    def rep_all(self) -> np.ndarray:
        return np.concatenate([self.rep_train, self.rep_test])

    @property
    def y_all(self) -> np.ndarray:
        return np.concatenate([self.y_train, self.y_test])

    @property
    def label(self) -> str:
        """The legend entry: trained, untrained (init seed k), raw inputs."""
        seed = f" (init seed {self.init_seed})" if self.reference == "init" else ""
        return LABELS[self.reference] + seed

    def curve(self, figure: str, data: Any, label: str | None = None) -> None:
        """Record ``data`` for the comparison figure ``figure`` (first init seed only)."""
        if self.index == 0:
            self.curves.setdefault(figure, {})[label or self.label] = data


def encode_all(encode: Encoder, data: Batch, *, batch_size: int = 1024) -> np.ndarray:
    """Representations (n, D) float32 of every sample in ``data``, computed in batches."""
    n = len(data["label"])
    out = []
    for start in range(0, n, batch_size):
        batch = {k: v[start:start + batch_size] for k, v in data.items()}
        out.append(np.asarray(encode(batch), dtype=np.float32))
    if not out:
        raise ValueError("no samples to encode")
    rep = np.concatenate(out)
    if rep.ndim != 2 or rep.shape[0] != n:
        raise ValueError(f"encode must return (n, D); got {rep.shape} for n={n}")
    return rep


class Views:
    """The representation and its references on the same samples, each encoded once, lazily."""

    def __init__(self, encode: Encoder, train_data: Batch, test_data: Batch, ctx: Context,
                 supervised_max_epochs: int = 100):
        self.train_data, self.test_data, self.ctx, self.curves = train_data, test_data, ctx, {}
        self._refs: dict[str, list[Inputs]] = {}
        self._fit, self._max_epochs = None, supervised_max_epochs
        self.trained = self._inputs(encode, head=ctx.head)

    def supervised(self):
        """The encoder of the run's size trained with train_data's labels (early stopping on a
        held-out fifth), trained once: :class:`clrdist.eval.baselines.SupervisedFit`."""
        if self._fit is None:
            # lazy: eval.baselines loads torch and matplotlib (~2 s), only when it is needed
            from clrdist.eval.baselines import train_supervised

            self._fit = train_supervised(self.train_data, self.ctx.model_factory,
                                         seed=self.ctx.seed, max_epochs=self._max_epochs,
                                         prepare=self.ctx.supervised_prepare,
                                         device=self.ctx.device)
        return self._fit

    def _inputs(self, encode: Encoder | None, reference: str = "", **kw) -> Inputs:
        if encode is None:  # the raw inputs
            # lazy: eval.baselines loads matplotlib (~0.6 s), only for the raw-input reference
            from clrdist.eval.baselines import raw_inputs

            reps = [raw_inputs(d, self.ctx.kind, self.ctx.n_particles)
                    for d in (self.train_data, self.test_data)]
        else:
            reps = [encode_all(encode, d, batch_size=self.ctx.batch_size)
                    for d in (self.train_data, self.test_data)]
        supervised = self.supervised if self.ctx.model_factory is not None else None
        return Inputs(self.train_data, self.test_data, *reps, ctx=self.ctx, reference=reference,
                      curves=self.curves, supervised=supervised, encode=encode, **kw)

    def of(self, reference: str, all_seeds: bool = True) -> list[Inputs]:
        """The untrained encoder at every init seed (``all_seeds``) or the first; the raw
        inputs; the supervised encoder (none without ``Context.model_factory``)."""
        if reference not in self._refs:
            if reference == "init":
                self._refs["init"] = [
                    self._inputs(enc, "init", index=i, init_seed=s, head=h)
                    for i, (s, enc, h) in enumerate(self.ctx.untrained())]
            elif reference == "raw":
                self._refs["raw"] = [self._inputs(None, "raw")] if self.ctx.raw_reference else []
            elif reference == "sup":
                self._refs["sup"] = [] if self.ctx.model_factory is None else [
                    self._inputs(lambda batch: self.supervised().encode(batch), "sup")]
            else:
                raise KeyError(f"unknown reference {reference!r}; known: {list(LABELS)[1:]}")
        views = self._refs[reference]
        return views if all_seeds else views[:1]


def _adapter(path: str) -> Callable[..., EvalResult | None]:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def mjj_column(names: Sequence[str]) -> int | None:
    """Index of the m_jj feature in the store's features, None when there is none."""
    return next((list(names).index(n) for n in MJJ_NAMES if n in names), None)


def run_evaluations(encode: Encoder, *, train_data: Batch, test_data: Batch,
                    which: set[str], context: Context | None = None,
                    options: Mapping[str, Mapping[str, Any]] | None = None,
                    ) -> dict[str, EvalResult]:
    """Encode both sets and run the evaluations named in ``which`` (names of
    :data:`clrdist.eval.registry.EVALUATIONS`), each next to its references.

    ``train_data`` fits classifiers (LCT, baselines, anomaly AE); ``test_data`` (disjoint) scores
    them. CWoLa and NPLM draw their own disjoint subsets from the union of both sets.
    ``"cwola"`` runs the bump hunt too when the stores carry an m_jj feature. ``options``:
    per-evaluation keyword arguments, ``{name: {argument: value}}``, checked against the
    registry's typed options (ValueError naming an unknown or mistyped one).
    Returns ``{evaluation name: EvalResult}``; metric names are unique across evaluations.
    """
    ctx = context or Context()
    check_names(which)
    which = set(which) | ({"bumphunt"} if "cwola" in which and mjj_column(ctx.feature_names)
                          is not None else set())
    kw = {name: validate_options(name, (options or {}).get(name)) for name in which}
    views = Views(encode, train_data, test_data, ctx, supervised_max_epochs=(
        kw.get("baselines") or {}).get("supervised_max_epochs", 100))
    results: dict[str, EvalResult] = {}
    for name in (n for n in EVALUATIONS if n in which):
        ev = EVALUATIONS[name]
        adapter = _adapter(ev.adapter)
        started = time.perf_counter()
        res = adapter(views.trained, **kw[name])
        seconds = {"trained": time.perf_counter() - started}
        for ref in ev.references:
            t = time.perf_counter()
            runs = [(v, r) for v in views.of(ref, ev.init_seeds == "all")
                    if (r := adapter(v, **kw[name])) is not None]
            seconds[ref] = time.perf_counter() - t
            if runs:
                res = res.merge(reference_result(runs, name, ref))
        results[name] = res
        log.info("evaluation %s: %.1f s (%s)", name, time.perf_counter() - started,
                 ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    # lazy: matplotlib (~0.6 s) only when a figure is drawn
    from clrdist.eval.plots import reference_figures

    for name, figs in reference_figures(views.curves, results).items():
        if name in results:  # a curve recorded for an evaluation not asked for (eval.lct: false)
            results[name].figures.update(figs)
    return results


def reference_result(runs: Sequence[tuple[Inputs, EvalResult]], base: str,
                     reference: str) -> EvalResult:
    """The reference runs of evaluation ``base`` renamed ``<base>_<reference>_*``; several
    (init seeds): the mean of each metric, its ``_seed_std`` (ddof 1), ``_min`` and ``_max``
    (not for the bootstrap ``*_std``), ``<base>_init_n_seeds`` and the per-seed table
    ``<base>_init_seeds``. Figures are dropped; tables come from the first run."""
    def rename(key: str) -> str:
        rest = key[len(base) + 1:] if key.startswith(base + "_") else key
        return f"{base}_{reference}_{rest}"

    per = [{rename(k): v for k, v in r.metrics.items()} for _, r in runs]
    tables = {rename(k): v for k, v in runs[0][1].tables.items()}
    if reference != "init":
        return EvalResult(metrics=per[0], tables=tables)
    metrics: dict[str, float] = {}
    for key in per[0]:
        vals = np.array([p[key] for p in per if key in p], dtype=np.float64)
        metrics[key] = float(np.mean(vals))
        if len(per) > 1 and not key.endswith("_std"):
            metrics[f"{key}_seed_std"] = float(np.std(vals, ddof=1))
            metrics[f"{key}_min"], metrics[f"{key}_max"] = float(vals.min()), float(vals.max())
    metrics[f"{base}_init_n_seeds"] = float(len(per))
    tables[f"{base}_init_seeds"] = [{"init_seed": v.init_seed, **p}
                                    for (v, _), p in zip(runs, per, strict=True)]
    return EvalResult(metrics=metrics, tables=tables)


def evaluate_during_training(rep_train: np.ndarray, y_train: np.ndarray, rep_val: np.ndarray,
                             y_val: np.ndarray, *, seed: int = 0,
                             max_samples: int = 20000) -> dict[str, float]:
    """Quick LCT for step metrics: ``lct_auc``, ``lct_max_sic``, ``lct_fpr_at_tpr_0.5``
    (plus ``lct_inv_eps_b_at_0.5``). No bootstrap, no figures; at most ``max_samples`` of each
    set (first ones) so it stays within a few seconds."""
    # lazy: scikit-learn and matplotlib (~0.6 s) only when the training loop validates
    from clrdist.eval.lct import linear_scores

    keep_tr, ytr = binary_labels(np.asarray(y_train)[:max_samples])
    keep_va, yva = binary_labels(np.asarray(y_val)[:max_samples])
    score = linear_scores(np.asarray(rep_train)[:max_samples][keep_tr], ytr,
                          np.asarray(rep_val)[:max_samples][keep_va], seed=seed)
    m, _ = roc_metrics(yva, score, "lct", eps_s=(0.5,))
    return {k: m[k] for k in ("lct_auc", "lct_max_sic", "lct_fpr_at_tpr_0.5",
                              "lct_inv_eps_b_at_0.5")}
