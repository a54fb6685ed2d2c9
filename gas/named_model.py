"""Models as gas's commands name them: a reference, a genome file, or a file `gas export` wrote.

    hiera_tiny, turbovit, ...        a reference genome of a shipped space
    my_genome.json                   a genome file
    generated/NAME.py                a file `gas export` wrote (anything exposing `build_model()`)
    any of these + ":fused"          with its BatchNorms folded first (`model.fuse()`, e.g. efficientvit_m5:fused)
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gas.errors import GasError
from gas.space import get_space, load_genome

FUSED_SUFFIX = ":fused"


@dataclass
class NamedModel:
    """A model ready to time: eval mode, float32, on the CPU."""

    name: str
    model: nn.Module
    params: int
    flops: int | None  # fvcore-convention FLOPs of one image at `resolution` (after fusion for fused models)
    resolution: int


_imported = itertools.count()


def _import_file(path: Path) -> Any:
    """Execute a Python file as a fresh module (an exported model needs torch only)."""
    if not path.is_file():
        raise GasError(f"cannot read {path}: no such file")
    name = f"_gas_model_{next(_imported)}_{path.stem}"  # two files may share a name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise GasError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the file look their module up while it executes
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # whatever the file raises, the user needs one line naming it
        del sys.modules[name]
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise GasError(f"cannot import {path}: {reason}") from None
    return module


def load_model(spec: str) -> NamedModel:
    """The model `spec` names (see the module docstring), built with fresh weights; GasError if it cannot be."""
    source, fuse = (spec.removesuffix(FUSED_SUFFIX), True) if spec.endswith(FUSED_SUFFIX) else (spec, False)
    genome = None
    if source.endswith(".py"):
        module = _import_file(Path(source))
        build = getattr(module, "build_model", None)
        if not callable(build):
            raise GasError(f"{source} defines no build_model(); is it a file `gas export` wrote?")
        try:
            model = build()
        except Exception as error:
            raise GasError(f"{source}: build_model() failed: {type(error).__name__}: {error}".splitlines()[0]) from None
        if isinstance(getattr(module, "GENOME", None), Mapping):
            genome = load_genome(module.GENOME)
    else:
        genome = load_genome(source)
        model = get_space(genome.space).build(genome)
    if not isinstance(model, nn.Module):
        raise GasError(f"{source}: build_model() returned a {type(model).__name__}, not a torch.nn.Module")
    model.eval()
    if fuse:
        if not callable(getattr(model, "fuse", None)):
            raise GasError(f"{source} cannot be fused: its model has no fuse() (no BatchNorms to fold)")
        model = model.fuse()
    flops = None
    if genome is not None:
        cost = get_space(genome.space).cost(genome)
        fused_cost = getattr(cost, "fused", None)
        flops = fused_cost.flops if fuse and fused_cost is not None else cost.flops
    params = sum(parameter.numel() for parameter in model.parameters())
    resolution = genome.resolution if genome is not None else 224
    return NamedModel(spec, model, params, flops, resolution)


def load_models(specs: Sequence[str]) -> list[NamedModel]:
    """Each distinct spec once, in order."""
    return [load_model(spec) for spec in dict.fromkeys(specs)]
