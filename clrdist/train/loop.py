"""The per-worker training function Ray Train runs on every rank.

Plain PyTorch, read top to bottom: data -> augment -> encode -> loss -> step -> log -> checkpoint.
Rank-0 side effects (MLflow, the model checkpoint) sit behind the one ``master`` flag.
"""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Any

import ray.train
import ray.train.torch
import torch

from clrdist import tracking
from clrdist.config import config_from_dict
from clrdist.data.prefetch import DevicePrefetcher
from clrdist.data.store import open_store
from clrdist.data.stream import ShardedStream
from clrdist.diagnostics import global_diagnostics, is_collapsed
from clrdist.distributed import gather_shards, get_rank, get_world_size
from clrdist.factory import build_encoder, build_loss, build_views, initial_model
from clrdist.precision import resolve
from clrdist.runtime import tune_malloc
from clrdist.train import checkpoint, preempt
from clrdist.train.cadence import Cadence
from clrdist.train.engine import LossGuard, build_engine
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
    # imported here: training's modules must not load the evaluation runner (tests/test_pipeline.py)
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


def flag_collapse(loss_fn, mean_loss: float, n_global: int, uri: str, run_id: str, *,
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
    tracking.set_tags(uri, run_id, {"clrdist.collapse": "true" if flagged else "false",
                                    "clrdist.collapse_reference": f"{ref:.4f}"})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    cfg = config_from_dict(config["run_config"], source="train_loop_config")
    tune_malloc()  # steady per-step allocations (clrdist.runtime)
    uri, run_id = config["tracking_uri"], config["mlflow_run_id"]
    stop_file = config.get("stop_file")  # the driver's stop request on preemption (preempt.py)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    master = rank == 0
    device = ray.train.torch.get_device()

    # -- data: this rank's equal share of every epoch ------------------------------------------
    stream = ShardedStream(cfg.data.train_store, batch_size=cfg.data.batch_size, rank=rank,
                           world_size=world, seed=cfg.seed, shuffle_buffer=cfg.data.shuffle_buffer,
                           num_threads=cfg.data.loader_threads)
    steps_per_epoch = stream.batches_per_epoch()
    total_steps = min(cfg.optim.max_steps or 10**12, steps_per_epoch * cfg.optim.epochs)

    # -- model, loss, views (identical initial weights on every rank) ----------------------------
    engine = build_engine(initial_model(cfg.model, cfg.seed), cfg, total_steps)
    loss_fn = build_loss(cfg.loss)
    loss_fn.attach(engine.module, total_steps)  # DINO: the teacher starts as a copy of the student
    # views, then local (student only, DINO), then the anomaly view; on a GPU: fixed shapes
    sync_free = default_sync_free(device)
    prepare_model(engine.module, sync_free=sync_free, compile=cfg.model.compile)
    views = build_views(cfg, fixed=sync_free)
    precision = resolve(cfg.scaling.precision, device)  # one policy: clrdist/precision.py
    precision.apply_global()
    if master:
        say(f"precision {precision.name} on {device.type}")
    prefetch = DevicePrefetcher(device)  # pinned, non-blocking host -> device copies
    gen = torch.Generator(device=device)
    guard = LossGuard(device)  # remembers the first non-finite loss (engine.py)

    # -- resume from the last checkpoint, if Ray Train restarted us ------------------------------
    step, epoch, mid_epoch = 0, 0, False
    if (ckpt := ray.train.get_checkpoint()) is not None:
        with ckpt.as_directory() as d:
            state, meta = checkpoint.load(d)
            engine.load_state_dict(state)
            if "loss" in state:  # a stateful loss's state (DINO: teacher, centre)
                loss_fn.load_state_dict(state["loss"])
            if (own := checkpoint.load_rank_state(d, rank)) is not None:
                engine.load_rank_state(own)  # ZeRO 1/2: this rank's optimiser shard
            step, epoch, mid_epoch = meta["step"], meta["epoch"], meta.get("mid_epoch", False)
            if mid_epoch and (s := checkpoint.load_stream_state(d, rank)) is not None:
                stream.load_state_dict(s)
        if master:
            say(f"resumed from step {step} (epoch {epoch}) of {ckpt.path}")

    cadence = Cadence.from_config(cfg.checkpoint, device)  # steps, minutes, epochs, the end

    def report(metrics: dict[str, float], *, mid: bool, save: bool = True) -> None:
        """Every rank reports (it is a barrier); with ``save`` each writes its stream position,
        rank 0 the model."""
        guard.check()  # never a checkpoint after a non-finite loss
        if not save:
            ray.train.report(metrics)  # metrics only (Ray Tune's schedulers read them)
            return
        cadence.saved()
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint.save(tmp, state=checkpoint.training_state(engine, loss_fn) if master else None, step=step,
                            epoch=epoch, cfg=cfg, rank=rank, stream_state=prefetch.stream_state(),
                            mid_epoch=mid, rank_state=engine.rank_state())
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    # -- validation during training (every rank encodes, rank 0 fits and logs) -----------------
    val = load_validation(cfg) if cfg.eval.every_epochs else None
    last_val: dict[str, float] = {}  # the latest val_* metrics, in every report (Ray Tune)
    if val is not None and step == 0:  # before the first step: the references, once
        refs = validation_references(engine, cfg, val, device)
        if master:
            tracking.log_metrics(uri, run_id, refs, step=0)
        last_val = {k.replace("val_lct_init_", "val_lct_"): v for k, v in refs.items()
                    if k.startswith("val_lct_init_")}  # at step 0 the model is the untrained one

    engine.train()
    t_log, jets_since_log = time.perf_counter(), 0
    while epoch < cfg.optim.epochs and step < total_steps:
        if not mid_epoch:
            stream.set_epoch(epoch)
        mid_epoch = False
        epoch_loss, epoch_batches = torch.zeros((), device=device), 0
        for batch in prefetch(stream):
            # -- one step: views -> encode -> loss (float32) -> backward -> optimiser (step.py) --
            seed_step(gen, cfg.seed, rank, step)
            out = train_step(engine, loss_fn, views, batch, gen, cfg, precision,
                             step=step + 1, guard=guard, device=device)
            step += 1
            if step % cfg.tracking.log_every == 0:
                guard.check()  # every rank: stop at the first log point after a non-finite loss
            epoch_loss += out.terms["loss"].detach()  # stays on the device: no sync per step
            epoch_batches += 1
            jets_since_log += out.jets * world

            # -- log (rank 0) -----------------------------------------------------------------
            if step % cfg.tracking.log_every == 0:
                # every rank joins the gather; rank 0 logs (is the loss learning? diagnostics.py)
                diag = global_diagnostics(out.z.chunk(len(views)), out.rep.chunk(len(views))[0])
            if master and step % cfg.tracking.log_every == 0:
                now = time.perf_counter()
                metrics = out.metrics()  # one host read of every term and the gradient norm
                metrics.update({f"train_{k}": v for k, v in diag.items()})
                metrics.update(epoch=epoch, jets_per_s=jets_since_log / (now - t_log))
                tracking.log_metrics(uri, run_id, metrics, step=step)
                t_log, jets_since_log = now, 0
            terms = out.terms

            # -- checkpoint inside the epoch when the cadence asks (steps, minutes) -------------
            if step < total_steps and cadence.in_epoch(step, step % cfg.tracking.log_every == 0):
                report({"loss": float(terms["loss"].detach()), "step": step, "epoch": epoch,
                        **last_val}, mid=True)

            # -- preemption: at logging steps the ranks agree on a stop request (preempt.py) ---
            if stop_file and step % cfg.tracking.log_every == 0 and step < total_steps \
                    and preempt.agree(preempt.requested(stop_file), device):
                report({"loss": float(terms["loss"].detach()), "step": step, "epoch": epoch,
                        "preempted": 1.0}, mid=True)
                if master:
                    say(f"stop requested: checkpoint at step {step}, stopping")
                return
            if step >= total_steps:
                break

        # -- end of epoch: checkpoint at the boundary -------------------------------------------
        epoch += 1
        mean_loss = float(epoch_loss) / max(1, epoch_batches)
        epoch_metrics = {"loss": mean_loss, "step": step, "epoch": epoch}
        if val is not None and epoch % cfg.eval.every_epochs == 0:  # every rank takes part
            # what evaluation will use: DINO's teacher, else the trained model
            val_metrics = validate(engine, cfg, val, device, loss_fn.eval_model(engine.module))
            engine.train()
            if master:
                tracking.log_metrics(uri, run_id, val_metrics, step=epoch)
                epoch_metrics.update(val_metrics)  # Ray Tune schedulers read rank 0's metrics
                last_val = val_metrics
        if master:
            tracking.log_metrics(uri, run_id, {"epoch_loss": mean_loss}, step=step)
            flag_collapse(loss_fn, mean_loss, cfg.data.batch_size * world, uri, run_id,
                          warm=step - epoch_batches >= cfg.optim.warmup_steps)
            say(f"epoch {epoch}/{cfg.optim.epochs} step {step} loss {mean_loss:.4f}"
                + "".join(f" {k} {v:.4f}" for k, v in epoch_metrics.items()
                          if k.startswith("val_") and k.endswith("_auc")))
        final = epoch >= cfg.optim.epochs or step >= total_steps
        report(epoch_metrics, mid=False, save=cadence.at_epoch_end(epoch, final))
    if master:  # metrics a busy tracking store delayed: written now, or the run fails saying why
        tracking.flush_metrics(uri, run_id)
