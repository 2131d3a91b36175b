"""Quantization stages: post-training (int8/int4), quantization-aware training, mixed precision.

Stages (registered with :mod:`satcompress.stages` on import):

``post_training_quantize`` (:class:`PostTrainingQuantizeConfig`)
    Symmetric per-channel int8 weights and calibrated per-tensor uint8 activations by default;
    weight-only int8 or int4 by setting. No training. Linear, Conv1d and Conv2d layers are
    quantized; :func:`quantize_report` names every other layer left in float, and why.
``quantization_aware_train`` (:class:`QuantizationAwareTrainConfig`)
    The same quantization, then fine-tuning through fake quantization with a straight-through
    estimator (Jacob et al. 2018); 4-bit weights by default.
``mixed_precision_quantize`` (:class:`MixedPrecisionQuantizeConfig`)
    Per-layer weight widths (2 to 8 bits) from a one-layer-at-a-time sensitivity analysis and
    a greedy knapsack under an average-bits budget; :func:`bits_report_rows` renders them.

Quantized models keep float tensors on their integer grids (fake quantization) and declare
their stored widths in ``stored_bits``, so :func:`satcompress.measure.measure` reports their
true size, and export to ONNX as ``QuantizeLinear``/``DequantizeLinear`` (QDQ) graphs;
:func:`fold_weight_quantizers` then stores the exported weights as integers.
"""

from satcompress.quantize.fake_quant import (
    MinMaxObserver,
    PercentileObserver,
    QuantConv1d,
    QuantConv2d,
    QuantizedLayer,
    QuantLinear,
    affine_qparams,
    dequantize,
    quantize,
    symmetric_weight_scale,
    weight_qmax,
)
from satcompress.quantize.mixed import (
    MixedPrecisionQuantizeConfig,
    assign_bits,
    average_bits,
    bits_report_rows,
    layer_sensitivity,
    mixed_precision_quantize,
)
from satcompress.quantize.onnx_qdq import fold_weight_quantizers
from satcompress.quantize.ptq import (
    QUANTIZE_REPORT_ATTRIBUTE,
    PostTrainingQuantizeConfig,
    calibrate,
    convert,
    float_layers,
    post_training_quantize,
    quantizable_layers,
    quantize_report,
    quantized_layers,
)
from satcompress.quantize.qat import (
    QuantizationAwareTrainConfig,
    fine_tune_quantized,
    quantization_aware_train,
)

__all__ = [
    "MinMaxObserver",
    "PercentileObserver",
    "QuantConv1d",
    "QuantConv2d",
    "QuantizedLayer",
    "QuantLinear",
    "affine_qparams",
    "dequantize",
    "quantize",
    "symmetric_weight_scale",
    "weight_qmax",
    "MixedPrecisionQuantizeConfig",
    "assign_bits",
    "average_bits",
    "bits_report_rows",
    "layer_sensitivity",
    "mixed_precision_quantize",
    "fold_weight_quantizers",
    "QUANTIZE_REPORT_ATTRIBUTE",
    "PostTrainingQuantizeConfig",
    "calibrate",
    "convert",
    "float_layers",
    "post_training_quantize",
    "quantizable_layers",
    "quantize_report",
    "quantized_layers",
    "QuantizationAwareTrainConfig",
    "fine_tune_quantized",
    "quantization_aware_train",
]
