"""A supervised ceiling on the same jets, and what pre-training buys when labels are scarce.

- :func:`supervised_ceiling`: an encoder of the run's size trained with the labels of the jets
  the self-supervised encoder was trained on (the training store), early stopping on the
  validation store, scored on eval_test. Metrics ``ceiling_supervised_*``, next to the small-label
  ``baseline_supervised_*`` (4/5 of eval_train) of :mod:`clrdist.eval.baselines`.
- :func:`label_efficiency` (``clrdist eval --finetune``): with 0.1%, 1%, 10% and 100% of the
  training labels, the pre-trained encoder fine-tuned, the same architecture trained from
  scratch (both with early stopping on the validation store) and the linear probe on the frozen
  pre-trained representation; over ``seeds`` (the label draw and the initialisation), as ParT,
  OmniLearn and HEP-JEPA report it. Metrics ``finetune_<method>_<metric>_f_<fraction>`` (mean over
  seeds, ``_seed_std``), table ``finetune_label_efficiency`` (one row per method, fraction and
  seed), figure ``finetune_label_efficiency.png`` (test AUC vs label fraction).

Inputs are store dicts (``particles``, ``mask``, ``label``); ``prepare(particles, mask) -> (x,
mask)`` is the run's input transform; encoders are torch modules ``(x, mask) -> (B, D)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clrdist.eval.metrics import EvalResult, binary_labels, eps_tag, roc_metrics

if TYPE_CHECKING:
    from clrdist.eval.runner import Inputs

Batch = Mapping[str, np.ndarray]
FRACTIONS = (0.001, 0.01, 0.1, 1.0)
METHODS = ("finetuned", "scratch", "probe")


def fit_classifier(encoder, train: tuple, val: tuple, *, seed: int = 0, max_epochs: int = 100,
                   patience: int = 8, batch_size: int = 128, lr: float = 1e-3,
                   encoder_lr: float | None = None, head_init: tuple | None = None,
                   device: str = "cpu",
                   ) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, float]]:
    """Train ``encoder`` plus a linear head with BCE on ``train = (x (n, P, F), mask (n, P),
    y (n,) in {0, 1})`` (Adam, ``lr``) until the BCE on ``val`` (same layout) has not improved for
    ``patience`` epochs (or ``max_epochs``); keep the best epoch's weights. ``encoder_lr``: the
    encoder's own learning rate (fine-tuning); ``head_init = (weight (D,), bias)``: the head
    starts from a linear probe (LP-FT, Kumar et al. 2022) instead of at random. The head draws
    from torch's global generator (seed it before building ``encoder``); ``seed`` orders the
    batches. ``device``: where the encoder, the head and both sets live while training (one
    host sync per epoch, the validation loss). Returns ``score(x, mask) -> (n,)`` logits (numpy,
    on the host) and ``{"epochs", "best_epoch", "val_loss"}``; ``encoder`` stays on ``device``."""
    # lazy: torch (~1.5 s) only when a classifier is trained
    import torch

    dev = torch.device(device)
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt).to(dev)  # noqa: E731
    x_t, m_t, y_t = t(train[0]), t(train[1], torch.bool), t(train[2])
    xv, mv, yv = t(val[0]), t(val[1], torch.bool), t(val[2])
    encoder.to(dev)
    with torch.no_grad():
        d = encoder(x_t[:2], m_t[:2]).shape[-1]
    head = torch.nn.Linear(d, 1)  # drawn on the host: the same head on every device
    if head_init is not None:
        with torch.no_grad():
            head.weight.copy_(torch.as_tensor(np.asarray(head_init[0]).reshape(1, d)))
            head.bias.fill_(float(head_init[1]))
    head.to(dev)
    opt = torch.optim.Adam([{"params": list(encoder.parameters()), "lr": encoder_lr or lr},
                            {"params": list(head.parameters())}], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    bce = torch.nn.functional.binary_cross_entropy_with_logits

    def score(x, m) -> torch.Tensor:
        encoder.eval()
        with torch.no_grad():
            out = torch.cat([head(encoder(x[s:s + 1024], m[s:s + 1024])).squeeze(-1)
                             for s in range(0, len(x), 1024)])
        encoder.train()
        return out

    best, best_epoch, best_state, epoch = float("inf"), 0, None, 0
    encoder.train()
    for epoch in range(1, max_epochs + 1):
        perm = torch.randperm(len(y_t), generator=gen).to(dev)
        for s in range(0, len(perm), batch_size):
            idx = perm[s:s + batch_size]
            loss = bce(head(encoder(x_t[idx], m_t[idx])).squeeze(-1), y_t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = float(bce(score(xv, mv), yv))
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = copy.deepcopy((encoder.state_dict(), head.state_dict()))
        elif epoch - best_epoch >= patience:
            break
    encoder.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    info = {"epochs": float(epoch), "best_epoch": float(best_epoch), "val_loss": best}
    return (lambda x, m: score(t(x), t(m, torch.bool)).cpu().numpy()), info


def _labelled(data: Batch, prepare: Callable, what: str, limit: int | None = None):
    """(x, mask, y in {0, 1}) of the labelled samples of a store dict; error naming ``what``."""
    keep, y = binary_labels(np.asarray(data["label"]))
    if not keep.any() or y.min() == y.max():
        raise ValueError(f"{what}: needs labelled background (0) and signal (>= 1) samples")
    idx = np.flatnonzero(keep)[:limit]
    x, m = prepare(np.asarray(data["particles"])[idx], np.asarray(data["mask"])[idx])
    return np.asarray(x, np.float32), np.asarray(m, bool), y[:len(idx)].astype(np.float32)


def supervised_ceiling(train_data: Batch, val_data: Batch, test_data: Batch, *,
                       model_factory: Callable[[], Any], prepare: Callable, seed: int = 0,
                       max_epochs: int = 100, patience: int = 8, batch_size: int = 128,
                       lr: float = 1e-3, max_train: int | None = None,
                       max_val: int | None = 5000, device: str = "cpu") -> EvalResult:
    """The ceiling: ``model_factory()`` trained on the labels of ``train_data`` (the training
    store: the jets the self-supervised encoder saw; at most ``max_train``), early stopping on
    ``val_data`` (at most ``max_val``), scored on ``test_data``. Metrics ``ceiling_supervised_*``
    (AUC, 1/eps_B, max SIC), ``_epochs``, ``_best_epoch``, ``_n_train``. ``device``: where it
    trains."""
    # lazy: torch (~1.5 s) only when a classifier is trained
    import torch

    tr = _labelled(train_data, prepare, "ceiling: the training store", max_train)
    va = _labelled(val_data, prepare, "ceiling: the validation store", max_val)
    te = _labelled(test_data, prepare, "ceiling: the test store")
    torch.manual_seed(seed)
    score, info = fit_classifier(model_factory(), tr, va, seed=seed, max_epochs=max_epochs,
                                 patience=patience, batch_size=batch_size, lr=lr, device=device)
    metrics, _ = roc_metrics(te[2].astype(int), score(te[0], te[1]), "ceiling_supervised")
    metrics.update({f"ceiling_supervised_{k}": v for k, v in info.items()})
    metrics["ceiling_supervised_n_train"] = float(len(tr[2]))
    return EvalResult(metrics=metrics)


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of round(fraction * n) samples (at least one of each class), drawn per class
    in proportion, seeded."""
    rng = np.random.default_rng([seed, int(fraction * 1e6)])
    out = []
    for cls in (0, 1):
        pool = np.flatnonzero(y == cls)
        k = min(len(pool), max(1, int(round(fraction * len(pool)))))
        out.append(rng.choice(pool, k, replace=False))
    return np.sort(np.concatenate(out))


def label_efficiency(train_data: Batch, val_data: Batch, test_data: Batch, *,
                     pretrained: Callable[[], Any], model_factory: Callable[[], Any],
                     prepare: Callable, seed: int = 0,
                     fractions: Sequence[float] = FRACTIONS, n_seeds: int = 2,
                     methods: Sequence[str] = METHODS, max_epochs: int = 50, patience: int = 5,
                     batch_size: int = 128, lr: float = 1e-3, finetune_lr: float = 1e-4,
                     max_train: int | None = None, max_val: int | None = 5000,
                     figures: bool = True, device: str = "cpu") -> EvalResult:
    """Test AUC and 1/eps_B at eps_S = 0.5 with each fraction of the training labels for the
    ``methods``: ``finetuned`` (``pretrained()`` with the linear probe as its initial head,
    encoder lr ``finetune_lr``, head lr ``lr``: LP-FT), ``scratch``
    (``model_factory()``, lr ``lr``), ``probe`` (logistic regression on the frozen pre-trained
    representation); ``n_seeds`` seeds from ``seed`` draw the labels and initialise.
    ``device``: where the encoders train and encode."""
    # lazy: torch (~1.5 s) only when a classifier is trained
    import torch

    # lazy: scikit-learn and matplotlib (~0.6 s) only for the label-efficiency scan
    from clrdist.eval.lct import linear_scores
    from clrdist.eval.plots import scan_figure

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise KeyError(f"finetune: unknown method(s) {sorted(unknown)}; known: {list(METHODS)}")
    tr = _labelled(train_data, prepare, "finetune: the training store", max_train)
    va = _labelled(val_data, prepare, "finetune: the validation store", max_val)
    te = _labelled(test_data, prepare, "finetune: the test store")
    y_te = te[2].astype(int)

    dev = torch.device(device)

    def represent(encoder, x, m) -> np.ndarray:
        encoder.eval()
        with torch.no_grad():
            return torch.cat([encoder(torch.as_tensor(x[s:s + 1024]).to(dev),
                                      torch.as_tensor(m[s:s + 1024]).to(dev))
                              for s in range(0, len(x), 1024)]).cpu().numpy()

    frozen = pretrained().to(dev)
    rep_tr, rep_te = represent(frozen, tr[0], tr[1]), represent(frozen, te[0], te[1])

    def probe_head(idx: np.ndarray, s: int) -> tuple[np.ndarray, float]:
        """The linear probe as a head on raw representations (the scaler folded in)."""
        # lazy: scikit-learn and matplotlib (~0.6 s) only when the probe is built
        from clrdist.eval.lct import fit_linear

        clf = fit_linear(rep_tr[idx], tr[2][idx].astype(int), seed=s)
        sc, lr_ = clf[0], clf[-1]
        w = lr_.coef_[0] / sc.scale_
        return w.astype(np.float32), float(lr_.intercept_[0] - (w * sc.mean_).sum())

    rows: list[dict] = []
    for f in fractions:
        for s in range(seed, seed + n_seeds):
            idx = label_subset(tr[2], f, s)
            sub = (tr[0][idx], tr[1][idx], tr[2][idx])
            for method in methods:
                info: dict[str, float] = {}
                if method == "probe":
                    score = linear_scores(rep_tr[idx], sub[2].astype(int), rep_te, seed=s)
                else:
                    torch.manual_seed(s)
                    enc = pretrained() if method == "finetuned" else model_factory()
                    tuned = method == "finetuned"  # LP-FT: the probe's head, a gentler encoder lr
                    fit, info = fit_classifier(
                        enc, sub, va, seed=s, max_epochs=max_epochs, patience=patience,
                        batch_size=min(batch_size, len(idx)), lr=lr,
                        encoder_lr=finetune_lr if tuned else None,
                        head_init=probe_head(idx, s) if tuned else None, device=device)
                    score = fit(te[0], te[1])
                m, _ = roc_metrics(y_te, score, "x", eps_s=(0.5,))
                rows.append({"method": method, "fraction": float(f), "n_labels": int(len(idx)),
                             "seed": s, "auc": m["x_auc"],
                             "inv_eps_b_at_0.5": m["x_inv_eps_b_at_0.5"],
                             "best_epoch": info.get("best_epoch", float("nan"))})
    metrics: dict[str, float] = {}
    series: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    for method in methods:
        for f in fractions:
            rr = [r for r in rows if r["method"] == method and r["fraction"] == float(f)]
            for key in ("auc", "inv_eps_b_at_0.5"):
                v = np.array([r[key] for r in rr], np.float64)
                name = f"finetune_{method}_{key}_f_{eps_tag(f)}"
                metrics[name] = float(v.mean())
                if len(v) > 1:
                    metrics[f"{name}_seed_std"] = float(v.std(ddof=1))
            series.setdefault(method, []).append(metrics[f"finetune_{method}_auc_f_{eps_tag(f)}"])
            errors.setdefault(method, []).append(
                metrics.get(f"finetune_{method}_auc_f_{eps_tag(f)}_seed_std", 0.0))
    metrics["finetune_n_train"] = float(len(tr[2]))
    metrics["finetune_n_seeds"] = float(n_seeds)
    figs = {}
    if figures:
        labels = {"finetuned": "pre-trained, fine-tuned", "scratch": "same encoder, from scratch",
                  "probe": "pre-trained, linear probe"}
        figs["finetune_label_efficiency.png"] = scan_figure(
            list(fractions), {labels[k]: v for k, v in series.items()},
            errors={labels[k]: v for k, v in errors.items()},
            xlabel="fraction of the training labels", ylabel="AUC (test)",
            title=f"label efficiency ({n_seeds} seeds)")
    return EvalResult(metrics=metrics, figures=figs, tables={"finetune_label_efficiency": rows})


def _needs(inp: Inputs, name: str, *fields: str) -> None:
    missing = [f for f in fields if getattr(inp.ctx, f) is None]
    if missing:
        raise KeyError(f"{name}: needs the run's training and validation stores and its encoder "
                       f"(a trained run, data.train_store and data.val_store); missing {missing}")


def evaluate_ceiling(inp: Inputs, **options: Any) -> EvalResult:
    """The runner's adapter of :func:`supervised_ceiling`."""
    _needs(inp, "ceiling", "label_train_data", "val_data", "model_factory", "supervised_prepare")
    ctx = inp.ctx
    return supervised_ceiling(ctx.label_train_data, ctx.val_data, inp.test_data,
                              model_factory=ctx.model_factory, prepare=ctx.supervised_prepare,
                              seed=inp.seed, **{"device": ctx.device, **options})


def evaluate(inp: Inputs, **options: Any) -> EvalResult:
    """The runner's adapter of :func:`label_efficiency`."""
    _needs(inp, "finetune", "label_train_data", "val_data", "model_factory",
           "supervised_prepare", "pretrained")
    ctx = inp.ctx
    return label_efficiency(ctx.label_train_data, ctx.val_data, inp.test_data,
                            pretrained=ctx.pretrained, model_factory=ctx.model_factory,
                            prepare=ctx.supervised_prepare, seed=inp.seed,
                            **{"device": ctx.device, **options})
