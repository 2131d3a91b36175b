"""Export a model to ONNX and run it with ONNX Runtime: the portable path every stage keeps.

Uses the ``torch.export``-based exporter (the TorchScript one is deprecated in this torch).
Its internal deprecation warnings and log lines are not the caller's concern and are
silenced locally, so ``filterwarnings = error`` still catches ours.

The exporter's optimizer (onnxscript) folds a BatchNorm that follows a convolution with a
constant weight into that weight, channel by channel; ``weight_cluster`` therefore folds it
first itself (:mod:`satcompress.cluster.batchnorm`), so that the exported values are the
clustered ones. Quantized weights (``DequantizeLinear``) are not folded.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxExportError", "export_onnx", "run_onnx"]


class OnnxExportError(RuntimeError):
    """The model could not be exported to ONNX."""


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    logger = logging.getLogger("torch.onnx")
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            for internal in ("The tensor attributes self", "The .grad attribute of a Tensor"):
                warnings.filterwarnings("ignore", internal, UserWarning)  # recurrent layers
            yield
    finally:
        logger.setLevel(previous)


def export_onnx(model: nn.Module, example_input: torch.Tensor, opset_version: int = 18) -> bytes:
    """Serialised ONNX model of ``model`` in eval mode (input ``x``, output ``logits``).

    The batch axis is dynamic. The model's train/eval mode is restored afterwards. A batch of
    one is traced as two copies of it: recurrent and attention layers traced at batch 1 would
    fix the batch axis at 1.
    """
    if example_input.shape[0] == 1:
        example_input = example_input.expand(2, *example_input.shape[1:]).clone()
    was_training = model.training
    model.eval()
    try:
        with _exporter_quiet():
            program = torch.onnx.export(
                model,
                (example_input,),
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
                opset_version=opset_version,
                dynamo=True,
                verbose=False,
            )
    except Exception as error:
        raise OnnxExportError(
            f"ONNX export of {type(model).__name__} failed ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:300]}). Every satcompress stage must keep models "
            "exportable; replace the offending operation with standard layers."
        ) from error
    finally:
        model.train(was_training)
    return program.model_proto.SerializeToString()


def run_onnx(onnx_model: bytes, x: np.ndarray) -> np.ndarray:
    """Run a serialised ONNX model on ``x`` with ONNX Runtime (CPU) and return its output."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]
