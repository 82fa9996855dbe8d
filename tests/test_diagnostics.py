"""Learning diagnostics: each is checked on batches whose value is known in closed form."""

import json
import math

import pytest
import torch

from clrdist.diagnostics import (
    alignment,
    collapse_value,
    contrastive_diagnostics,
    effective_rank,
    is_collapsed,
    pos_top1,
    uniformity,
    z_std,
)
from clrdist.losses import NTXentLoss, nt_xent


def test_collapsed_projection_scores_as_collapsed():
    n, d = 64, 16
    z = torch.ones(n, d) + 1e-7 * torch.randn(n, d, generator=torch.Generator().manual_seed(0))
    assert uniformity(z) == pytest.approx(0.0, abs=1e-6)
    assert z_std(z) < 1e-5
    assert alignment(z, z.clone()) == pytest.approx(0.0, abs=1e-9)
    # the NT-Xent of a collapsed projection is the reference value the loop flags
    loss = float(nt_xent(z, z.clone(), temperature=0.1))
    assert loss == pytest.approx(collapse_value(n), rel=1e-4)
    assert loss == pytest.approx(math.log(2 * n - 1), rel=1e-4)
    assert NTXentLoss(keep_positive=False).collapse_value(n) == pytest.approx(math.log(2 * n - 2))
    assert is_collapsed(loss, collapse_value(n))


def test_identical_views_are_found_and_aligned():
    z = torch.randn(128, 32, generator=torch.Generator().manual_seed(1))
    assert pos_top1(z, z.clone()) == 1.0
    assert alignment(z, z.clone()) == pytest.approx(0.0, abs=1e-9)
    # unrelated "views": the positive is found at about chance, 1 / (2N - 1)
    other = torch.randn(128, 32, generator=torch.Generator().manual_seed(2))
    assert pos_top1(z, other) < 0.05
    assert alignment(z, other) == pytest.approx(2.0, abs=0.15)  # orthogonal on average


def test_uniformity_of_a_spread_batch_approaches_the_sphere_value():
    # uniform on S^(d-1), large d: ||u - v||^2 concentrates at 2, so log E exp(-2 * 2) -> -4
    z = torch.randn(512, 256, generator=torch.Generator().manual_seed(3))
    assert uniformity(z) == pytest.approx(-4.0, abs=0.1)
    assert z_std(z) == pytest.approx(1 / math.sqrt(256), rel=0.05)


def test_effective_rank_counts_the_spanned_directions():
    g = torch.Generator().manual_seed(4)
    low = torch.randn(500, 3, generator=g) @ torch.randn(3, 64, generator=g)  # rank 3
    assert 1.5 < effective_rank(low) <= 3.0 + 1e-6
    full = torch.randn(2000, 16, generator=g)
    assert effective_rank(full) == pytest.approx(16, rel=0.05)
    assert effective_rank(torch.ones(10, 8)) == 1.0  # no spread at all


def test_contrastive_diagnostics_names():
    z1, z2 = torch.randn(32, 8), torch.randn(32, 8)
    out = contrastive_diagnostics(z1, z2, rep=torch.randn(32, 20))
    assert set(out) == {"pos_top1", "alignment", "uniformity", "z_eff_rank", "z_std",
                        "rep_eff_rank"}
    assert all(math.isfinite(v) for v in out.values())


def test_a_run_whose_loss_sits_at_the_collapse_value_is_tagged(tmp_path, capsys):
    from clrdist import tracking
    from clrdist.train.loop import flag_collapse

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = tracking.start_run(uri, "diag", {"a": 1})
    run = tracking.Run(uri, run_id)
    loss_fn, n = NTXentLoss(), 256
    flag_collapse(loss_fn, collapse_value(n) * 1.01, n, run, warm=False)  # in warm-up
    assert "clrdist.collapse" not in tracking.get_run(uri, run_id)["tags"]
    flag_collapse(loss_fn, collapse_value(n) * 1.01, n, run, warm=True)
    tags = tracking.get_run(uri, run_id)["tags"]
    assert tags["clrdist.collapse"] == "true"
    assert float(tags["clrdist.collapse_reference"]) == pytest.approx(math.log(511), abs=1e-4)
    assert "collapsed projection" in capsys.readouterr().out
    flag_collapse(loss_fn, 0.5 * collapse_value(n), n, run, warm=True)  # it learns
    assert tracking.get_run(uri, run_id)["tags"]["clrdist.collapse"] == "false"


def test_the_diagnostics_read_back_once_and_use_at_most_max_rows():
    from clrdist.diagnostics import global_diagnostics
    from clrdist.syncs import count_syncs

    g = torch.Generator().manual_seed(0)
    z1, z2, rep = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g), torch.randn(64, 5, generator=g)
    with count_syncs() as c:
        out = global_diagnostics([z1, z2], rep)
    assert c.count <= 1, c.ops  # one read of all values together
    assert out == pytest.approx(contrastive_diagnostics(z1, z2, rep))
    capped = global_diagnostics([z1, z2], rep, max_rows=16)
    assert capped == pytest.approx(contrastive_diagnostics(z1[:16], z2[:16], rep[:16]))
    assert capped["uniformity"] != pytest.approx(out["uniformity"], rel=1e-3)  # not the same rows


@pytest.mark.slow
def test_the_cost_bench_writes_its_rows(tmp_path):
    from bench.diagnostics_cost import main

    out = tmp_path / "cost.json"
    numbers = main(["--batch", "8", "--constituents", "12", "--repeats", "1", "--out", str(out)])
    step, diag = numbers["rows"]
    assert step["ms"] > 0 and diag["ms"] > 0 and "output 512" in diag["size"]
    # the share comes from the unrounded times: recomputed from the rounded ones (step to 0.1 ms,
    # diagnostics to 0.01 ms, share to 0.001%) it can only lie within their rounding
    lo = 100 * (diag["ms"] - 0.005) / (10 * (step["ms"] + 0.05)) - 0.0005
    hi = 100 * (diag["ms"] + 0.005) / (10 * (step["ms"] - 0.05)) + 0.0005
    assert lo <= diag["share_of_steps_pct"] <= hi
    assert {"command", "machine", "date", "rows"} <= set(json.loads(out.read_text()))
