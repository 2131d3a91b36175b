"""Up-front refusals: a stage that cannot act on a model says why before any training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from satcompress import stages
from satcompress.tasks import Split, TaskData

STAGES = stages.load_builtin_stages()


class ConstantLogits(nn.Module):
    """A model with a parameter but no Linear or convolution layer."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0 * x.sum(-1, keepdim=True)


class LinearIntoGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(2, 8)
        self.gru = nn.GRU(8, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(x))
        return self.head(out[:, -1])


def data_for(shape: tuple[int, ...], n: int = 12) -> TaskData:
    rng = np.random.default_rng(0)
    split = Split(x=rng.normal(size=(n, *shape)).astype(np.float32),
                  y=np.arange(n, dtype=np.int64) % 3, groups=np.arange(n))
    return TaskData(train=split, val=split, test=split, class_names=("a", "b", "c"))


@pytest.mark.parametrize(("name", "message"), [
    ("low_rank", "no Linear or convolution (groups=1) layer to factorise"),
    ("post_training_quantize", "no nn.Linear, nn.Conv1d or nn.Conv2d layer to quantize"),
    ("quantization_aware_train", "no nn.Linear, nn.Conv1d or nn.Conv2d layer to quantize"),
    ("mixed_precision_quantize", "no nn.Linear, nn.Conv1d or nn.Conv2d layer to quantize"),
    ("weight_cluster", "no Linear or convolution weight to cluster"),
    ("magnitude_prune", "no Linear or convolution weight to prune"),
    ("std_threshold_prune", "no Linear or convolution weight to prune"),
    ("structured_prune", "no channel group Torch-Pruning can remove"),
    ("drop_bound_prune", "no channel group Torch-Pruning can remove"),
    ("hinton_kd", "no channel group of the ConstantLogits can be narrowed"),
    ("fitnets", "no channel group of the ConstantLogits can be narrowed"),
    ("dynamic_kd", "no channel group of the ConstantLogits can be narrowed"),
])
def test_every_family_refuses_a_model_it_cannot_act_on(name, message):
    model, data = ConstantLogits(), data_for((6,))
    config = STAGES[name]()
    if hasattr(config, "ignored_layers"):  # the default names a "head" this model lacks
        config = STAGES[name](ignored_layers=())
    reason = stages.check(model, config, data)
    assert reason is not None and reason.startswith(f"{name}: ") and message in reason
    with pytest.raises(ValueError, match=f"^{name}: "):
        stages.apply(model, config, data)


def test_structured_prune_refuses_what_torch_pruning_cannot_trace():
    reason = stages.check(LinearIntoGRU(), STAGES["structured_prune"](), data_for((5, 2)))
    assert reason.startswith("structured_prune: Torch-Pruning cannot trace the channel groups")


def test_checks_pass_a_model_they_can_act_on():
    model, data = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), data_for((6,))
    for name in ("low_rank", "post_training_quantize", "weight_cluster", "magnitude_prune"):
        assert stages.check(model, STAGES[name](), data) is None
    assert stages.check(model, STAGES["structured_prune"](ignored_layers=("2",)), data) is None
