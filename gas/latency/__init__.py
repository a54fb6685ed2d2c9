"""Inference latency: measuring it on this machine, and predicting it for a genome before training.

    from gas.latency import LatencyModel, LatencySettings, measure
    settings = LatencySettings(device="cpu", threads=1)
    measure(genome, settings)                         # Measurement(median=..., spread=..., runs=20)
    model = LatencyModel.for_device(settings)         # cached per device fingerprint
    model.predict(genome)                             # seconds, in microseconds of compute
    measure(genome, settings, beside_reference=True)  # .ratio: its time in reference units

Modules: `device` (settings and the device fingerprint), `measure` (end-to-end timing), `reference` (the
network every timing of the model is taken beside), `parts` (a genome as the parts its network runs, as its
space declares them), `fit` (the regressions), `model` (the latency model).
"""

from gas.latency.device import LatencySettings, fingerprint
from gas.latency.fit import Calibration
from gas.latency.measure import DEFAULT_RUNS, DEFAULT_WARMUP, Measurement, measure, measure_many, measure_reference
from gas.latency.model import BuildPlan, LatencyModel, build_genomes, default_path
from gas.latency.parts import Part, decompose
from gas.latency.reference import REFERENCE_NAME, reference_network

__all__ = [
    "DEFAULT_RUNS",
    "DEFAULT_WARMUP",
    "REFERENCE_NAME",
    "BuildPlan",
    "Calibration",
    "LatencyModel",
    "LatencySettings",
    "Measurement",
    "Part",
    "build_genomes",
    "decompose",
    "default_path",
    "fingerprint",
    "measure",
    "measure_many",
    "measure_reference",
    "reference_network",
]
