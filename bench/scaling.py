"""Data-parallel scaling of the contrastive step: 1 vs 2 workers on one node, and 2 workers across
two SLURM nodes; the share of step time in the negatives' all-gather and the gradient all-reduce.

    python -m bench.scaling [--batch 128] [--steps 12] [--no-slurm]

Each worker is a process with one thread pinned to its own core (torch.set_num_threads(1),
sched_setaffinity), running the DDP step clrdist trains with: two views of B jets -> encoder ->
NT-Xent against all-gathered negatives (clrdist.distributed) -> backward (DDP all-reduces the
gradients) -> Adam. One node: torch.multiprocessing with a gloo group on 127.0.0.1. Two nodes:
``srun -N2`` on the SLURM in $SLURM_CONF, or (as root, no $SLURM_CONF) the two-node SLURM of
slurm/local_cluster.py started for the run; both emulated nodes then share this machine's cores
(workers pinned to different ones) and talk over TCP.

The collectives are also timed alone, with the step's shapes and on the same group: the
all-gather of the (B, D) projections (forward) plus the all-reduce of their (world*B, D) gradient
(backward), and one all-reduce of every parameter's gradient (what DDP's buckets carry). Their
share is that time over the step's. Prints one JSON object; ratios come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# -- one worker ----------------------------------------------------------------------------------
def worker(rank: int, world: int, master: str, port: int, args: argparse.Namespace) -> dict:
    import torch
    import torch.distributed as dist

    from bench.train_step import synthetic_jets
    from clrdist.config import LossConfig, ModelConfig
    from clrdist.distributed import all_gather_with_grad
    from clrdist.factory import build_loss, build_model

    os.sched_setaffinity(0, {rank % os.cpu_count()})
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://{master}:{port}", rank=rank,
                                world_size=world)
    torch.manual_seed(0)
    model = build_model(ModelConfig(model_dim=args.model_dim, ff_dim=2 * args.model_dim, heads=4,
                                    layers=2, head_dims=[args.model_dim], output_dim=32))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    loss_fn = build_loss(LossConfig(name="nt_xent", temperature=0.1))
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-4)
    x, mask = synthetic_jets(2 * args.batch, args.constituents, seed=rank)
    x1, x2 = x[: args.batch], x[args.batch:]
    m1, m2 = mask[: args.batch], mask[args.batch:]

    def step():
        _, z = ddp(torch.cat([x1, x2]), torch.cat([m1, m2]))
        loss = loss_fn(*z.chunk(2))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(fn, n) -> float:
        times = []
        for _ in range(n):
            if world > 1:
                dist.barrier()
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    for _ in range(3):
        step()
    t_step = timed(step, args.steps)
    out = {"step_s": t_step, "jets_per_s_per_worker": args.batch / t_step}
    if world > 1:
        z = torch.randn(args.batch, 32, requires_grad=True)
        n_params = sum(p.numel() for p in model.parameters())
        grads = torch.zeros(n_params)

        def gather():  # forward all-gather + backward all-reduce of the projections (2 views)
            for _ in range(2):
                all_gather_with_grad(z).sum().backward()

        t_gather = timed(gather, args.steps)
        t_reduce = timed(lambda: dist.all_reduce(grads), args.steps)
        out.update(gather_s=t_gather, grad_allreduce_s=t_reduce,
                   gather_share=t_gather / t_step, grad_allreduce_share=t_reduce / t_step,
                   n_params=n_params, host=socket.gethostname())
        dist.destroy_process_group()
    return out


def _spawned(rank: int, world: int, port: int, args, queue) -> None:
    queue.put((rank, worker(rank, world, "127.0.0.1", port, args)))


def one_node(world: int, args) -> dict:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_spawned, args=(r, world, port, args, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=600) for _ in procs)
    for p in procs:
        p.join()
    return results[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- two SLURM nodes -----------------------------------------------------------------------------
def two_nodes(args) -> dict:
    started = None
    env = dict(os.environ)
    if not env.get("SLURM_CONF"):
        sys.path.insert(0, str(REPO / "slurm"))
        import local_cluster

        if (why := local_cluster.unavailable()) is not None:
            return {"skipped": why}
        local_cluster.install()
        started = local_cluster.LocalSlurm(tempfile.mkdtemp(prefix="clrdist-bench-slurm-")).start()
        env = started.env
    try:
        host = socket.gethostbyname(socket.gethostname())
        cmd = ["srun", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1",
               sys.executable, "-m", "bench.scaling", "--worker", "--master", host,
               "--port", str(_free_port()), "--batch", str(args.batch), "--steps", str(args.steps),
               "--model-dim", str(args.model_dim), "--constituents", str(args.constituents)]
        r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            return {"error": r.stderr[-2000:]}
        rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        res = next(row for row in rows if row["rank"] == 0)
        res["nodes"] = sorted({row["node"] for row in rows})
        return res
    finally:
        if started is not None:
            started.stop()
            shutil.rmtree(started.root, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=128, help="jets per worker per step")
    ap.add_argument("--steps", type=int, default=12, help="timed steps (median)")
    ap.add_argument("--model-dim", type=int, default=64)
    ap.add_argument("--constituents", type=int, default=50)
    ap.add_argument("--no-slurm", action="store_true", help="skip the two-node measurement")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # srun's task
    ap.add_argument("--master", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
        res = worker(rank, world, args.master, args.port, args)
        print(json.dumps({"rank": rank, "node": os.environ.get("SLURMD_NODENAME"), **res}))
        return 0
    one = one_node(1, args)
    two = one_node(2, args)
    out = {"bench": "scaling", "batch_per_worker": args.batch, "model_dim": args.model_dim,
           "constituents": args.constituents, "cpus": os.cpu_count(),
           "one_node": {"workers_1": one, "workers_2": two,
                        "per_worker_efficiency": two["jets_per_s_per_worker"]
                        / one["jets_per_s_per_worker"]}}
    if not args.no_slurm:
        nodes = two_nodes(args)
        if "jets_per_s_per_worker" in nodes:
            nodes["per_worker_efficiency"] = nodes["jets_per_s_per_worker"] / one["jets_per_s_per_worker"]
        out["two_slurm_nodes"] = nodes
    try:
        out["load_avg"] = os.getloadavg()[0]
    except OSError:
        pass
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
