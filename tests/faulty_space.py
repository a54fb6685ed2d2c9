"""A plug-in search space whose models fail on purpose: trial 0 trains, trial 1 raises, trial 2 diverges.

The search loads it by module path (`--space tests.faulty_space`) exactly as it loads a user's own
space, and its workers import it the same way; only the models it builds misbehave. With the option
`fault=raise` (`--space tests.faulty_space:fault=raise`) every model raises.

With `fault=cuda` the faults are the ones a GPU's CUDA context does not survive, raised as PyTorch words
them: trial 0's model meets one the first time it is built anywhere, trial 1's every time, and trial 2's
trains. Each such fault appends "KERNEL PID" (the genome's stem kernel, the process) to the file
$GAS_TEST_FAULTS, which is how "the first time anywhere" is known across worker processes, and how a test
sees which processes met a fault.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import optuna
import torch
from torch import nn

from search_spaces.turbovit import TurboViTGenome, TurboViTSpace

STEM_KERNEL_BY_FAULT = {"none": 7, "raise": 3, "nan": 5}
# fault=cuda: trial 0 breaks its worker once, trial 1 every time, trial 2 trains.
CUDA_FAULT_ONCE, CUDA_FAULT_ALWAYS, CUDA_FAULT_NONE = 5, 3, 7
STICKY_CUDA_ERROR = (
    "CUDA error: an illegal memory access was encountered\n"
    "CUDA kernel errors might be asynchronously reported at some other API call, so the stacktrace below might "
    "be incorrect."
)


def cuda_faults() -> list[tuple[int, int]]:
    """(stem kernel, process id) of every CUDA fault raised so far, in order."""
    path = Path(os.environ["GAS_TEST_FAULTS"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(kernel), int(pid)) for kernel, pid in (line.split() for line in lines)]


class FaultySpace(TurboViTSpace):
    def __init__(self, fault: str | None = None) -> None:
        super().__init__()
        self.fault = fault
        self.name = "tests.faulty_space" + (f":fault={fault}" if fault else "")

    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> TurboViTGenome:
        genome = super().sample(trial, resolution, num_classes)
        if self.fault == "cuda":
            kernel = (CUDA_FAULT_ONCE, CUDA_FAULT_ALWAYS, CUDA_FAULT_NONE)[trial.number % 3]
        elif self.fault:
            kernel = STEM_KERNEL_BY_FAULT[self.fault]
        else:
            kernel = list(STEM_KERNEL_BY_FAULT.values())[trial.number % 3]
        return dataclasses.replace(genome, stem=dataclasses.replace(genome.stem, kernel=kernel, padding=kernel // 2))

    def build(self, genome: TurboViTGenome) -> nn.Module:
        if self.fault == "cuda":
            return self._build_or_break(genome)
        model = super().build(genome)
        if genome.stem.kernel == STEM_KERNEL_BY_FAULT["raise"]:

            def explode(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("injected fault in forward")

            model.register_forward_hook(explode)
        elif genome.stem.kernel == STEM_KERNEL_BY_FAULT["nan"]:
            model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        return model

    def _build_or_break(self, genome: TurboViTGenome) -> nn.Module:
        kernel = genome.stem.kernel
        met_before = any(faulted == kernel for faulted, _ in cuda_faults())
        if kernel == CUDA_FAULT_ALWAYS or (kernel == CUDA_FAULT_ONCE and not met_before):
            with open(os.environ["GAS_TEST_FAULTS"], "a") as faults:
                faults.write(f"{kernel} {os.getpid()}\n")
            raise RuntimeError(STICKY_CUDA_ERROR)
        return super().build(genome)


SPACE = FaultySpace
