"""The contract every registered compression stage keeps, checked on both tiny architectures.

For each stage (built with its default settings): the config round-trips through a dict;
``apply`` returns a new model and leaves its input bit-for-bit untouched; the result can be
measured and still exports to ONNX, where ONNX Runtime reproduces its outputs.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from satcompress import stages
from satcompress.measure import measure
from satcompress.onnx_export import export_onnx, run_onnx
from satcompress.pipeline.checkpoint import checkpoint_bytes, model_from_checkpoint

STAGES = stages.load_builtin_stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_contract(name, tiny_case):
    model, data = tiny_case
    config = STAGES[name]()
    assert stages.config_from_dict(stages.config_to_dict(config)) == config
    before = {key: value.clone() for key, value in model.state_dict().items()}

    result = stages.apply(model, config, data)

    assert result is not model
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(value, before[key]) for key, value in model.state_dict().items())
    x = torch.from_numpy(data.test.x[:8])
    with torch.no_grad():
        expected = result.eval()(x).numpy()
    assert np.isfinite(expected).all()
    measurement = measure(result, x[:1], repeats=3, warmup=1)
    assert 0 < measurement.nonzero_parameters <= measurement.parameters
    assert measurement.theoretical_bytes > 0
    onnx_outputs = run_onnx(export_onnx(result, x[:1]), x.numpy())
    assert np.allclose(onnx_outputs, expected, atol=1e-4, rtol=1e-4)
    _assert_checkpoint_round_trips(result, x)


def _assert_checkpoint_round_trips(model, x):
    """The stage's result rebuilt from its checkpoint (no unpickling) is the same model."""
    rebuilt = model_from_checkpoint(checkpoint_bytes(model))
    assert type(rebuilt) is type(model)
    assert [name for name, _ in rebuilt.named_modules()] == [
        name for name, _ in model.named_modules()]
    assert rebuilt.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(value, model.state_dict()[key])
               for key, value in rebuilt.state_dict().items())
    assert [(name, p.requires_grad) for name, p in rebuilt.named_parameters()] == [
        (name, p.requires_grad) for name, p in model.named_parameters()]
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model.eval()(x))
    assert _structure(rebuilt) == _structure(model)


def _structure(model):
    return torch.load(io.BytesIO(checkpoint_bytes(model)), weights_only=True)["structure"]


def test_onnx_export_reproduces_both_base_architectures(tiny_case):
    model, data = tiny_case
    x = torch.from_numpy(data.test.x[:5])
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(run_onnx(export_onnx(model, x[:1]), x.numpy()), expected, atol=1e-5)
    _assert_checkpoint_round_trips(model, x)
