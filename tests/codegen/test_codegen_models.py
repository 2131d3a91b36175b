"""Generated C of whole models (both reference architectures in miniature, float and
compressed) against the NumPy runtime on their test splits: 0 differing predictions."""

from __future__ import annotations

import re

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


RAM = "ram"
"""The third build of every model: compressed, each compressed weight given a RAM table."""


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
        for tag, form, ram in (("c", True, 0), ("d", False, 0), ("r", RAM, 2**30)):
            source = generate_c(flight, prefix=f"m{number}{tag}_", compressed=form is not False,
                                ram_bytes=ram)
            built[name, form] = (flight, source, data.test.x)
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


@pytest.mark.parametrize("name", ["t2-int4-weight-only", "mlp-clustered"])
def test_weights_decoded_into_ram_give_the_same_logits(compiled, name):
    built, library = compiled
    _, flash, x = built[name, True]
    _, ram, _ = built[name, RAM]
    assert ram.ram_tables and ram.ram_table_bytes == sum(t["bytes"] for t in ram.ram_tables)
    assert f"#define {ram.prefix.upper()}RAM_TABLE_BYTES {ram.ram_table_bytes}" in ram.header
    assert "_ram[" in ram.source and "_ram[" not in flash.source
    assert ram.expected_speedup > 1.0 and flash.expected_speedup == 1.0
    np.testing.assert_array_equal(run_compiled(library, ram, x).view(np.uint32),
                                  run_compiled(library, flash, x).view(np.uint32))


def test_without_compressed_weights_there_is_no_ram_table(compiled):
    built, _ = compiled
    _, ram, _ = built["t2-int8-weights-uint8-activations", RAM]  # int8 weights: stored dense
    assert ram.ram_tables == () and "_ram[" not in ram.source
    assert f"void {ram.prefix}init(void)\n{{\n}}" in ram.source


def test_the_ram_tables_are_the_most_read_weights_that_fit(compiled):
    built, _ = compiled
    flight, everything, _ = built["t2-int4-weight-only", RAM]
    reads = sorted(table["reads_per_inference"] for table in everything.ram_tables)
    most = max(everything.ram_tables, key=lambda t: (t["reads_per_inference"], -t["bytes"]))
    one = generate_c(flight, ram_bytes=most["bytes"])
    assert [table["tensor"] for table in one.ram_tables] == [most["tensor"]]
    assert len(reads) > 1 and reads[-1] > reads[0]
    assert generate_c(flight, ram_bytes=min(t["bytes"] for t in everything.ram_tables) - 1
                      ).ram_tables == ()


def test_a_quantized_input_has_its_own_entry_point(compiled):
    built, library = compiled
    flight, source, x = built["t2-int8-weights-uint8-activations", True]
    macro = source.prefix.upper()
    assert source.quantized_input == "uint8"
    assert f"int {source.prefix}predict_uint8(const uint8_t *input" in source.header
    scale = np.float32(float(re.search(rf"#define {macro}INPUT_SCALE (\S+)f",
                                       source.header).group(1)))
    zero = int(re.search(rf"#define {macro}INPUT_ZERO_POINT (\d+)", source.header).group(1))
    q = np.clip(np.rint(x * (np.float32(1) / scale)) + zero, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(run_compiled(library, source, q).view(np.uint32),
                                  run_compiled(library, source, x).view(np.uint32))
    assert built["mlp-clustered", True][1].quantized_input is None
