"""A plug-in search space whose models fail on purpose: trial 0 trains, trial 1 raises, trial 2 diverges.

The search loads it by module path (`--space tests.faulty_space`) exactly as it loads a user's own
space, and its workers import it the same way; only the models it builds misbehave. With the option
`fault=raise` (`--space tests.faulty_space:fault=raise`) every model raises.
"""

from __future__ import annotations

import dataclasses

import optuna
import torch
from torch import nn

from search_spaces.turbovit import TurboViTGenome, TurboViTSpace

STEM_KERNEL_BY_FAULT = {"none": 7, "raise": 3, "nan": 5}


class FaultySpace(TurboViTSpace):
    def __init__(self, fault: str | None = None) -> None:
        super().__init__()
        self.fault = fault
        self.name = "tests.faulty_space" + (f":fault={fault}" if fault else "")

    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> TurboViTGenome:
        genome = super().sample(trial, resolution, num_classes)
        kernel = (
            STEM_KERNEL_BY_FAULT[self.fault] if self.fault else list(STEM_KERNEL_BY_FAULT.values())[trial.number % 3]
        )
        return dataclasses.replace(genome, stem=dataclasses.replace(genome.stem, kernel=kernel, padding=kernel // 2))

    def build(self, genome: TurboViTGenome) -> nn.Module:
        model = super().build(genome)
        if genome.stem.kernel == STEM_KERNEL_BY_FAULT["raise"]:

            def explode(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("injected fault in forward")

            model.register_forward_hook(explode)
        elif genome.stem.kernel == STEM_KERNEL_BY_FAULT["nan"]:
            model.register_forward_hook(lambda module, inputs, output: output * float("nan"))
        return model


SPACE = FaultySpace
