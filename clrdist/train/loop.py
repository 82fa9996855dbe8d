"""The per-worker training function Ray Train runs on every rank.

Plain PyTorch, read top to bottom: data -> augment -> encode -> loss -> step -> log -> checkpoint.
Rank-0 side effects (MLflow, the model checkpoint) sit behind the one ``master`` flag.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import ray.train
import ray.train.torch
import torch

from clrdist import tracking
from clrdist.config import RunConfig, config_from_dict
from clrdist.data.prefetch import DevicePrefetcher
from clrdist.data.store import open_store
from clrdist.data.stream import ShardedStream
from clrdist.diagnostics import global_diagnostics, is_collapsed
from clrdist.distributed import gather_shards, get_rank, get_world_size
from clrdist.factory import build_encoder, build_loss, build_views, initial_model
from clrdist.precision import resolve
from clrdist.runtime import tune_malloc
from clrdist.train import preempt
from clrdist.train.cadence import Cadence
from clrdist.train.engine import LossGuard, build_engine
from clrdist.train.state import TrainState
from clrdist.train.step import default_sync_free, prepare_model, seed_step, train_step


def say(message: str) -> None:
    """One ``[clrdist] ...`` line on this worker's stdout, which Ray streams to the driver (the
    demo keeps these lines on its console). Not print(): in a Ray Train worker print() also logs
    the line through the root logger, so it would reach the driver twice."""
    sys.stdout.write(f"[clrdist] {message}\n")
    sys.stdout.flush()


# validation during training scores at most this many samples of each set (the quick LCT of
# clrdist.eval.runner.evaluate_during_training uses the first 20000), fewer with eval.lct_max_samples
VALIDATION_SAMPLES = 20_000


def load_validation(cfg) -> tuple[dict, dict] | None:
    """(fit set, validation set): the linear classifier is fitted on data.eval_train_store and
    scored on data.val_store, read once (the first VALIDATION_SAMPLES or eval.lct_max_samples).
    The test store is never read here: it is what the final numbers come from (Tune must not
    select on it)."""
    if not (cfg.data.eval_train_store and cfg.data.val_store):
        return None
    limit = min(cfg.eval.lct_max_samples or VALIDATION_SAMPLES, VALIDATION_SAMPLES)
    return (open_store(cfg.data.eval_train_store).read_all(max_samples=limit),
            open_store(cfg.data.val_store).read_all(max_samples=limit))


def validate(engine, cfg, val, device, model=None) -> dict[str, float]:
    """LCT AUC, max SIC and FPR at TPR 0.5 of the current representation, as val_* metrics.
    ``model``: the network evaluation uses when it is not the trained one (DINO's teacher).
    Every rank takes part (a collective): each encodes every world-th sample, rank 0 gathers
    and fits the quick LCT; the other ranks return {}."""
    # lazy: training's modules must not load the evaluation runner (tests/test_pipeline.py)
    from clrdist.eval.runner import evaluate_during_training

    net = engine.module if model is None else model
    # weights DeepSpeed converted to bf16 get bf16 inputs through autocast (float32 stores)
    low = next(net.parameters()).dtype == torch.bfloat16
    encode = build_encoder(net, cfg, device=device, autocast=torch.bfloat16 if low else "run")
    (tr, te) = val
    rank, world = get_rank(), get_world_size()

    def shared(samples):
        mine = encode({k: v[rank::world] for k, v in samples.items()})
        return gather_shards(torch.as_tensor(mine, device=device), len(samples["mask"])).cpu().numpy()

    rep_tr, rep_te = shared(tr), shared(te)
    if rank:
        return {}
    metrics = evaluate_during_training(rep_tr, tr["label"], rep_te, te["label"])
    return {f"val_{k}": v for k, v in metrics.items()}


def validation_references(engine, cfg, val, device) -> dict[str, float]:
    """The validation LCT of this architecture at initialisation (``val_lct_init_*``; call it
    before the first step) and of the raw inputs (``val_lct_raw_*``), on the same stores."""
    # lazy: training's modules must not load the evaluation runner (tests/test_pipeline.py)
    from clrdist.eval.baselines import raw_inputs
    from clrdist.eval.runner import evaluate_during_training

    init = validate(engine, cfg, val, device)
    if get_rank():
        return {}
    (tr, va) = val
    kind = "event" if cfg.model.frame == "event" else "jet"
    raw = evaluate_during_training(raw_inputs(tr, kind, cfg.data.n_particles), tr["label"],
                                   raw_inputs(va, kind, cfg.data.n_particles), va["label"])
    return ({k.replace("val_lct_", "val_lct_init_"): v for k, v in init.items()}
            | {f"val_lct_raw_{k.removeprefix('lct_')}": v for k, v in raw.items()})


def flag_collapse(loss_fn, mean_loss: float, n_global: int, run: tracking.Run, *,
                  warm: bool) -> None:
    """Tag the run ``clrdist.collapse`` (and warn) while an epoch after warm-up ends with the loss
    within 2% of a collapsed projection's, log(2N - 1) for NT-Xent; the tag follows the latest
    epoch, so a run that recovers is untagged. Losses without a known collapse value: no check."""
    ref = loss_fn.collapse_value(n_global)
    if ref is None or not warm:
        return
    flagged = is_collapsed(mean_loss, ref)
    if flagged:
        say(f"WARNING: epoch loss {mean_loss:.4f} is within 2% of {ref:.4f}, the loss of a "
            f"collapsed projection (log(2N - 1), N = {n_global}): the representation is not "
            "learning (diagnostics: train_pos_top1, train_z_std)")
    run.set_tags({"clrdist.collapse": "true" if flagged else "false",
                  "clrdist.collapse_reference": f"{ref:.4f}"})


@dataclass
class Worker:
    """What the loop's pieces share besides the :class:`TrainState`: this rank, the run it logs
    to (rank 0), the step's ingredients, validation and the throughput clock."""
    cfg: RunConfig
    run: tracking.Run
    device: torch.device
    rank: int
    world: int
    views: Any
    gen: torch.Generator
    precision: Any
    total_steps: int
    stop_file: str | None  # the driver's stop request on preemption (preempt.py)
    val: tuple[dict, dict] | None = None
    last_val: dict[str, float] = field(default_factory=dict)  # in every report (Ray Tune)
    t_log: float = 0.0
    jets_since_log: int = 0

    @property
    def master(self) -> bool:
        return self.rank == 0

    def is_log_step(self, step: int) -> bool:
        return step % self.cfg.tracking.log_every == 0


def setup(config: dict[str, Any]) -> tuple[Worker, TrainState]:
    """Data (this rank's equal share of every epoch), model, loss and views (identical initial
    weights on every rank), precision, prefetcher and loss guard."""
    cfg = config_from_dict(config["run_config"], source="train_loop_config", eval_options=False)
    tune_malloc()  # steady per-step allocations (clrdist.runtime)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    stream = ShardedStream(cfg.data.train_store, batch_size=cfg.data.batch_size, rank=rank,
                           world_size=world, seed=cfg.seed, shuffle_buffer=cfg.data.shuffle_buffer,
                           num_threads=cfg.data.loader_threads)
    total_steps = min(cfg.optim.max_steps or 10**12, stream.batches_per_epoch() * cfg.optim.epochs)
    engine = build_engine(initial_model(cfg.model, cfg.seed), cfg, total_steps)
    loss_fn = build_loss(cfg.loss)
    loss_fn.attach(engine.module, total_steps)  # DINO: the teacher starts as a copy of the student
    # views, then local (student only, DINO), then the anomaly view; on a GPU: fixed shapes
    sync_free = default_sync_free(device)
    prepare_model(engine.module, sync_free=sync_free, compile=cfg.model.compile)
    views = build_views(cfg, fixed=sync_free)
    precision = resolve(cfg.scaling.precision, device)  # one policy: clrdist/precision.py
    precision.apply_global()
    if rank == 0:
        say(f"precision {precision.name} on {device.type}")
    prefetch = DevicePrefetcher(device)  # pinned, non-blocking host -> device copies
    gen = torch.Generator(device=device)
    guard = LossGuard(device)  # remembers the first non-finite loss (engine.py)
    w = Worker(cfg, tracking.Run(config["tracking_uri"], config["mlflow_run_id"]), device, rank,
               world, views, gen, precision, total_steps, config.get("stop_file"))
    return w, TrainState(engine, loss_fn, stream, prefetch, cfg, rank, guard)


def log_references(w: Worker, st: TrainState) -> None:
    """Before the first step: the validation references, once (every rank encodes)."""
    refs = validation_references(st.engine, w.cfg, w.val, w.device)
    if w.master:
        w.run.log_metrics(refs, step=0)
    w.last_val = {k.replace("val_lct_init_", "val_lct_"): v for k, v in refs.items()
                  if k.startswith("val_lct_init_")}  # at step 0 the model is the untrained one


def log_step(w: Worker, st: TrainState, out) -> None:
    """At a logging step: every rank joins the diagnostics' gather; rank 0 logs (is the loss
    learning? diagnostics.py) with the throughput since the last logging step."""
    diag = global_diagnostics(out.z.chunk(len(w.views)), out.rep.chunk(len(w.views))[0])
    if not w.master:
        return
    now = time.perf_counter()
    metrics = out.metrics()  # one host read of every term and the gradient norm
    metrics.update({f"train_{k}": v for k, v in diag.items()})
    metrics.update(epoch=st.epoch, jets_per_s=w.jets_since_log / (now - w.t_log))
    w.run.log_metrics(metrics, step=st.step)
    w.t_log, w.jets_since_log = now, 0


def preempted(w: Worker, st: TrainState, out, logging_step: bool) -> bool:
    """At logging steps the ranks agree on a stop request (preempt.py); on one: a checkpoint."""
    if not (w.stop_file and logging_step and st.step < w.total_steps
            and preempt.agree(preempt.requested(w.stop_file), w.device)):
        return False
    st.report({"loss": float(out.terms["loss"].detach()), "step": st.step, "epoch": st.epoch,
               "preempted": 1.0}, mid=True)
    if w.master:
        say(f"stop requested: checkpoint at step {st.step}, stopping")
    return True


def run_epoch(w: Worker, st: TrainState) -> tuple[torch.Tensor, int] | None:
    """The steps of one epoch (or what is left of it): (summed loss on the device, batches), or
    None when the ranks stopped on a preemption request."""
    cfg = w.cfg
    epoch_loss, epoch_batches = torch.zeros((), device=w.device), 0
    for batch in st.prefetcher(st.stream):
        # -- one step: views -> encode -> loss (float32) -> backward -> optimiser (step.py) --
        seed_step(w.gen, cfg.seed, w.rank, st.step)
        out = train_step(st.engine, st.loss_fn, w.views, batch, w.gen, cfg, w.precision,
                         step=st.step + 1, guard=st.guard, device=w.device)
        st.step += 1
        logging_step = w.is_log_step(st.step)
        if logging_step:
            st.guard.check()  # every rank: stop at the first log point after a non-finite loss
        epoch_loss += out.terms["loss"].detach()  # stays on the device: no sync per step
        epoch_batches += 1
        w.jets_since_log += out.jets * w.world
        if logging_step:
            log_step(w, st, out)
        # -- checkpoint inside the epoch when the cadence asks (steps, minutes) ----------------
        if st.step < w.total_steps and st.cadence.in_epoch(st.step, logging_step):
            st.report({"loss": float(out.terms["loss"].detach()), "step": st.step,
                       "epoch": st.epoch, **w.last_val}, mid=True)
        if preempted(w, st, out, logging_step):
            return None
        if st.step >= w.total_steps:
            break
    return epoch_loss, epoch_batches


def end_epoch(w: Worker, st: TrainState, epoch_loss: torch.Tensor, epoch_batches: int) -> None:
    """The epoch boundary: validation (every rank), the epoch's loss, the collapse flag and the
    epoch line (rank 0), and the report, with a checkpoint when the cadence asks."""
    cfg = w.cfg
    st.epoch += 1
    mean_loss = float(epoch_loss) / max(1, epoch_batches)
    epoch_metrics = {"loss": mean_loss, "step": st.step, "epoch": st.epoch}
    if w.val is not None and st.epoch % cfg.eval.every_epochs == 0:  # every rank takes part
        # what evaluation will use: DINO's teacher, else the trained model
        val_metrics = validate(st.engine, cfg, w.val, w.device, st.loss_fn.eval_model(st.engine.module))
        st.engine.train()
        if w.master:
            w.run.log_metrics(val_metrics, step=st.epoch)
            epoch_metrics.update(val_metrics)  # Ray Tune schedulers read rank 0's metrics
            w.last_val = val_metrics
    if w.master:
        w.run.log_metrics({"epoch_loss": mean_loss}, step=st.step)
        flag_collapse(st.loss_fn, mean_loss, cfg.data.batch_size * w.world, w.run,
                      warm=st.step - epoch_batches >= cfg.optim.warmup_steps)
        say(f"epoch {st.epoch}/{cfg.optim.epochs} step {st.step} loss {mean_loss:.4f}"
            + "".join(f" {k} {v:.4f}" for k, v in epoch_metrics.items()
                      if k.startswith("val_") and k.endswith("_auc")))
    final = st.epoch >= cfg.optim.epochs or st.step >= w.total_steps
    st.report(epoch_metrics, mid=False, save=st.cadence.at_epoch_end(st.epoch, final))


def train_loop_per_worker(config: dict[str, Any]) -> None:
    w, st = setup(config)
    # -- resume from the last checkpoint, if Ray Train restarted us ------------------------------
    if st.restore(ckpt := ray.train.get_checkpoint()) and w.master:
        say(f"resumed from step {st.step} (epoch {st.epoch}) of {ckpt.path}")
    st.cadence = Cadence.from_config(w.cfg.checkpoint, w.device)  # steps, minutes, epochs, the end
    # -- validation during training (every rank encodes, rank 0 fits and logs) -----------------
    w.val = load_validation(w.cfg) if w.cfg.eval.every_epochs else None
    if w.val is not None and st.step == 0:
        log_references(w, st)
    st.engine.train()
    w.t_log, w.jets_since_log = time.perf_counter(), 0
    while st.epoch < w.cfg.optim.epochs and st.step < w.total_steps:
        if not st.mid_epoch:
            st.stream.set_epoch(st.epoch)
        st.mid_epoch = False
        if (summed := run_epoch(w, st)) is None:
            return  # preempted: a checkpoint is written, the driver resumes later
        end_epoch(w, st, *summed)
    if w.master:  # metrics a busy tracking store delayed: written now, or the run fails saying why
        w.run.flush()
