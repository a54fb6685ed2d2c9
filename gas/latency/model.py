"""The latency model of one device: a genome's inference latency predicted in microseconds, before training.

How it predicts. A genome is split into the parts its network runs, as its space declares them
(`gas.latency.parts`: stem, blocks, head). Each part's time comes from its kind's regression on work
figures (multiply-adds, elements moved, attention problems), fitted to timings of real part modules; their
sum then passes through a per-space calibration line fitted to end-to-end measurements of whole networks.
No network is built to predict.

Its unit. Every timing the model takes is taken in turns with the reference network
(`gas.latency.reference`) and kept as a ratio to the reference's median in the same turns: the model's
figures are in reference units, which the machine's drift moves far less than seconds. A prediction in
reference units becomes seconds at the reference's latest measurement (`reference_seconds`), which every
timing the model takes or is given (`observe`) renews, and which a search measures afresh when it starts.

How it is built. Lazily, per space, the first time a genome of that space is predicted: the parts of a
seeded sample of random genomes of the space are timed on this device (the table), the kinds' weights
fitted, and a few of those genomes measured end to end for the calibration. The table, the observations
and the build record are kept in one JSON file per device fingerprint (`gas.latency.device`), so the next
run on the same machine starts with them; a file made on another machine is refused.

>>> from gas.latency import LatencyModel, LatencySettings
>>> from gas.space import load_genome
>>> genome = load_genome("genome.json")
>>> model = LatencyModel.for_device(LatencySettings(threads=1))     # loads the cache or starts empty
>>> seconds = model.predict(genome)                                  # builds the genome's space's share first
>>> model.observe(genome, 0.061)                                     # a new end-to-end figure recalibrates
>>> model.save()                                                     # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gas.errors import GasError
from gas.genome import Genome
from gas.latency import parts as partlib
from gas.latency.device import LatencySettings, difference, fingerprint, fingerprint_id
from gas.latency.fit import Calibration, fit_calibration, fit_weights
from gas.latency.measure import DEFAULT_RUNS, DEFAULT_WARMUP, Measurement, measure_many, measure_reference, time_modules
from gas.latency.parts import Part, PartKind, decompose, family
from gas.latency.reference import REFERENCE_NAME
from gas.space import draw_genomes, get_space, load_genome
from gas.units import compact_count

#: Version of the cache file's layout and of how the modules it times run; bump it when either changes, and
#: files of the old version are rebuilt instead of read. (A part kind whose key changes meaning takes a new
#: name instead: see `PartKind.name`.) 2: the attention runs scaled_dot_product_attention's fused kernels,
#: so version 1's timings are not today's. 3: figures in reference units, and the reference's latest seconds.
FORMAT = 3
#: Version 2 files are read too: their figures are seconds (see `LatencyModel.reference_seconds`).
SECONDS_FORMAT = 2

#: Random draws per genome a build may take to find its genomes within `BuildPlan.max_flops`.
DRAWS_PER_GENOME = 2000


@dataclass(frozen=True)
class BuildPlan:
    """How much a space's share of the latency model measures when it is built.

    `genomes` random genomes of the space (drawn with `seed`, within `max_flops` at `resolution` if given)
    have every part timed with `part_runs` runs; the first `calibrate` of them are also measured end to end
    with `runs` runs each. About a minute per space on one CPU thread.

    Why these sizes: on a design check with one thread's CPU time (immune to other jobs on the machine),
    regressions fitted on 24 genomes' parts priced the parts of 20 unseen genomes within a median 6-9%,
    and calibrating on 16 genomes instead of 8 halved the median end-to-end error (5% to 2.4-2.8%).
    Each calibration genome is one point of a line fitted through all of them, so 10 runs each buy more
    than 20 runs on half as many.
    """

    genomes: int = 24
    calibrate: int = 16
    part_runs: int = 7
    runs: int = 10
    warmup: int = DEFAULT_WARMUP
    seed: int = 0
    max_flops: int | None = None
    resolution: int = 224

    def __post_init__(self) -> None:
        if self.genomes < 1 or not 0 <= self.calibrate <= self.genomes:
            raise GasError(f"a build plan needs genomes ≥ 1 and 0 ≤ calibrate ≤ genomes, got {self}")
        if self.part_runs < 1 or self.runs < 1 or self.warmup < 0:
            raise GasError(f"a build plan needs runs ≥ 1 and warm-up runs ≥ 0, got {self}")


def build_genomes(space: str, plan: BuildPlan) -> list[Genome]:
    """The random genomes a space's share of the model is built from: `plan.genomes` of them, drawn with
    `plan.seed` at `plan.resolution`, each within `plan.max_flops` if it is set."""
    limit, searched = plan.max_flops, get_space(space)
    drawn = draw_genomes(
        searched,
        plan.genomes,
        plan.seed,
        plan.resolution,
        lambda cost: limit is None or cost.flops <= limit,
        plan.genomes * DRAWS_PER_GENOME,
    )
    if len(drawn) < plan.genomes:
        within = f"{compact_count(limit)} FLOPs" if limit is not None else "no limit"
        raise GasError(
            f"found only {len(drawn)} of {plan.genomes} genomes within {within} in {plan.genomes * DRAWS_PER_GENOME} "
            f"draws from the {searched.name} space at {plan.resolution}px; raise the budget"
        )
    return [genome for genome, _ in drawn]


def default_path(settings: LatencySettings, folder: str | Path | None = None) -> Path:
    """Where the model of this device is cached: FOLDER/<fingerprint id>.json, FOLDER by default
    $GAS_CACHE_DIR/latency (else ~/.cache/gas/latency), as the dataset cache does."""
    if folder is None:
        from gas.evaluate.datasets import cache_dir

        folder = cache_dir() / "latency"
    return Path(folder) / f"{fingerprint_id(fingerprint(settings))}.json"


class LatencyModel:
    """Predicts a genome's inference latency on one device; see the module docstring for how.

    Build one with `LatencyModel.for_device(settings)`; `predict(genome)` gives seconds, `observe(genome,
    measurement)` adds an end-to-end figure and refits the calibration, `save()` keeps it for the next run.
    """

    def __init__(self, settings: LatencySettings, plan: BuildPlan | None = None, path: Path | None = None) -> None:
        self.settings = settings
        self.fingerprint = fingerprint(settings)
        self.plan = plan or BuildPlan()
        self.path = path
        #: kind name → part key → one call's time (a batch of `settings.batch`), in the model's unit.
        self.table: dict[str, dict[partlib.Key, float]] = {}
        #: space family → end-to-end figures: (genome, measured time in the model's unit).
        self.observations: dict[str, list[tuple[Genome, float]]] = {}
        #: The reference network's latest median, in seconds: the size of the model's unit. None while the
        #: figures are in seconds: a model saved before figures were kept in reference units (cache format
        #: 2) had no reference, so its figures are read as seconds, and they are turned into reference units
        #: at the first measurement of the reference (as if the machine ran then as fast as at the build,
        #: which is what such a model assumed of every prediction).
        self.reference_seconds: float | None = None
        #: space family → how its share was built (genomes, parts timed, seconds it took).
        self.builds: dict[str, dict[str, Any]] = {}
        self._weights: dict[str, tuple[float, ...]] = {}
        self._calibrations: dict[str, Calibration] = {}

    # ---- making, saving, loading ---------------------------------------------------------------

    @classmethod
    def for_device(
        cls, settings: LatencySettings | None = None, plan: BuildPlan | None = None, cache: str | Path | None = None
    ) -> LatencyModel:
        """The model for these settings on this machine: from the cache if there is one, else empty (it
        builds itself per space on first need). `cache` is the folder (default: see `default_path`)."""
        settings = settings or LatencySettings()
        path = default_path(settings, cache)
        if path.exists():
            try:
                return cls.load(path, settings, plan)
            except _StaleFile:
                pass  # made by another version of gas: start again and overwrite it on save
        return cls(settings, plan, path)

    @classmethod
    def load(cls, path: str | Path, settings: LatencySettings, plan: BuildPlan | None = None) -> LatencyModel:
        """The model saved at `path`; GasError (one line) if it was made for another device or settings."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as error:
            raise GasError(f"cannot read latency model {path}: {error.strerror}") from None
        except json.JSONDecodeError as error:
            raise GasError(f"{path} is not a latency model: {error.msg} at line {error.lineno}") from None
        if not isinstance(data, dict) or "fingerprint" not in data:
            raise GasError(f"{path} is not a latency model (no fingerprint)")
        if data.get("format") not in (FORMAT, SECONDS_FORMAT):
            raise _StaleFile(f"{path} holds a latency model of format {data.get('format')}, gas reads {FORMAT}")
        reference = data.get("reference") or {}
        if data["format"] == FORMAT and reference.get("name") != REFERENCE_NAME:
            raise _StaleFile(f"{path} is in units of the reference {reference.get('name')!r}, not {REFERENCE_NAME!r}")
        model = cls(settings, plan, path)
        mismatch = difference(model.fingerprint, data["fingerprint"])
        if mismatch is not None:
            raise GasError(f"latency model {path} was made for another device or settings: {mismatch}")
        unit = "units" if data["format"] == FORMAT else "seconds"
        try:
            for kind, rows in data["table"].items():
                model.table[kind] = {tuple(key): float(figure) for key, figure in rows}
            for space_family, rows in data["observations"].items():
                model.observations[space_family] = list(_readable_observations(rows, unit))
            model.builds = dict(data["builds"])
            seconds = reference.get("seconds")
            model.reference_seconds = None if seconds is None else float(seconds)
        except (KeyError, TypeError, ValueError) as error:
            raise GasError(f"{path} is not a readable latency model: {type(error).__name__}: {error}") from None
        return model

    def to_dict(self) -> dict[str, Any]:
        """The model as JSON data; its figures in reference units once the reference has been measured."""
        return {
            "format": FORMAT if self.reference_seconds is not None else SECONDS_FORMAT,
            "fingerprint": self.fingerprint,
            "reference": {"name": REFERENCE_NAME, "seconds": self.reference_seconds},
            "table": {kind: [[list(key), figure] for key, figure in rows.items()] for kind, rows in self.table.items()},
            "observations": {
                space_family: [{"genome": genome.to_dict(), self._unit_name: figure} for genome, figure in rows]
                for space_family, rows in self.observations.items()
            },
            "builds": self.builds,
        }

    @property
    def _unit_name(self) -> str:
        return "units" if self.reference_seconds is not None else "seconds"

    def save(self, path: str | Path | None = None) -> Path:
        """Write the model (atomically) to `path`, else where it was loaded from or will be cached."""
        target = Path(path) if path is not None else self.path or default_path(self.settings)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(self.to_dict()) + "\n")
            partial.replace(target)  # a reader never sees half a file
        except OSError as error:
            raise GasError(f"cannot write latency model {target}: {error.strerror}") from None
        self.path = target
        return target

    # ---- measuring ------------------------------------------------------------------------------

    @property
    def seconds_per_unit(self) -> float:
        """Seconds per unit of the model's figures: the reference's latest median (1 while in seconds)."""
        return self.reference_seconds if self.reference_seconds is not None else 1.0

    def note_reference(self, seconds: float) -> None:
        """Take `seconds` as the reference's latest median: predictions scale with it from now on.

        The first one a model in seconds sees turns its figures into reference units at that figure.
        """
        if not seconds > 0:
            raise GasError(f"the reference's latency must be positive seconds, got {seconds!r}")
        if self.reference_seconds is None:
            for rows in self.table.values():
                for key in rows:
                    rows[key] /= seconds
            for space_family, rows in self.observations.items():
                self.observations[space_family] = [(genome, figure / seconds) for genome, figure in rows]
            self._weights.clear()
            self._calibrations.clear()
        self.reference_seconds = seconds

    def measure_reference(self, runs: int = DEFAULT_RUNS) -> Measurement:
        """Measure the reference network now and take it as the latest; returns the measurement."""
        measured = measure_reference(self.settings, runs, self.plan.warmup)
        self.note_reference(measured.median)
        return measured

    def time_parts(self, parts: Iterable[Part], runs: int | None = None) -> int:
        """Time every part not yet in the table (real modules, in turns with the reference); return how many."""
        missing = {part: None for part in parts if part.key not in self.table.get(part.kind.name, {})}
        if not missing:
            return 0
        modules = {str(index): partlib.build(part) for index, part in enumerate(missing)}
        timed = time_modules(modules, self.settings, runs or self.plan.part_runs, self.plan.warmup, True)
        self.note_reference(timed["0"].reference)
        for index, part in enumerate(missing):
            self.table.setdefault(part.kind.name, {})[part.key] = timed[str(index)].ratio
        self._weights.clear()
        self._calibrations.clear()
        return len(missing)

    def build(self, space: str) -> dict[str, Any]:
        """Build (or extend) this model's share for `space` by the plan; returns the build record.

        Times the parts of `plan.genomes` random genomes of the space, then measures `plan.calibrate` of
        them end to end. Takes about a minute on one CPU thread with the default plan.
        """
        plan = self.plan
        started = time.perf_counter()
        genomes = build_genomes(space, plan)
        timed = sum(self.time_parts(decompose(genome)) for genome in genomes)
        self.calibrate(genomes[: plan.calibrate])
        record = {"genomes": len(genomes), "parts_timed": timed, "seconds": time.perf_counter() - started}
        record["reference_s"] = self.reference_seconds
        record["plan"] = asdict(plan)
        self.builds[partlib.family(genomes[0])] = record
        return record

    def calibrate(self, genomes: Sequence[Genome], runs: int | None = None) -> dict[int, Measurement]:
        """Measure `genomes` end to end (in turns, with the reference) and observe each; returns the
        measurements by index."""
        if not genomes:
            return {}
        measured = measure_many(
            {str(index): genome for index, genome in enumerate(genomes)},
            self.settings,
            runs or self.plan.runs,
            self.plan.warmup,
            beside_reference=True,
        )
        for index, genome in enumerate(genomes):
            self.observe(genome, measured[str(index)])
        return {index: measured[str(index)] for index in range(len(genomes))}

    def observe(self, genome: Genome, measured: float | Measurement) -> None:
        """Add an end-to-end figure for `genome`; refits the calibration of its space at the next prediction.

        A `Measurement` taken beside the reference is kept as its ratio, and its reference becomes the
        latest; seconds alone (a float, or a measurement without the reference) are taken at the
        reference's latest measurement.
        """
        seconds = measured.median if isinstance(measured, Measurement) else float(measured)
        if not seconds > 0:
            raise GasError(f"a measured latency must be positive seconds, got {seconds!r}")
        decompose(genome)  # refuses a space the model does not know before anything is recorded
        if isinstance(measured, Measurement) and measured.reference is not None:
            self.note_reference(measured.reference)
        self.observations.setdefault(family(genome), []).append((genome, seconds / self.seconds_per_unit))
        self._calibrations.pop(family(genome), None)

    # ---- predicting -----------------------------------------------------------------------------

    def is_built(self, space: str) -> bool:
        """Whether the share of `space` (a name, options allowed) exists, so predictions measure nothing."""
        return space.partition(":")[0] in self.builds

    def _kind_weights(self, kind: PartKind) -> tuple[float, ...]:
        weights = self._weights.get(kind.name)
        if weights is None:
            rows = self.table.get(kind.name, {})
            weights = fit_weights([kind.features(key) for key in rows], list(rows.values()))
            self._weights[kind.name] = weights
        return weights

    def part_units(self, part: Part) -> float:
        """Predicted time of one part in the model's unit, before calibration: its kind's regression on its
        work figures.

        Parts that are in the table are priced by the regression too: a table entry is one noisy timing,
        and a genome priced partly from timings and partly from the regression would sit off the
        calibration line, which was fitted on regression-priced sums.
        """
        weights = self._kind_weights(part.kind)
        return sum(weight * figure for weight, figure in zip(weights, partlib.features(part), strict=True))

    def calibration(self, space: str) -> Calibration:
        """The current calibration line of `space` (fitted on its observations)."""
        space_family = space.partition(":")[0]
        line = self._calibrations.get(space_family)
        if line is None:
            rows = self.observations.get(space_family, [])
            summed = [self._summed(decompose(genome)) for genome, _ in rows]
            line = fit_calibration(summed, [seconds for _, seconds in rows])
            self._calibrations[space_family] = line
        return line

    def predict(self, genome: Genome) -> float:
        """Predicted end-to-end latency of `genome` in seconds, at its resolution, on this device: its
        prediction in reference units at the reference's latest measurement.

        Builds the space's share first if it has none (timing parts on this machine, about a minute);
        after that a prediction takes microseconds and builds nothing.
        """
        return self.predict_units(genome) * self.seconds_per_unit

    def predict_units(self, genome: Genome) -> float:
        """Predicted end-to-end latency of `genome` in the model's unit (see `reference_seconds`)."""
        parts = self._parts(genome)
        return self.calibration(genome.space)(self._summed(parts))

    def breakdown(self, genome: Genome) -> list[tuple[Part, float]]:
        """Each part of `genome` with its predicted seconds, before calibration."""
        return [(part, self.part_units(part) * self.seconds_per_unit) for part in self._parts(genome)]

    def _summed(self, parts: Iterable[Part]) -> float:
        return sum(self.part_units(part) for part in parts)

    def _parts(self, genome: Genome) -> list[Part]:
        """`genome`'s parts, after building what predicting them needs (only the first time)."""
        parts = decompose(genome)
        if family(genome) not in self.builds:
            self.build(genome.space)
            if self.path is not None:
                self.save()
        unknown = [part for part in parts if not self.table.get(part.kind.name)]
        if unknown:
            # A kind no build genome had (a space option the sample missed): time this genome's now.
            self.time_parts(unknown)
        return parts


def _readable_observations(rows: Iterable[dict[str, Any]], unit: str) -> Iterable[tuple[Genome, float]]:
    """The saved observations (figures under the key `unit`) whose genomes the space still accepts; the cache
    outlives rule changes, and one calibration point less is better than a model that no longer loads."""
    for row in rows:
        try:
            genome = load_genome(row["genome"])
        except GasError:
            continue
        yield genome, float(row[unit])


class _StaleFile(GasError):
    """A cache file of another format version: rebuilt rather than read."""
