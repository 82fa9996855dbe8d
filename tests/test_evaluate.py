"""Held-out checks before evaluation: provably disjoint stores only."""

import itertools
import shlex
from pathlib import Path

import numpy as np
import pytest

from clrdist.config import ConfigError, load_config
from clrdist.data.split import split_store
from clrdist.data.store import StoreError, open_store
from clrdist.data.toy import write_toy_store
from clrdist.eval.held_out import check_held_out
from clrdist.eval_checks import check_final_stores
from clrdist.factory import build_loss


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    d = tmp_path_factory.mktemp("held_out")
    write_toy_store(d / "toy.zarr", n_per_class=300, seed=1)
    split_store(d / "toy.zarr", {"train": 0.6, "a": 0.2, "b": 0.2}, out_dir=d, seed=1)
    write_toy_store(d / "other_seed.zarr", n_per_class=100, seed=2)
    write_toy_store(d / "same_seed.zarr", n_per_class=100, seed=1)
    return d


def test_disjoint_splits_pass(toy):
    check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "b.zarr")


def test_a_split_reused_as_test_set_is_refused(toy):
    with pytest.raises(StoreError, match="shares .* samples"):
        check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "a.zarr")


def test_evaluating_on_the_parent_store_is_refused(toy):
    with pytest.raises(StoreError, match="cannot prove it is disjoint"):
        check_held_out(toy / "train.zarr", toy / "a.zarr", toy / "toy.zarr")


def test_independent_sources_pass_and_same_seed_is_refused(toy):
    check_held_out(toy / "toy.zarr", toy / "other_seed.zarr")
    with pytest.raises(StoreError, match="same source"):
        check_held_out(toy / "toy.zarr", toy / "same_seed.zarr")


# ---- validation is not test (issue 11, item 2) ----------------------------------------------

def _cfg(stores, **paths):
    sets = {"train_store": stores / "train.zarr", "eval_train_store": stores / "eval_train.zarr",
            "eval_test_store": stores / "eval_test.zarr", "val_store": stores / "val.zarr", **paths}
    return load_config(None, [f"data.{k}={v}" for k, v in sets.items() if v is not None]
                       + ["eval.every_epochs=1"])


def test_every_epochs_needs_a_validation_store(toy_splits):
    with pytest.raises(ConfigError, match="eval.every_epochs needs data.val_store"):
        _cfg(toy_splits, val_store=None)
    with pytest.raises(ConfigError, match="data.val_store: .* is also an evaluation store"):
        _cfg(toy_splits, val_store=toy_splits / "eval_test.zarr")


def test_validation_fits_on_eval_train_and_scores_on_val_never_test(toy_splits):
    from clrdist.train.loop import load_validation

    fit, val = load_validation(_cfg(toy_splits))
    want_fit, want_val = (open_store(toy_splits / f"{n}.zarr").read_all()
                          for n in ("eval_train", "val"))
    np.testing.assert_array_equal(fit["features"], want_fit["features"])
    np.testing.assert_array_equal(val["features"], want_val["features"])
    assert len(val["label"]) != open_store(toy_splits / "eval_test.zarr").n


def test_final_evaluation_refuses_a_test_store_that_is_or_overlaps_validation(toy_splits, tmp_path):
    store, test = check_final_stores(_cfg(toy_splits))  # the honest layout passes
    assert test.path.name == "eval_test.zarr" and store.path.name == "eval_train.zarr"
    same = toy_splits / "sub" / ".." / "eval_test.zarr"  # another spelling of the test store
    with pytest.raises(ConfigError, match="eval_test_store: .* is the validation store"):
        check_final_stores(_cfg(toy_splits, val_store=same))
    # a validation split cut from the same parent with another seed overlaps the test split
    split_store(toy_splits / "toy.zarr", {"val": 0.1}, out_dir=tmp_path, seed=99)
    with pytest.raises(StoreError, match="shares .* samples"):
        check_final_stores(_cfg(toy_splits, val_store=tmp_path / "val.zarr"))


def test_cli_split_makes_train_val_eval_train_eval_test(toy, tmp_path, capsys):
    from clrdist.cli import main

    assert main(["data", "split", str(toy / "toy.zarr"), "--fractions", "0.7,0.1,0.1,0.1",
                 "--out-dir", str(tmp_path)]) == 0
    names = ("train", "val", "eval_train", "eval_test")
    paths = {n: tmp_path / f"toy_{n}.zarr" for n in names}
    assert sum(open_store(p).n for p in paths.values()) == open_store(toy / "toy.zarr").n
    check_held_out(*paths.values())
    cfg = load_config(None, [f"data.{'train_store' if n == 'train' else n + '_store'}={p}"
                             for n, p in paths.items()] + ["eval.every_epochs=1"])
    check_final_stores(cfg)


# ---- generated stores: shards that can share events are refused (issue 11, item 1) ----------

def _gen_plan(procs, seed, n=4, shard=2, **kw):
    from clrdist.data.generation import GenerationConfig, make_plan

    args = dict(n_particles=10, ecm=13000, shard_size=shard)
    return make_plan(GenerationConfig(processes=procs, n_jets=n, seed=seed, **{**args, **kw}))


def _fake_generated(path, procs, seed, **kw):
    """A tiny store with the provenance `clrdist data generate` writes (no Pythia run)."""
    from clrdist.data.generation.plan import shard_records
    from clrdist.data.store import StoreWriter

    plan = _gen_plan(procs, seed, **kw)
    n = sum(s.n for s in plan.shards)
    prov = {"generator": "clrdist.data.generate", "processes": list(procs), "seed": seed,
            "shards": shard_records(plan.shards)}
    rng = np.random.default_rng(seed)
    with StoreWriter(path, kind="jet", particle_features=["pt", "eta", "phi"],
                     feature_names=["jet_pt"], label_names={0: "qcd", 1: "top"}, n_particles=4,
                     chunk_size=4, provenance=prov) as w:
        w.append(rng.random((n, 4, 3), dtype=np.float32), np.ones((n, 4), bool),
                 np.array([plan.labels[s.process] for s in plan.shards for _ in range(s.n)], np.int8),
                 rng.random((n, 1), dtype=np.float32))
    return path


def test_shard_seeds_depend_on_process_name_not_position():
    def qcd_seeds(procs, seed=0):
        return [(s.seed, s.detector_seed) for s in _gen_plan(procs, seed).shards if s.process == "qcd"]

    assert qcd_seeds(["qcd"]) == qcd_seeds(["top", "qcd"]) == qcd_seeds(["svj", "qcd"])
    assert set(qcd_seeds(["qcd"], seed=7)).isdisjoint(qcd_seeds(["qcd"]))


def test_stores_that_can_share_a_shard_are_refused_and_others_pass(tmp_path):
    from clrdist.data.generation.processes import SVJ_JET

    train = _fake_generated(tmp_path / "qcd0.zarr", ["qcd"], 0)
    # same process, settings and seed in another command: the same QCD events -> refused
    both = _fake_generated(tmp_path / "topqcd0.zarr", ["top", "qcd"], 0)
    with pytest.raises(StoreError, match="same source: qcd shard with Pythia seed"):
        check_held_out(train, both)
    svj = _fake_generated(tmp_path / "qcdsvj0.zarr", ["qcd", "svj"], 0, jet=SVJ_JET)
    same_jet = _fake_generated(tmp_path / "qcd0_svjjet.zarr", ["qcd"], 0, jet=SVJ_JET, n=2)
    with pytest.raises(StoreError, match="cannot prove it is disjoint"):
        check_held_out(same_jet, svj)  # a smaller store of the same shard stream: refused too
    # other settings (the svj store's pT-hat window) or another seed: no shard in common -> pass
    check_held_out(train, svj)
    labelled = _fake_generated(tmp_path / "qcdtop7.zarr", ["qcd", "top"], 7, n=8)
    split_store(labelled, {"eval_train": 0.5, "eval_test": 0.5}, out_dir=tmp_path, seed=0)
    # DarkCLR layout: train on a background store, evaluate on splits of a labelled one
    check_held_out(train, tmp_path / "eval_train.zarr", tmp_path / "eval_test.zarr")
    # ... still checked by index: a split reused is refused whatever the training store
    with pytest.raises(StoreError, match="shares .* samples"):
        check_held_out(train, tmp_path / "eval_train.zarr", tmp_path / "eval_train.zarr")
    with pytest.raises(StoreError, match="cannot prove it is disjoint"):
        check_held_out(both, tmp_path / "eval_train.zarr", labelled)  # the parent itself


# ---- recipes that match the papers (issue 11, item 4) ----------------------------------------

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _recipe(name):
    """The store-making commands in a config's header comment, as argv lists."""
    lines = (CONFIGS / f"{name}.yaml").read_text().splitlines()
    return [shlex.split(ln.lstrip("# ").strip())[1:] for ln in lines
            if ln.startswith("#") and ln.lstrip("# ").startswith("clrdist data ")]


@pytest.mark.parametrize("name", ["darkclr_svj", "darkclr_svj_cpu"])
def test_darkclr_recipe_trains_on_background_only(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    gens = [a for a in _recipe(name) if a[:2] == ["data", "generate"]]
    train = [a for a in gens if a[a.index("--out") + 1] == cfg.data.train_store]
    assert len(train) == 1, "the header says how to make data.train_store"
    processes = list(itertools.takewhile(lambda a: not a.startswith("-"), train[0][2:]))
    assert processes == ["qcd"], train[0]  # background and nothing else
    assert cfg.loss.name == "anomalyclr" and build_loss(cfg.loss).keep_positive is False


@pytest.mark.integration
def test_darkclr_cpu_recipe_runs_and_passes_the_held_out_check(ray_cluster, tmp_path):
    """The header's commands at 6 jets per process: a QCD-only training store, a labelled
    svj/QCD store split into eval_train/eval_test; the held-out check accepts them."""
    from clrdist.cli import main

    for argv in _recipe("darkclr_svj_cpu"):
        argv = [tmp_path.as_posix() + a[4:] if a.startswith("data/") else a for a in argv]
        if "--jets" in argv:
            argv[argv.index("--jets") + 1] = "6"
            argv += ["--no-progress", "--workers", "2", "--max-particles", "20"]
        assert main(argv) == 0, argv
    base = load_config(CONFIGS / "darkclr_svj_cpu.yaml").data
    cfg = load_config(CONFIGS / "darkclr_svj_cpu.yaml",
                      [f"data.{k}={tmp_path.as_posix()}{getattr(base, k)[4:]}"
                       for k in ("train_store", "val_store", "eval_train_store",
                                 "eval_test_store")])
    train = open_store(cfg.data.train_store)
    assert train.label_names == {0: "qcd"} and set(train.read_all()["label"]) == {0}
    store, test = check_final_stores(cfg)
    assert set(np.r_[store.read_all()["label"], test.read_all()["label"]]) == {0, 1}


def test_lhco_like_resonance_defaults_to_13_tev():
    dijet = _gen_plan(["resonance", "qcd"], 0, ecm=None, jet=None)
    assert dijet.ecm == 13000.0
    assert all("Beams:eCM = 13000" in s.settings for s in dijet.shards)
    assert _gen_plan(["top", "qcd"], 0, ecm=None).ecm == 14000.0  # the top-tagging data's energy


def test_bump_hunt_energy_comes_from_the_store_provenance(tmp_path):
    from clrdist.data.store import StoreWriter
    from clrdist.evaluation import collision_energy

    def store(name, ecm):
        with StoreWriter(tmp_path / name, kind="dijet", particle_features=["pt", "eta", "phi"],
                         feature_names=["m_jj"], label_names={0: "qcd"}, n_particles=2,
                         chunk_size=4, provenance={} if ecm is None else {"ecm": ecm}) as w:
            w.append(np.ones((4, 2, 3), np.float32), np.ones((4, 2), bool),
                     np.zeros(4, np.int8), np.full((4, 1), 3000.0, np.float32))
        return open_store(tmp_path / name)

    a, b, c = store("a.zarr", 13000.0), store("b.zarr", 13000.0), store("c.zarr", 14000.0)
    assert collision_energy(a, b) == 13000.0
    assert collision_energy(store("none.zarr", None)) is None
    with pytest.raises(StoreError, match="different collision energies"):
        collision_energy(a, c)


def test_a_shard_shared_across_commands_is_the_same_events():
    """What the check refuses is real: `qcd --seed 0` and `top qcd --seed 0` now give their
    QCD shard the same Pythia seed and settings, and Pythia makes the same jets from it."""
    pytest.importorskip("pythia8mc")
    from clrdist.data.generation.events import generate_shard

    def qcd_shard(procs, seed):
        return next(s for s in _gen_plan(procs, seed, n=2, shard=2, ecm=None).shards
                    if s.process == "qcd")

    a, b = qcd_shard(["qcd"], 0), qcd_shard(["top", "qcd"], 0)
    assert a == b
    ja, jb = generate_shard(a), generate_shard(b)
    np.testing.assert_array_equal(ja["particles"], jb["particles"])
    other = generate_shard(qcd_shard(["qcd"], 7))
    assert not np.array_equal(other["features"], ja["features"])
