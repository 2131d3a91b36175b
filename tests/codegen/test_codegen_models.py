"""Generated C of whole models (both reference architectures in miniature, float and
compressed) against the NumPy runtime on their test splits: 0 differing predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from c_build import compile_many, generate_c, run_compiled

from satcompress import runtime, stages
from satcompress.pipeline.flight import LOGIT_TOLERANCE, build_artifact

REGISTERED = stages.load_builtin_stages()
W8A8 = REGISTERED["post_training_quantize"](weight_bits=8, quantize_activations=True)
MODELS = {  # each ONNX export takes seconds: three models cover the reference graphs
    "t2-int8-weights-uint8-activations": ("t2", [W8A8]),
    "t2-int4-weight-only": ("t2", [REGISTERED["post_training_quantize"](
        weight_bits=4, quantize_activations=False)]),
    "mlp-clustered": ("mlp", [REGISTERED["weight_cluster"](n_clusters=16, finetune_epochs=0)]),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2

    folder = tmp_path_factory.mktemp("models")
    built, sources = {}, []
    for number, (name, (kind, configs)) in enumerate(MODELS.items()):
        model, data = (tiny_mlp(), make_blobs()) if kind == "mlp" else (tiny_t2(),
                                                                      make_sequences())
        for config in configs:
            model = stages.apply(model, config, data)
        path = folder / f"{name}.sca"
        build_artifact(model, torch.from_numpy(data.test.x[:1]), {"task": "tiny"}, path)
        flight = runtime.load(path)
        for compressed in (True, False):
            source = generate_c(flight, prefix=f"m{number}{'c' if compressed else 'd'}_",
                                compressed=compressed)
            built[name, compressed] = (flight, source, data.test.x)
            sources.append(source)
    return built, compile_many(sources, folder)


@pytest.mark.parametrize("compressed", [True, False], ids=["compressed", "dense"])
@pytest.mark.parametrize("name", list(MODELS))
def test_whole_models_give_the_runtimes_predictions(compiled, name, compressed):
    built, library = compiled
    flight, source, x = built[name, compressed]
    expected = flight.run(x)
    actual = run_compiled(library, source, x)
    assert np.count_nonzero(actual.argmax(1) != expected.argmax(1)) == 0
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(actual - expected).max() <= LOGIT_TOLERANCE * scale


def test_the_arena_is_the_runtimes_planned_arena(compiled):
    built, _ = compiled
    flight, source, _ = built["t2-int4-weight-only", True]
    assert source.arena_bytes == max(16, flight.plan.arena_bytes)
    assert f"#define {source.prefix.upper()}ARENA_BYTES {source.arena_bytes}" in source.header


def test_generated_code_uses_only_the_allowed_headers_and_no_allocation(compiled):
    built, _ = compiled
    for _, source, _ in built.values():
        includes = {line for line in source.source.splitlines() if line.startswith("#include")}
        assert includes == {"#include <math.h>", "#include <stddef.h>", "#include <stdint.h>",
                            "#include <string.h>", '#include "model.h"'}
        assert "malloc" not in source.source and "alloca" not in source.source
        assert source.header.count("predict(") == 1
