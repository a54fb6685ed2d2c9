"""A PyTorch module as an ONNX model with a dynamic batch, and the ONNX Runtime session that runs one.

Both packages come with the `onnx` extra (`pip install 'gas[onnx]'`); `require` says so in one line where
they are missing. The exporter is torch's TorchScript-based one, with two of its passes turned off so that
every initializer keeps the name it has in the module's `state_dict`:

- constant folding (`do_constant_folding=False`) would fold BatchNorms into the convolutions before them
  and give the results new names; ONNX Runtime folds them itself when it loads the model.
- de-duplication, which merges initializers of equal value under one name (a fresh model's LayerNorm
  biases are all zeros), is skipped when initializers are also graph inputs
  (`keep_initializers_as_inputs=True`); they are taken off the inputs again afterwards, so a runtime
  treats them as the constants they are.

torch's newer exporter (`dynamo=True`) keeps names as well when its optimiser is off, but on this project's
models it took 10-15x as long (40-90 s against 4-7 s per reference on a busy 2-core machine), and its
translation of `scaled_dot_product_attention` accepts only 4-D inputs, while mask-unit attention is 5-D.
"""

from __future__ import annotations

import io
import warnings
from types import ModuleType
from typing import Any

import torch
from torch import nn

from gas.errors import GasError

#: ONNX Runtime 1.16 onwards runs opset 18, and it has LayerNormalization as one operator.
OPSET = 18
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
#: The batch the exporter traces with. Not 1, which a tracer could take for a constant of the graph.
TRACE_BATCH = 2


def require(what: str) -> tuple[ModuleType, ModuleType]:
    """The onnx and onnxruntime modules; GasError naming the extra to install if either is missing.

    `what` names the feature that needs them, e.g. "--onnx".
    """
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        missing = getattr(error, "name", None) or "onnx"
        raise GasError(f"{what} needs the {missing} package: pip install 'gas[onnx]'") from None
    return onnx, onnxruntime


def to_onnx(module: nn.Module, shape: tuple[int, ...], what: str = "ONNX export") -> Any:
    """`module` (in eval mode) as a checked `onnx.ModelProto` taking float32 inputs of shape (batch, *shape).

    The batch dimension is dynamic; initializers are named by `module.state_dict()` (BatchNorm's
    `num_batches_tracked`, which inference never reads, is left out).
    """
    onnx, _ = require(what)
    module = module.eval()
    buffer = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    try:
        # The tracer cannot record inference-mode tensors, which a caller timing the model may be making.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            example = torch.randn(TRACE_BATCH, *shape)
            # The exporter warns that it is the older of torch's two, and its tracer that shape checks become
            # constants: they depend on the resolution, which the model is exported at, not on the batch.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes=dynamic,
                opset_version=OPSET,
                do_constant_folding=False,
                keep_initializers_as_inputs=True,
            )
    except Exception as error:  # whatever the exporter raises, the user needs one line naming it
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        raise GasError(f"{what}: torch could not export the model to ONNX: {reason}") from None
    model = onnx.load_from_string(buffer.getvalue())
    constants = {initializer.name for initializer in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise GasError(f"{what}: the exported ONNX model fails onnx.checker: {str(error).splitlines()[0]}") from None
    return model


def session(model: Any, threads: int, what: str = "ONNX Runtime") -> Any:
    """An ONNX Runtime CPU session for `model` (a ModelProto or its bytes), all graph optimisations on.

    `threads` is the intra-op thread count; inter-op parallelism is off (one operator at a time), which is
    how torch runs a network too.
    """
    _, onnxruntime = require(what)
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def runtime_version() -> str:
    """ONNX Runtime's version, for a latency fingerprint."""
    _, onnxruntime = require("latency in ONNX Runtime")
    return str(onnxruntime.__version__)
