"""Distillation losses: Hinton et al.'s soft targets and DynamicKD's entropy controller.

* :func:`soft_target_loss` and :func:`hinton_loss`: "Distilling the Knowledge in a Neural
  Network" (Hinton, Vinyals & Dean 2015). Both models' logits are softened by a temperature
  ``T``; the student matches the teacher's softened distribution (KL divergence, scaled by
  ``T^2`` so its gradients keep their size as ``T`` changes, as the paper prescribes) and,
  with weight ``1 - alpha``, the hard labels.
* :class:`EntropyController`: the entropy correction of "DynamicKD: An Effective Knowledge
  Distillation via Dynamic Entropy Correction-Based Distillation for Gap Optimizing" (Zhu,
  Shang, Yuan, Zhang, Li & Jiao 2023, arXiv:2305.05233): a scalar that multiplies the
  student's logits inside the distillation term, updated every step by the distillation loss,
  so that the entropy of the student's output moves toward the teacher's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["softmax_entropy", "soft_target_loss", "hinton_loss", "EntropyController"]


def softmax_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits / temperature)`` over the last axis.

    Returns one value per example (shape ``logits.shape[:-1]``).
    """
    log_probabilities = F.log_softmax(logits / temperature, dim=-1)
    return -(log_probabilities.exp() * log_probabilities).sum(dim=-1)


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``T^2 KL(softmax(teacher / T) || softmax(student / T))``, averaged over the batch.

    Hinton et al. (2015), section 2: the soft-target term, multiplied by ``T^2`` because its
    gradients scale as ``1 / T^2``.
    """
    return temperature**2 * F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    hard_loss: nn.Module,
    temperature: float,
    alpha: float,
    student_scale: float = 1.0,
) -> torch.Tensor:
    """Hinton et al.'s (2015) distillation objective.

    ``alpha x soft_target_loss(s x student, teacher, T) + (1 - alpha) x hard_loss(student,
    labels)``, where ``hard_loss`` is the task's class-weighted cross-entropy
    (:func:`satcompress.training.class_weighted_loss`) and ``s = student_scale`` scales the
    student's logits in the soft term only: 1 for Hinton et al., the
    :class:`EntropyController`'s scale for DynamicKD.
    """
    soft = soft_target_loss(student_scale * student_logits, teacher_logits, temperature)
    return alpha * soft + (1 - alpha) * hard_loss(student_logits, labels)


class EntropyController:
    """DynamicKD's entropy controller: a learned scale ``s`` of the student's logits.

    The distillation term uses the corrected student logits ``s x z_s``::

        L_KD(s) = T^2 KL(softmax(z_t / T) || softmax(s z_s / T)),

    and after every training step ``s`` takes one gradient step on ``L_KD`` in log space
    (so ``s`` stays positive), with the student's logits held fixed::

        u = log s
        dL_KD/du = T s mean_batch( E_q[z_s] - E_p[z_s] ),   q = softmax(s z_s / T),
                                                             p = softmax(z_t / T)
        u <- clip(u - learning_rate x dL_KD/du, -log max_scale, log max_scale)

    This is Zhu et al.'s (2023) controller "updated dynamically by the distillation loss";
    the closed-form gradient is exact (checked against autograd in the tests). Why it
    corrects entropy: ``E_q[z_s]`` grows with ``s`` (its derivative is ``Var_q(z_s) / T``),
    so when the student ranks the classes as the teacher does, a student sharper than the
    teacher (lower entropy) has ``E_q[z_s] > E_p[z_s]`` and ``s`` shrinks, raising its
    entropy, and a flatter one has ``s`` grow; for student logits proportional to the
    teacher's, ``L_KD`` falls and then rises along ``u``, with its single minimum where the
    two distributions, and so their entropies, coincide. ``max_scale`` is a safety bound on
    ``s`` (and ``1/s``).

    Parameters
    ----------
    temperature : float
        The distillation temperature ``T``.
    learning_rate : float
        Step size of the controller's gradient step on ``log s``.
    max_scale : float
        ``s`` is kept in ``[1 / max_scale, max_scale]``.

    Attributes
    ----------
    log_scale_ : float
        ``log s`` after the updates so far (set by the first update; ``s = 1`` before it).
    history_ : list of float
        ``s`` after each update.
    """

    def __init__(
        self, temperature: float, learning_rate: float = 0.05, max_scale: float = 10.0
    ) -> None:
        self.temperature = temperature
        self.learning_rate = learning_rate
        self.max_scale = max_scale

    @property
    def scale_(self) -> float:
        """The current scale ``s`` (1 before the first update)."""
        return math.exp(getattr(self, "log_scale_", 0.0))

    @torch.no_grad()
    def log_scale_gradient(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor
    ) -> float:
        """``dL_KD / d log s`` at the current ``s`` for one batch (see the class docstring)."""
        student_logits = student_logits.detach()
        scale, temperature = self.scale_, self.temperature
        q = torch.softmax(scale * student_logits / temperature, dim=-1)
        p = torch.softmax(teacher_logits / temperature, dim=-1)
        mean_gap = ((q - p) * student_logits).sum(dim=-1).mean()
        return float(temperature * scale * mean_gap)

    def update(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
        """One controller step on a batch; returns the new scale ``s``."""
        bound = math.log(self.max_scale)
        step = self.learning_rate * self.log_scale_gradient(student_logits, teacher_logits)
        self.log_scale_ = min(bound, max(-bound, getattr(self, "log_scale_", 0.0) - step))
        self.history_ = getattr(self, "history_", [])
        self.history_.append(self.scale_)
        return self.scale_
