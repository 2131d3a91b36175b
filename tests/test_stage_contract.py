"""The contract every registered compression stage keeps, checked on both tiny architectures.

For each stage (built with its default settings): the config round-trips through a dict;
``apply`` returns a new model and leaves its input bit-for-bit untouched; the result can be
measured and still exports to ONNX, where ONNX Runtime reproduces its outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from satcompress import stages
from satcompress.measure import measure
from satcompress.onnx_export import export_onnx, run_onnx

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


def test_onnx_export_reproduces_both_base_architectures(tiny_case):
    model, data = tiny_case
    x = torch.from_numpy(data.test.x[:5])
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.allclose(run_onnx(export_onnx(model, x[:1]), x.numpy()), expected, atol=1e-5)
