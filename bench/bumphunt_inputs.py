"""Steps 1-3 of bench.bumphunt: the events, the encoder and its event representations, and the
reference features (raw substructure, an idealised supervised score)."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

# -- 1. events -----------------------------------------------------------------------------------

def generate(n_qcd: int, n_sig: int, seed: int, workers: int) -> dict[str, np.ndarray]:
    """The shards ``clrdist data generate resonance qcd --seed S`` would make, per process as
    many as asked (the plan's per-process seeds do not depend on the other process's count)."""
    from clrdist.data.generation.events import generate_shard
    from clrdist.data.generation.plan import GenerationConfig, make_plan

    shards = []
    for proc, n in (("qcd", n_qcd), ("resonance", n_sig)):
        cfg = GenerationConfig(processes=["resonance", "qcd"], n_jets=n, seed=seed, shard_size=1000)
        shards += [s for s in make_plan(cfg).shards if s.process == proc]
    with ProcessPoolExecutor(workers) as ex:
        outs = list(ex.map(generate_shard, shards))
    ev = {}
    for proc in ("qcd", "resonance"):
        o = [x for s, x in zip(shards, outs, strict=True) if s.process == proc]
        ev.update({f"{proc}_{k}": np.concatenate([x[k] for x in o])
                   for k in ("particles", "mask", "features")})
    return ev


# -- 2. encoder ----------------------------------------------------------------------------------

def jets_of(ev: dict, proc: str) -> tuple[np.ndarray, np.ndarray, int]:
    p, m = ev[f"{proc}_particles"], ev[f"{proc}_mask"]
    half = p.shape[1] // 2  # dijet stores: leading jet's P constituents, then the subleading's
    return p, m, half


def train_encoder(cfg, particles: np.ndarray, mask: np.ndarray, seconds: float, seed: int):
    import torch

    from clrdist.factory import build_loss, initial_model
    from clrdist.physics.augment import build_view
    from clrdist.train.inputs import view_inputs

    model = initial_model(cfg.model, seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)
    loss_fn = build_loss(cfg.loss)
    views = [build_view(v, cfg.augment.strength, cfg.augment.backend) for v in cfg.augment.views]
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    B, steps, t0 = cfg.data.batch_size, 0, time.perf_counter()
    model.train()
    while time.perf_counter() - t0 < seconds:
        idx = np.sort(rng.choice(len(mask), B, replace=False))
        for g in opt.param_groups:
            g["lr"] = cfg.optim.lr * min(1.0, (steps + 1) / max(1, cfg.optim.warmup_steps))
        x, m = view_inputs(particles[idx], mask[idx], cfg, views, gen)
        _, z = model(x, m)
        loss = loss_fn(*z.chunk(len(views)))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return model, {"steps": steps, "batch_size": B, "seconds": round(time.perf_counter() - t0, 1),
                   "final_loss": round(float(loss.detach()), 4)}


def event_reps(model, cfg, ev: dict, proc: str) -> np.ndarray:
    """(n, 2 D): both jets' representations, leading jet first."""
    from clrdist.factory import build_encoder

    enc = build_encoder(model, cfg)
    p, m, half = jets_of(ev, proc)
    return np.concatenate([enc({"particles": p[:, :half], "mask": m[:, :half]}),
                           enc({"particles": p[:, half:], "mask": m[:, half:]})], 1)


# -- 3. reference features -----------------------------------------------------------------------

def substructure(features: np.ndarray, names: list[str]) -> np.ndarray:
    """(n, 4): m_J and tau21 of the heavier jet, then of the lighter one."""
    col = {n: i for i, n in enumerate(names)}
    m1, m2 = features[:, col["m_J1"]], features[:, col["m_J2"]]
    t1, t2 = features[:, col["tau21_J1"]], features[:, col["tau21_J2"]]
    heavy = m1 >= m2
    return np.stack([np.where(heavy, m1, m2), np.where(heavy, m2, m1),
                     np.where(heavy, t1, t2), np.where(heavy, t2, t1)], 1)


def supervised_scores(x_b: np.ndarray, x_s: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Idealised classifier: truth-labelled gradient-boosted trees, cross-fitted (each half of
    the background and of the signal scored by the model trained on the other halves)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng([seed, 5])
    hb, hs = rng.permutation(len(x_b)) % 2, rng.permutation(len(x_s)) % 2
    sb, ss = np.zeros(len(x_b)), np.zeros(len(x_s))
    for h in (0, 1):
        x = np.concatenate([x_b[hb != h], x_s[hs != h]])
        y = np.r_[np.zeros((hb != h).sum()), np.ones((hs != h).sum())]
        clf = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed)
        with threadpool_limits(1):
            clf.fit(x, y)
            sb[hb == h] = clf.decision_function(x_b[hb == h])
            ss[hs == h] = clf.decision_function(x_s[hs == h])
    return sb[:, None], ss[:, None]
