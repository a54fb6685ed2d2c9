"""fvcore's FLOP count of a built model, with the attention kernel counted: the analytic model's referee."""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn


def _attention_flops(inputs: list[Any], outputs: list[Any]) -> int:
    """Q·Kᵀ plus A·V for aten::scaled_dot_product_attention, which fvcore would count as zero."""
    from fvcore.nn.jit_handles import get_shape

    query, key, value = (get_shape(tensor) for tensor in inputs[:3])
    pairs = math.prod(query[:-1]) * key[-2]
    return pairs * query[-1] + pairs * value[-1]


def fvcore_flops(model: nn.Module, resolution: int, channels: int = 3) -> int:
    """FLOPs of one image through `model` in eval mode, as fvcore counts them (multiply-adds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fvcore's TorchScript tracing
        from fvcore.nn import FlopCountAnalysis

        was_training = model.training
        model.eval()
        try:
            analysis = FlopCountAnalysis(model, torch.zeros(1, channels, resolution, resolution))
            analysis.set_op_handle("aten::scaled_dot_product_attention", _attention_flops)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            with torch.no_grad():
                return int(analysis.total())
        finally:
            model.train(was_training)
