"""bench.darkclr_size end to end on small toy stores: every size trained at every seed and scored
on the same test half next to its own untrained and supervised references."""

import json

import pytest
import torch

from bench.darkclr_budget import run_config
from bench.darkclr_size import count_cue, diagnostics, main, probe_inputs
from clrdist.data.store import open_store
from clrdist.data.toy import write_toy_store


def test_every_size_is_trained_at_every_seed_next_to_its_references(tmp_path):
    train = write_toy_store(tmp_path / "train.zarr", n_per_class=150, seed=1, n_particles=50)
    ev = write_toy_store(tmp_path / "ev.zarr", n_per_class=100, seed=2, n_particles=50)
    threads = torch.get_num_threads()
    try:
        out = main(["--train", str(train), "--eval", str(ev), "--sizes", "32x1,64x2",
                    "--steps", "3", "--score-at", "2", "--train-seeds", "2", "--init-seeds", "2", "--ae-epochs", "1",
                    "--set", "data.batch_size=32", "--out", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)  # the bench sets this process's torch threads
    rows = {r["name"]: r for r in out["rows"]}
    assert list(rows) == ["raw: jet mass", "raw: multiplicity", "jet-image AE", "32x1", "64x2",
                          "published (DarkCLR: 128x4, 100k jets, 150 epochs)"]
    small, base = rows["32x1"], rows["64x2"]
    assert small["params"] < base["params"] and (small["model_dim"], base["layers"]) == (32, 2)
    for r in (small, base):
        assert [s["seed"] for s in r["seeds"]] == [0, 1] and r["seeds"][0]["steps"] == 3
        # two seeds, two trainings: not one model scored twice
        assert r["seeds"][0]["rep_auc"] != r["seeds"][1]["rep_auc"]
        assert r["trained_auc_min"] <= r["trained_auc"] <= r["trained_auc_max"]
        # the curve: each run also scored at step 2 of the same schedule, kept apart
        assert [(s["seed"], s["steps"]) for s in r["earlier"]] == [(0, 2), (1, 2)]
        assert list(r["trained_auc_by_steps"]) == ["2", "3"]
        assert r["trained_auc_by_steps"]["3"] == pytest.approx(r["trained_auc"])
        for key in ("untrained_auc", "untrained_auc_max", "supervised_auc", "untrained_drop_auc",
                    "untrained_view_drop_auc"):
            assert 0 <= r[key] <= 1, key
        assert 0 <= r["anomaly_count_auc"] <= 1 and r["anomaly_mult"] < r["view_mult"]
        for s in r["seeds"] + r["earlier"]:  # the label-free diagnostics of every model scored
            assert 0 <= s["drop_auc"] <= 1 and 0 <= s["view_drop_auc"] <= 1, s
            assert -1 <= s["mult_corr"] <= 1, s
    assert rows["published (DarkCLR: 128x4, 100k jets, 150 epochs)"]["trained_auc"] == 0.76
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["complete"] is True and saved["score_at"] == [2]
    assert [r["name"] for r in saved["rows"]] == list(rows)


DROP_FIRST = ("augment.anomaly_view=[{name: drop, params: {p: 0.3}}, {name: rotate}, "
              "{name: smear_soft}, {name: collinear_split, params: {fill: 1.0}}]")


@pytest.fixture
def qcd(tmp_path):
    """The background jets of a toy store (up to 40 constituents)."""
    ev = open_store(write_toy_store(tmp_path / "ev.zarr", n_per_class=150, seed=3,
                                    n_particles=40)).read_all()
    return {k: ev[k][ev["label"].reshape(-1) == 0] for k in ("particles", "mask")}


class _CountsConstituents(torch.nn.Module):
    """|z| = the number of constituents the model sees."""

    def forward(self, x, mask):
        rep = mask.sum(1, keepdim=True).float().expand(-1, 4) / 2
        return rep, rep


def test_diagnostics_see_what_the_score_tracks(qcd):
    got = diagnostics(_CountsConstituents(), probe_inputs(run_config(), qcd))
    # |z| is the multiplicity: rank correlation 1; dropping 30% of the constituents lowers it, so
    # the augmented jets score lower than the unaugmented ones (the score is the wrong way round)
    assert got["mult_corr"] == pytest.approx(1.0, abs=1e-6)
    assert got["drop_auc"] < 0.3
    # against the physical view, which splits into free slots, the anomaly view counts fewer still
    assert got["view_drop_auc"] <= got["drop_auc"]
    with pytest.raises(ValueError, match="anomaly_view"):
        probe_inputs(run_config(["augment.anomaly_view=null"]), qcd)


def test_the_count_cue_of_the_cpu_recipe_and_of_dropping_before_the_physical_views(qcd):
    # the recipe: physical views split into every free slot, the anomaly view only drops
    cue = count_cue(probe_inputs(run_config(), qcd))
    assert cue["anomaly_mult"] < 0.75 * cue["plain_mult"] < 0.75 * cue["view_mult"]
    assert cue["anomaly_count_auc"] < 0.05  # the count alone tells the anomaly view apart
    # drop first, then the same physical views: the splits refill the dropped slots, so the
    # count gives the anomaly view away far less (splits are limited to the jet's own count)
    first = count_cue(probe_inputs(run_config([DROP_FIRST]), qcd))
    assert first["plain_mult"] == cue["plain_mult"] and first["view_mult"] == cue["view_mult"]
    assert first["anomaly_mult"] > 0.9 * first["view_mult"]
    assert first["anomaly_count_auc"] > 0.3


def test_an_unknown_size_is_refused_before_any_store_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--train", str(tmp_path / "no.zarr"), "--eval", str(tmp_path / "no.zarr"),
              "--sizes", "64x2,256x8"])
    assert "--sizes: unknown ['256x8']" in capsys.readouterr().err


@pytest.mark.parametrize("score_at", ["3", "0", "two"])
def test_a_score_step_outside_the_run_is_refused_before_any_store_is_read(tmp_path, capsys,
                                                                          score_at):
    with pytest.raises(SystemExit):
        main(["--train", str(tmp_path / "no.zarr"), "--eval", str(tmp_path / "no.zarr"),
              "--steps", "3", "--score-at", score_at])
    assert "--score-at" in capsys.readouterr().err
