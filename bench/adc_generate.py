"""Generation budget of the ADC2021-like events: per sub-process, events per CPU-second per
core and the trigger (filter) efficiency; writes docs/results/adc_generate.json.

    python -m bench.adc_generate [--events 200] [--seed 0] [--detector simple]
                                 [--out docs/results/adc_generate.json]

Each sub-process runs one shard of ``--events`` triggered events in this process (one core, no
Ray); rates are per CPU second of this process (``time.process_time``), so a machine shared
with other jobs slows the wall clock but not the rate. Per row: ``generated_per_cpu_s``
(Pythia events, triggered or not), ``accepted_per_cpu_s`` (triggered events in the store),
``trigger_efficiency`` (accepted / generated, with its binomial standard error),
``pythia_share`` (the part of the time in Pythia's ``next()``), and
``cpu_min_per_1k`` (CPU minutes per 1000 stored events). The background row adds the mix:
CPU minutes per 1000 background events at the published shares.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import write_results  # noqa: E402

SUBPROCESSES = ["adc_w", "adc_qcd", "adc_z", "adc_ttbar", "ato4l", "leptoquark", "htautau",
                "hchtaunu"]


def measure(sub: str, n: int, seed: int, detector: str | None) -> dict:
    from clrdist.data.generation import GenerationConfig, make_plan
    from clrdist.data.generation.events import generate_shard, make_pythia
    from clrdist.data.generation.processes import ADC_BACKGROUND

    proc = "adc_background" if sub in ADC_BACKGROUND else sub
    plan = make_plan(GenerationConfig(processes=[proc], n_jets=1000, seed=seed,
                                      detector=detector, shard_size=100_000))
    spec = replace(next(s for s in plan.shards if s.pythia_process == sub), n=n)
    c0 = time.process_time()
    make_pythia(spec)  # Pythia's initialisation (paid once per shard): timed on its own
    init_cpu = time.process_time() - c0
    c0 = time.process_time()
    res = generate_shard(spec)
    cpu_events = max(time.process_time() - c0 - init_cpu, 1e-9)
    st = res["stats"]
    eff = n / st["n_events"]
    return {
        "name": sub,
        "events": n,
        "generated": st["n_events"],
        "trigger_efficiency": round(eff, 5),
        "trigger_efficiency_err": round(math.sqrt(eff * (1 - eff) / st["n_events"]), 5),
        "generated_per_cpu_s": round(st["n_events"] / cpu_events, 2),
        "accepted_per_cpu_s": round(n / cpu_events, 3),
        "cpu_min_per_1k": round(1000 / (n / cpu_events) / 60, 2),
        "pythia_share": round(st["t_next"] / max(st["t_total"] - st["t_init"], 1e-9), 3),
        "init_cpu_s": round(init_cpu, 2),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=200, help="triggered events per sub-process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detector", default=None, help="e.g. simple (default: particle level)")
    p.add_argument("--only", default=None, help="comma-separated sub-processes (default: all)")
    p.add_argument("--out", default="docs/results/adc_generate.json")
    a = p.parse_args(argv)
    from clrdist.data.generation.processes import ADC_BACKGROUND

    subs = a.only.split(",") if a.only else SUBPROCESSES
    rows = []
    for sub in subs:
        n = max(10, a.events // 10) if sub == "adc_ttbar" else a.events
        rows.append(measure(sub, n, a.seed, a.detector))
        print(rows[-1], flush=True)
    by = {r["name"]: r for r in rows}
    total = sum(ADC_BACKGROUND.values())
    if all(s in by for s in ADC_BACKGROUND):
        mix = sum(frac / total * by[s]["cpu_min_per_1k"] for s, frac in ADC_BACKGROUND.items())
        rows.append({"name": "adc_background (mix)", "cpu_min_per_1k": round(mix, 2)})
    out = {"detector": a.detector or "particle level", "load_avg_1m": round(os.getloadavg()[0], 2),
           "rows": rows}
    write_results(a.out, out, argv)
    return out


if __name__ == "__main__":
    main()
