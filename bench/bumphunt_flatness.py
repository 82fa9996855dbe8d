"""Step 5 of bench.bumphunt: is a feature set's CWoLa selection flat in m_jj on background only?

One flatness p per hunt (clrdist.eval.bumphunt's per-window chi2 against a flat efficiency,
Bonferroni-combined over the windows, per efficiency and over all) moves a lot with the fold
assignment, and hunts of the same events are not independent of each other, so pooling them
and comparing with a handful of permuted hunts overstates any difference. The test here is a
permutation test, exact whatever the correlations:

- statistic: the median flatness p over ``FLATNESS_SEEDS`` hunt seeds (fold assignments);
- null: the same statistic with m_jj permuted over the events (``FLATNESS_PERMUTATIONS``
  permutations, each hunted with the same seeds): features and spectrum unchanged, any relation
  between them gone;
- p = (1 + number of permutations whose statistic is at most the observed) / (permutations + 1):
  uniform under "the selection does not depend on m_jj", at least 1 / (permutations + 1)
  (0.05 for 19), small when the observed selections are less flat than the shuffled ones.
"""

from __future__ import annotations

import numpy as np

FLATNESS_SEEDS = 3  # hunt seeds per flatness statistic
FLATNESS_PERMUTATIONS = 19  # m_jj permutations for its null distribution
CUTS = ("eps_0.1", "eps_0.01", "combined")
ALPHA = 0.05  # "not flat": some cut's permutation p at or below it


def flatness_run(task: dict) -> dict:
    """The flatness p-values of one feature set over the hunt seeds, with m_jj as given
    (``perm`` 0) or permuted over the events by the permutation ``perm`` (a worker process)."""
    from clrdist.eval.bumphunt import blind_scan

    mjj, x = task["mjj"], task["x"]
    inside = (mjj >= task["mjj_range"][0]) & (mjj < task["mjj_range"][1])
    mjj, x = mjj[inside], x[inside]
    if task["perm"]:
        mjj = mjj[np.random.default_rng([task["perm"], 0xF1A7]).permutation(len(mjj))]
    out = {"name": task["name"], "perm": task["perm"], **{c: [] for c in CUTS}}
    for seed in range(task["hunt_seeds"]):
        res = blind_scan(mjj, x, mjj_range=task["mjj_range"], sqrt_s=task["sqrt_s"],
                         n_bins=task["n_bins"], classifier="linear", k=task["k"], n_toys=0,
                         seed=seed, allow_mjj_correlated=True, guard=False)
        out["combined"].append(round(res.flatness_p, 4))
        for eps, p in res.flatness_p_by_eps.items():
            out[f"eps_{eps:g}"].append(round(p, 4))
    return out


def permutation_verdict(runs: list[dict]) -> list[dict]:
    """One row per feature set: per cut the observed statistic (median flatness p over the hunt
    seeds), the permutations' median and smallest statistic, and the permutation p-value; the
    observed per-hunt p-values for the record; ``flat``: no cut's p at or below ``ALPHA``. ``runs``: :func:`flatness_run` outputs, perm 0
    the observed, every other one a permutation."""
    rows = []
    for name in dict.fromkeys(r["name"] for r in runs):
        obs = [r for r in runs if r["name"] == name and r["perm"] == 0]
        null = [r for r in runs if r["name"] == name and r["perm"] != 0]
        if len(obs) != 1 or not null:
            raise ValueError(f"flatness of {name!r}: need one observed run and at least one "
                             f"permutation; got {len(obs)} and {len(null)}")
        row = {"name": name, "n_permutations": len(null), "hunt_seeds": len(obs[0]["combined"])}
        for cut in CUTS:
            stat = float(np.median(obs[0][cut]))
            null_stats = np.array([np.median(r[cut]) for r in null])
            row[f"{cut}_hunts"] = obs[0][cut]
            row[f"{cut}_median"] = round(stat, 4)
            row[f"{cut}_null_median"] = round(float(np.median(null_stats)), 4)
            row[f"{cut}_null_min"] = round(float(null_stats.min()), 4)
            row[f"{cut}_perm_p"] = round(float((1 + np.sum(null_stats <= stat)) / (len(null) + 1)), 4)
        row["min_perm_p"] = min(row[f"{c}_perm_p"] for c in CUTS)
        row["flat"] = bool(row["min_perm_p"] > ALPHA)
        rows.append(row)
    return rows
