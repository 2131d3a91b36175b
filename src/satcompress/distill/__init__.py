"""Knowledge distillation: train a smaller student of the teacher's own architecture.

The stages (``hinton_kd``, ``fitnets``, ``dynamic_kd``; see :mod:`satcompress.distill.stages`)
take the trained TEACHER as their model and return a trained, smaller STUDENT built by
:func:`build_student` (exactly for the reference architectures, by tracing and cutting down a
copy for any other model: :mod:`satcompress.distill.generic`). The losses, the FitNets hint
machinery and the DynamicKD entropy controller are public for use outside the stages.
"""

from satcompress.distill.hints import (
    default_hint_layer,
    fit_hints,
    hint_layers,
    hint_loss,
    hint_regressor,
    layer_output,
    mean_hint_loss,
)
from satcompress.distill.losses import (
    EntropyController,
    hinton_loss,
    soft_target_loss,
    softmax_entropy,
)
from satcompress.distill.stages import (
    DISTILL_REPORT_ATTRIBUTE,
    DistillSettings,
    DynamicKDConfig,
    FitNetsConfig,
    HintonKDConfig,
    distill_report,
    dynamic_kd,
    fitnets,
    hinton_kd,
)
from satcompress.distill.students import (
    build_student,
    parameter_count,
    width_candidates,
    width_multiplier_for_fraction,
)

__all__ = [
    "build_student",
    "parameter_count",
    "width_candidates",
    "width_multiplier_for_fraction",
    "softmax_entropy",
    "soft_target_loss",
    "hinton_loss",
    "EntropyController",
    "default_hint_layer",
    "hint_layers",
    "layer_output",
    "hint_regressor",
    "hint_loss",
    "mean_hint_loss",
    "fit_hints",
    "DISTILL_REPORT_ATTRIBUTE",
    "DistillSettings",
    "HintonKDConfig",
    "FitNetsConfig",
    "DynamicKDConfig",
    "hinton_kd",
    "fitnets",
    "dynamic_kd",
    "distill_report",
]
