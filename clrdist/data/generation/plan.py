"""What to generate: the typed request (:class:`GenerationConfig`), its shards and their seeds.

The work is cut into shards of ``shard_size`` accepted jets (events for dijet stores); shard k of
process p gets its own seeds from ``SeedSequence([seed, hash(p), k])`` (:func:`shard_seeds`:
not from p's position in the command), so the same seed gives the same store whatever the number
of workers. Every shard's seeds and settings hash are recorded in the provenance
(:func:`shard_records`), which ``clrdist.eval.held_out.check_held_out`` compares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from clrdist.data.detector import DETECTORS
from clrdist.data.generation.processes import (
    ADC_BACKGROUND,
    ADC_OBJECTS,
    ADC_PROCESS_IDS,
    ADC_PROCESSES,
    ADC_TRIGGER_PT,
    PROCESSES,
    adc_subprocesses,
    default_ecm,
    default_jet,
    process_settings,
)
from clrdist.data.jets import JetDef
from clrdist.errors import ClrdistError

# the provenance's "generator": the identity of generated stores in the held-out check, kept
# from when generation was one module so that older stores still compare
GENERATOR = "clrdist.data.generate"
_SEED_MAX = 900_000_000  # Pythia's Random:seed range is [1, 900_000_000]


class GenerationError(ClrdistError):
    """A generation request that cannot be satisfied (bad process list, settings, selection).

    ``problems`` holds ``(field, text)`` for a request that failed :class:`GenerationConfig`'s
    validation, the message being their lines ``field: text``; a front end may name its own
    options instead (the CLI says ``--jets`` where the config says ``n_jets``).
    """

    def __init__(self, message: str = "", problems: Sequence[tuple[str, str]] = ()) -> None:
        self.problems = list(problems)
        super().__init__(message or "\n".join(f"{f}: {t}" for f, t in self.problems))


class GenerationConfig(BaseModel):
    """Everything that decides a generated store's samples: same config, same store.

    Invalid values raise :class:`GenerationError` naming the field (unknown keys included).
    How the work runs (workers, chunk size, progress) is not part of it: see ``generate_store``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    processes: list[str]  # names from PROCESSES: top, w, qcd, svj (jet stores) or resonance, qcd (dijet)
    n_jets: int = Field(gt=0)  # accepted jets per process (dijet stores: accepted events per process)
    seed: int = Field(0, ge=0, lt=2**63)  # master seed: shard k of process p is seeded by (seed, p, k)
    jet: JetDef | None = None  # jet definition and selection; None: default_jet(processes)
    n_particles: int = Field(50, gt=0)  # constituents kept per jet, hardest first
    detector: str | None = None  # None: particle level; a name in clrdist.data.detector.DETECTORS
    resonance_masses: tuple[float, float, float] = (3500.0, 500.0, 100.0)  # resonance: W', X, Y in GeV
    r_inv: float = Field(0.75, ge=0, le=1)  # svj: share of dark hadrons that decay invisibly
    svj_mass: float = Field(2000.0, gt=0)  # svj: Z' mass in GeV
    ecm: float | None = Field(None, gt=0)  # sqrt(s) in GeV; None: default_ecm(kind)
    mpi: bool = False  # multiparton interactions (off, like the top-tagging reference data)
    shard_size: int = Field(1000, gt=0)  # samples per Ray task: part of the seed contract
    # extra Pythia settings for every process, or a mapping process -> settings
    pythia_settings: list[str] | dict[str, list[str]] = Field(default_factory=list)
    match_truth: bool = True  # top / w / svj: keep only jets containing the truth top / W / dark quark

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as e:
            raise GenerationError(problems=[_problem(err) for err in e.errors()]) from None

    @field_validator("processes")
    @classmethod
    def _one_kind_of_known_processes(cls, procs: list[str]) -> list[str]:
        known = ", ".join(PROCESSES)
        if not procs:
            raise ValueError(f"no process given (choose from: {known})")
        unknown = [p for p in procs if p not in PROCESSES]
        if unknown:
            raise ValueError(f"unknown process {unknown[0]!r} (known: {known})")
        if len(set(procs)) != len(procs):
            raise ValueError(f"process listed twice: {' '.join(procs)}")
        if not set.intersection(*(set(PROCESSES[p]) for p in procs)):
            by_kind = {name: [p for p in procs if PROCESSES[p] == (k,)]
                       for k, name in (("jet", "jet"), ("dijet", "dijet-event"),
                                       ("event", "ADC2021 event"))}
            mixed = " and ".join(f"{k} processes ({', '.join(v)})" for k, v in by_kind.items() if v)
            raise ValueError(f"cannot mix {mixed} in one store; generate them into separate stores")
        return procs

    @field_validator("detector")
    @classmethod
    def _known_detector(cls, name: str | None) -> str | None:
        if name is not None and name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r} (known: {', '.join(DETECTORS)})")
        return name

    @field_validator("resonance_masses")
    @classmethod
    def _masses_allow_the_decay(cls, masses: tuple[float, float, float],
                                info: ValidationInfo) -> tuple[float, float, float]:
        if not all(m > 0 for m in masses):
            raise ValueError(f"needs three positive masses M, mX, mY in GeV, got {masses}")
        m_w, m_x, m_y = masses
        if "resonance" in info.data.get("processes", ()) and m_x + m_y >= m_w:
            raise ValueError(f"mX + mY ({m_x:g} + {m_y:g}) must be below M ({m_w:g})")
        return masses

    @property
    def kind(self) -> str:
        """The store kind: "jet" (top, w, qcd, svj), "dijet" (resonance, qcd) or "event"
        (the ADC2021 processes)."""
        kinds = set.intersection(*(set(PROCESSES[p]) for p in self.processes))
        return "jet" if "jet" in kinds else ("event" if "event" in kinds else "dijet")

    @property
    def n_slots(self) -> int:
        """Particle slots per sample: n_particles per jet (twice for dijet events); event
        stores have the ADC2021 layout's 19 (MET, 4 e, 4 mu, 10 jets)."""
        return {"jet": self.n_particles, "dijet": 2 * self.n_particles, "event": 19}[self.kind]


def _problem(err: dict) -> tuple[str, str]:
    """One pydantic error as (field, text)."""
    name = str(err["loc"][0]) if err["loc"] else "config"
    if err["type"] == "extra_forbidden":
        return name, "unknown key"
    text = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] != "value_error" and not isinstance(err.get("input"), dict | list | tuple):
        text += f" (got {err.get('input')!r})"
    return name, text


@dataclass(frozen=True)
class ShardSpec:
    """Everything one Ray task needs to generate one shard (picklable, no Pythia objects)."""

    process: str
    kind: str  # "jet" or "dijet"
    n: int  # accepted jets (jet stores) or events (dijet stores) in this shard
    seed: int  # Pythia Random:seed
    detector_seed: int
    jet: JetDef
    n_particles: int
    settings: tuple[str, ...]  # Pythia settings, complete
    match_truth: bool
    want_invisible: bool  # compute met / inv_frac (stores containing svj)
    detector: str | None = None
    max_events: int = 0  # 0: automatic (1000 events per requested jet + 10000)
    subprocess: str = ""  # event stores: the Pythia process behind ``process`` (adc_w, ...)

    @property
    def pythia_process(self) -> str:
        """The process whose Pythia settings and seeds this shard has (its sub-process, if any)."""
        return self.subprocess or self.process


@dataclass
class Plan:
    """A config's shards in writing order, with what the config left to defaults resolved."""

    kind: str
    jet: JetDef
    ecm: float  # GeV
    labels: dict[str, int]  # process -> label: qcd 0, the others 1, 2, ... in the order given
    shards: list[ShardSpec] = field(default_factory=list)


def make_plan(config: GenerationConfig) -> Plan:
    """The shards of ``config``: per process, ceil(n_jets / shard_size) shards, seeded by
    :func:`shard_seeds`."""
    procs = config.processes
    kind = config.kind
    jet = config.jet or default_jet(procs)
    ecm = default_ecm(kind) if config.ecm is None else config.ecm
    if isinstance(config.pythia_settings, Mapping):
        extra = {p: tuple(config.pythia_settings.get(p, ())) for p in procs}
    else:
        extra = {p: tuple(config.pythia_settings) for p in procs}

    labels: dict[str, int] = {}
    if kind == "event":  # the ADC2021 converter's labels, whatever the order given
        labels = {p: ADC_PROCESSES[p] for p in procs}
    if "qcd" in procs:
        labels["qcd"] = 0
    for p in procs:
        if p not in labels:
            labels[p] = len([q for q in labels if q != "qcd"]) + 1
    plan = Plan(kind=kind, jet=jet, labels=labels, ecm=ecm)
    shard_size = config.shard_size
    for proc in procs:
        # event stores: the background is a mix of sub-processes, each with its own shards
        parts = adc_subprocesses(proc, config.n_jets) if kind == "event" else [(proc, config.n_jets)]
        for sub, n_sub in parts:
            settings = tuple(
                process_settings(
                    sub, kind, jet, resonance_masses=config.resonance_masses, r_inv=config.r_inv,
                    svj_mass=config.svj_mass, ecm=ecm, mpi=config.mpi,
                )
            ) + extra[proc]
            for k in range(-(-n_sub // shard_size)):
                pythia_seed, det_seed = shard_seeds(config.seed, sub, k)
                plan.shards.append(
                    ShardSpec(
                        process=proc,
                        kind=kind,
                        n=min(shard_size, n_sub - k * shard_size),
                        seed=pythia_seed,
                        detector_seed=det_seed,
                        jet=jet,
                        n_particles=config.n_particles,
                        settings=settings,
                        match_truth=config.match_truth and proc in ("top", "w", "svj"),
                        want_invisible="svj" in procs,
                        detector=config.detector,
                        subprocess=sub if sub != proc else "",
                    )
                )
    return plan


def shard_seeds(seed: int, process: str, index: int) -> tuple[int, int]:
    """(Pythia Random:seed, detector seed) of shard ``index`` of ``process``: a function of
    (master seed, process name, shard index) only, never of the process's position in the
    command, so `generate qcd --seed 0` and `generate qcd svj --seed 0` give their QCD shards the
    same seeds (and the held-out check can see that they may share events)."""
    key = int.from_bytes(hashlib.sha256(process.encode()).digest()[:8], "little")
    ss = np.random.SeedSequence([int(seed), key, int(index)])
    pythia_seed, det_seed = ss.generate_state(2, dtype=np.uint64)
    return int(pythia_seed % _SEED_MAX) + 1, int(det_seed)


def settings_sha256(settings: Sequence[str]) -> str:
    """Content hash of a complete Pythia settings list (without the seed)."""
    return hashlib.sha256("\n".join(settings).encode()).hexdigest()


def shard_records(shards: Sequence[ShardSpec]) -> list[dict]:
    """The shards for the store's provenance: process, index within the process, size, seeds
    and settings hash. Shards with the same process, settings and Pythia seed make the same
    events."""
    index: dict[str, int] = {}
    out = []
    for s in shards:
        k = index[s.pythia_process] = index.get(s.pythia_process, -1) + 1
        out.append({"process": s.pythia_process, "index": k, "n": s.n, "pythia_seed": s.seed,
                    "detector_seed": s.detector_seed, "settings_sha256": settings_sha256(s.settings)})
    return out


def provenance(config: GenerationConfig, plan: Plan) -> dict:
    """The store's provenance: the config resolved, Pythia's version, every setting per process
    and every shard's record."""
    prov = {
        "generator": GENERATOR,
        "pythia": _pythia_version(),
        "processes": list(config.processes),
        "n_per_process": config.n_jets,
        "seed": config.seed,
        "shard_size": config.shard_size,
        "jet": {"algorithm": "anti-kt", **plan.jet.to_dict()},
        "n_particles_per_jet": config.n_particles,
        "detector": None if config.detector is None else DETECTORS[config.detector]().to_dict(),
        "match_truth": config.match_truth,
        "ecm": plan.ecm,  # GeV; the bump hunt's sqrt(s)
        "mpi": config.mpi,
        "settings": {s.pythia_process: list(s.settings) for s in plan.shards},
        # every shard's seeds and settings hash (clrdist.eval.held_out.check_held_out compares them)
        "shards": shard_records(plan.shards),
    }
    if "resonance" in plan.labels:
        prov["resonance_masses"] = list(config.resonance_masses)
    if plan.kind == "event":
        prov["events"] = {"objects": ADC_OBJECTS, "trigger_lepton_pt": ADC_TRIGGER_PT,
                          "background_shares": ADC_BACKGROUND, "process_ids": ADC_PROCESS_IDS,
                          "n_per_subprocess": {s: sum(x.n for x in plan.shards
                                                      if x.pythia_process == s)
                                               for s in dict.fromkeys(x.pythia_process
                                                                      for x in plan.shards)}}
    if "svj" in plan.labels:
        prov["r_inv"] = config.r_inv
        prov["svj_zprime_mass"] = config.svj_mass
    return prov


def _pythia_version() -> str | None:
    """pythia8mc's installed version, read from its metadata (the package is not imported)."""
    try:
        return version("pythia8mc")
    except PackageNotFoundError:  # pragma: no cover - not installed
        return None
