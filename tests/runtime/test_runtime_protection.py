"""Protection of a loaded model against upsets in RAM: stored ranges applied at load,
triplicated tables, scrubbing, compact weights, and non-finite outputs as faults."""

from __future__ import annotations

import numpy as np
import pytest

from satcompress.artifact import ArtifactError, decode_artifact, encode_artifact
from satcompress.radiation import protect_artifact
from satcompress.runtime import Runtime, load
from satcompress.runtime.graph import GRAPH_FORMAT
from satcompress.runtime.protect import (
    FAULT,
    Protection,
    RangeCheck,
    classify_logits,
    widened,
)
from tiny_mlp_graph import MLP_GRAPH

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 40)).astype(np.float32)
CODEBOOK = np.array([-0.3, -0.1, 0.1, 0.3], dtype=np.float32)
W1 = CODEBOOK[RNG.integers(0, 4, size=(40, 64))]  # 2,560 elements: a block, clustered
B1 = RNG.normal(size=64).astype(np.float32)  # a table
W2 = RNG.normal(size=(64, 3)).astype(np.float32)  # 192 elements: a table
TOP_EXPONENT_BIT = np.uint32(1 << 30)


def mlp(protection: dict | None = None, fec: bool = True) -> bytes:
    """x (40) -> Gemm(W1, B1) -> Relu -> Gemm(W2) -> logits (3)."""
    metadata = {"task": "tiny", "class_names": ["a", "b", "c"]}
    if protection is not None:
        metadata["protection"] = protection
    return encode_artifact(MLP_GRAPH, {"w1": W1, "b1": B1, "w2": W2}, metadata, fec=fec)


@pytest.fixture
def protected(tmp_path):
    """mlp() written to a file with every protection, ranges calibrated on X."""
    def write(*protect: str):
        path = tmp_path / f"{'-'.join(protect) or 'none'}.sca"
        path.write_bytes(mlp())
        protect_artifact(path, protect, X)
        return path
    return write


def flip_top_exponent(array: np.ndarray, index: int = 0) -> None:
    array.reshape(-1).view(np.uint32)[index] ^= TOP_EXPONENT_BIT


def test_the_layer_outputs_are_the_gemm_outputs_or_the_relu_that_alone_reads_one():
    assert load(mlp()).layer_outputs == ("hidden", "logits")


def test_protect_artifact_stores_the_ranges_calibrated_on_the_training_inputs(protected):
    bare = load(mlp())
    stored = load(protected("ranges"))
    assert stored.protection == Protection(bare.activation_ranges(X))
    assert stored.metadata["protection"] == {
        "ranges": {name: list(bounds) for name, bounds in bare.activation_ranges(X).items()},
        "tables": False, "compact": False, "scrub_every": 0}
    assert np.array_equal(stored.run(X), bare.run(X)) and stored.clipped_values == 0


def test_the_record_is_bytes_of_the_file_and_every_tensor_block_is_unchanged(protected):
    bare, stored = decode_artifact(mlp()), decode_artifact(protected("ranges").read_bytes())
    assert stored.size_bytes > bare.size_bytes and stored.fec_parity == bare.fec_parity
    assert [(b.name, b.encoding, b.stored_bytes, b.crc32) for b in stored.blocks] == [
        (b.name, b.encoding, b.stored_bytes, b.crc32) for b in bare.blocks]


def test_the_stored_ranges_clip_a_blown_up_weight_at_load_without_recalibration(protected):
    stored, bare = load(protected("ranges")), load(mlp())
    clean = bare.run(X)
    for runtime in (stored, bare):
        flip_top_exponent(runtime.resident_memory["w1"])  # -0.3 -> about -1e38
    with np.errstate(all="ignore"):
        corrupted = bare.run(X)
    logits = stored.run(X)
    high = stored.protection.ranges["logits"][1]
    assert np.abs(corrupted).max() > 1e30
    assert np.isfinite(logits).all() and logits.max() <= np.nextafter(np.float32(high), np.inf)
    assert stored.clipped_values > 0
    kept = (logits.argmax(1) == clean.argmax(1)).mean()
    assert kept > 0.8 and kept > (corrupted.argmax(1) == clean.argmax(1)).mean()


def test_load_can_leave_the_stored_protection_off_for_comparison(protected):
    assert load(protected("ranges", "tables"), protect=False).protection == Protection()


@pytest.mark.parametrize("record, problem", [
    ({"ranges": {}}, "does not have exactly ranges, tables, compact and scrub_every"),
    ({"ranges": {"hidden": [2.0, 1.0]}, "tables": False, "compact": False, "scrub_every": 0},
     "is malformed"),
    ({"ranges": {}, "tables": "yes", "compact": False, "scrub_every": 0}, "is malformed"),
    ({"ranges": {}, "tables": False, "compact": False, "scrub_every": -1}, "is malformed"),
    ({"ranges": {}, "tables": False, "compact": [3], "scrub_every": 0}, "is malformed"),
    ({"ranges": {}, "tables": False, "compact": "w1", "scrub_every": 0}, "is malformed"),
])
def test_a_malformed_protection_record_is_refused_naming_the_fix(record, problem):
    with pytest.raises(ArtifactError, match=problem) as error:
        load(mlp(record))
    assert "satcompress compress" in str(error.value) and "protect=False" in str(error.value)


def test_a_record_naming_a_value_the_graph_does_not_write_is_refused():
    record = {"ranges": {"v99": [0.0, 1.0]}, "tables": False, "compact": False,
              "scrub_every": 0}
    with pytest.raises(ArtifactError, match="'v99' is not a float value the program writes"):
        load(mlp(record))


def test_classify_logits_reports_non_finite_rows_as_faults_never_a_class():
    result = classify_logits(np.array([[np.nan, 1.0], [0.0, 2.0], [np.inf, 0.0]],
                                      dtype=np.float32))
    assert result.predicted.tolist() == [FAULT, 1, FAULT] and FAULT == -1
    assert result.faults.tolist() == [True, False, True] and result.fault_count == 2
    assert np.isnan(result.probabilities[[0, 2]]).all()
    assert result.probabilities[1].tolist() == pytest.approx([0.1192029, 0.8807971])


def test_runtime_classify_counts_the_faults_it_reports():
    runtime = load(mlp())
    runtime.resident_memory["w2"][0, 1] = 3e38  # overflows where hidden unit 0 exceeds ~1.1
    with np.errstate(all="ignore"):
        result = runtime.classify(X)
    assert 0 < result.fault_count < len(X) and runtime.faults == result.fault_count
    assert (result.predicted[result.faults] == FAULT).all()
    assert set(result.predicted[~result.faults]) <= {0, 1, 2}


@pytest.mark.parametrize("copy", [0, 1, 2])
def test_a_flipped_copy_of_a_triplicated_table_is_outvoted_and_scrub_rewrites_it(protected,
                                                                                 copy):
    """Whichever copy is hit (the vote copies the first when it equals the second)."""
    runtime = load(protected("tables"))
    clean = runtime.run(X)
    memory = runtime.resident_memory
    assert {"b1#0", "b1#1", "b1#2", "w2#2"} <= set(memory) and "w1" in memory
    flip_top_exponent(memory[f"b1#{copy}"], 5)
    assert np.array_equal(runtime.run(X), clean)
    assert runtime.scrub() == 1 and runtime.repairs == 1
    assert np.array_equal(memory[f"b1#{copy}"], memory[f"b1#{(copy + 1) % 3}"])
    assert runtime.scrub() == 0


def test_two_copies_wrong_in_one_bit_are_caught_by_the_checksum_and_reloaded(protected):
    runtime = load(protected("tables"))
    clean = runtime.run(X)
    for copy in ("b1#0", "b1#1"):
        flip_top_exponent(runtime.resident_memory[copy], 5)
    with np.errstate(all="ignore"):
        assert not np.array_equal(runtime.run(X), clean)  # the vote is wrong now
    assert runtime.scrub() == 2  # the copy the vote rewrote, then the tables reloaded
    assert np.array_equal(runtime.run(X), clean)


def test_scrub_restores_a_flipped_resident_weight_exactly_from_the_artifact_bytes():
    runtime = load(mlp(fec=True))
    clean = runtime.run(X)
    flip_top_exponent(runtime.resident_memory["w1"], 17)
    runtime.resident_memory["w1"].reshape(-1).view(np.uint8)[999] ^= np.uint8(0b1010)
    with np.errstate(all="ignore"):
        assert not np.array_equal(runtime.run(X), clean)
    assert runtime.scrub() == 1 and runtime.repairs == 1
    assert np.array_equal(runtime.run(X), clean)


def test_scrub_reloads_from_the_artifact_file_when_loaded_from_a_path(tmp_path):
    path = tmp_path / "model.sca"
    path.write_bytes(mlp())
    runtime = load(path)
    clean = runtime.run(X)
    flip_top_exponent(runtime.resident_memory["w1"], 3)
    assert runtime.scrub() == 1 and np.array_equal(runtime.run(X), clean)


def test_scrub_without_a_source_detects_but_cannot_reload():
    runtime = Runtime(decode_artifact(mlp()))
    flip_top_exponent(runtime.resident_memory["w1"])
    with pytest.raises(ArtifactError, match="no source to reload it from"):
        runtime.scrub()


def test_scrub_every_n_examples_runs_before_the_next_inference(protected):
    runtime = load(protected("scrub"))
    clean = runtime.run(X[:1])
    assert runtime.scrub_every == 100
    runtime.run(np.repeat(X[:1], 99, axis=0))  # 100 examples since load
    flip_top_exponent(runtime.resident_memory["w1"], 3)
    assert np.array_equal(runtime.run(X[:1]), clean) and runtime.repairs == 1


def test_compact_weights_are_uint8_indices_and_give_the_same_logits_bit_for_bit(protected):
    bare, compact = load(mlp()), load(protected("compact", "tables"))
    memory = compact.resident_memory
    assert memory["w1:indices"].dtype == np.uint8 and memory["w1:indices"].shape == (40, 64)
    assert sorted(memory["w1:codebook#0"].tolist()) == sorted(CODEBOOK.tolist())
    assert not any(array.dtype == np.float32 and array.size > 1024 for array in memory.values())
    assert np.array_equal(compact.run(X), bare.run(X))
    assert np.array_equal(compact.resident_tensors["w1"], W1)


def test_an_upset_index_selects_a_codebook_value_never_a_wild_float(protected):
    runtime = load(protected("compact"))
    clean = runtime.run(X)
    indices = runtime.resident_memory["w1:indices"]
    indices[0, 0] ^= np.uint8(0x80)  # beyond the 4 entries: wraps around to the same one
    assert np.array_equal(runtime.run(X), clean)
    indices[0, 0] ^= np.uint8(0x81)  # the neighbouring entry
    logits = runtime.run(X)
    assert np.isfinite(logits).all() and 0 < np.abs(logits - clean).max() < 1


def test_a_scrubbed_compact_weight_is_rebuilt_from_the_artifact(protected):
    runtime = load(protected("compact", "scrub"))
    clean = runtime.run(X)
    runtime.resident_memory["w1:indices"][3, 7] ^= np.uint8(1)
    assert runtime.scrub() == 1 and np.array_equal(runtime.run(X), clean)


def test_the_one_pass_check_of_single_examples_equals_clipping_where_written(protected):
    """Batch 1 gathers the bounded values and checks them once; a large batch checks each
    where it is written: the same logits (up to BLAS's batch-dependent summation order) and
    the same count of clipped values."""
    one_by_one, batched = load(protected("ranges")), load(protected("ranges"))
    for runtime in (one_by_one, batched):
        runtime.resident_memory["w1"][:, 5] = 30.0  # out of range for most examples
    singles = np.concatenate([one_by_one.run(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(singles, batched.run(X), rtol=1e-5, atol=1e-5)
    assert one_by_one.clipped_values == batched.clipped_values > 0


@pytest.mark.parametrize("outer", [False, True])
def test_values_that_do_not_scale_with_the_batch_are_checked_as_where_written(tmp_path, outer):
    """x -> Gemm(w3) -> direct (b, 3); the mean over the batch -> Gemm(w3) -> shift (1, 3),
    smaller than its slot beyond batch 1 (the check reads it broadcast); logits = direct +
    shift. With ``outer``, also the outer product x x^T flattened -> Gemm(w4) -> outer
    (b*b, 3), larger than its slot (the chunk is then checked where each value is written),
    whose mean over the batch is added too. Either way the logits and the count of clipped
    values are those of the check where each value is written."""
    nodes = [{"op": "Gemm", "in": ["x", "w3"], "out": ["direct"]},
             {"op": "ReduceMean", "in": ["x", "batch_axis"], "out": ["mean"]},
             {"op": "Gemm", "in": ["mean", "w3"], "out": ["shift"]},
             {"op": "Add", "in": ["direct", "shift"], "out": ["logits" if not outer else "sum"]}]
    if outer:
        nodes += [{"op": "Transpose", "in": ["x"], "out": ["xt"]},
                  {"op": "MatMul", "in": ["x", "xt"], "out": ["square"]},
                  {"op": "Reshape", "in": ["square", "column"], "out": ["flat"]},
                  {"op": "Gemm", "in": ["flat", "w4"], "out": ["outer"]},
                  {"op": "ReduceMean", "in": ["outer", "batch_axis"], "out": ["outer_mean"]},
                  {"op": "Add", "in": ["sum", "outer_mean"], "out": ["logits"]}]
    graph = {**MLP_GRAPH, "nodes": nodes}
    tensors = {"w3": W2[:40], "w4": np.array([[0.01, -0.02, 0.03]], np.float32),
               "column": np.array([-1, 1]), "batch_axis": np.array([0])}
    path = tmp_path / "unscaled.sca"
    path.write_bytes(encode_artifact(graph, tensors, {"task": "tiny",
                                                      "class_names": ["a", "b", "c"]}))
    protect_artifact(path, ["ranges"], X[:8])
    for batch in (1, 4):
        gathered, where_written = load(path), load(path)
        assert set(gathered.protection.ranges) == {"direct", "shift", *["outer"] * outer}
        x = X[8 : 8 + batch] * 3  # beyond the calibration's ranges
        logits = gathered.run(x)
        np.testing.assert_array_equal(logits, where_written._run_chunk(x, gathered=False))
        assert gathered.clipped_values == where_written.clipped_values > 0
        assert (gathered._gathers[batch] is None) == (outer and batch > 1)


def test_protected_memory_counts_in_the_planned_peak(protected):
    bare, tables = load(mlp()), load(protected("ranges", "tables"))
    extra = tables.plan.resident_bytes - bare.plan.resident_bytes
    assert extra > 0 and tables.peak_buffer_bytes - bare.peak_buffer_bytes == extra


def test_bounds_must_name_values_the_program_writes():
    with pytest.raises(ValueError, match="'w1' is not a float value the program writes"):
        load(mlp()).restrict_activations({"w1": (0.0, 1.0)})


def test_a_large_stored_tensor_that_is_no_layers_weight_is_a_triplicated_table(tmp_path):
    """A positional encoding (1 x 30 x 40 = 1,200 elements) added to the input: a table; the
    layer's weight matrix of 40 x 1,100 = 44,000 elements: a block."""
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 30, 40]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 1100]}],
             "nodes": [{"op": "Add", "in": ["x", "pe"], "out": ["h"]},
                       {"op": "MatMul", "in": ["h", "w"], "out": ["y"]},
                       {"op": "ReduceMean", "in": ["y", "axes"], "out": ["logits"],
                        "attrs": {"keepdims": 0}}]}
    tensors = {"pe": RNG.normal(size=(1, 30, 40)).astype(np.float32),
               "w": RNG.normal(size=(40, 1100)).astype(np.float32),
               "axes": np.array([1], np.int64)}
    path = tmp_path / "model.sca"
    path.write_bytes(encode_artifact(graph, tensors, {"task": "tiny", "class_names": []}))
    protect_artifact(path, ["tables"], RNG.normal(size=(4, 30, 40)).astype(np.float32))
    memory = load(path).resident_memory
    assert {"pe#0", "pe#1", "pe#2", "axes#2"} <= set(memory) and "pe" not in memory
    assert "w" in memory and "w#0" not in memory


def test_stored_bounds_are_widened_one_float32_step_as_the_runtime_clips_to_them(protected):
    low, high = widened(-0.25, 3.0)
    assert low.dtype == high.dtype == np.float32
    assert low < np.float32(-0.25) and np.nextafter(low, np.float32(1)) == np.float32(-0.25)
    assert high > np.float32(3.0) and np.nextafter(high, np.float32(0)) == np.float32(3.0)
    flight = load(protected("ranges"))
    stored = flight.protection.ranges
    expected = np.array([widened(*stored[name]) for name in stored], np.float32)
    np.testing.assert_array_equal(np.stack([flight.resident_memory["bounds:low"],
                                            flight.resident_memory["bounds:high"]], 1), expected)


def odd_values() -> list[np.ndarray]:
    """Layer outputs as kernels may return them (C order, transposed, strided; float32 or
    float64), some in [-1, 1], some with NaN, an infinity, -0.0, a value at a widened bound
    or (float64) just beyond it."""
    low, high = widened(-1.0, 1.0)
    base = np.random.default_rng(5).uniform(-0.9, 0.9, size=(1, 6, 8))
    specials = [None, np.nan, -np.nan, np.inf, -np.inf, -0.0, 1.5, -1.5, float(low),
                float(high), np.nextafter(float(high), 2.0), np.nextafter(float(low), -2.0)]
    values = []
    for dtype in (np.float32, np.float64):
        for special in specials:
            value = base.astype(dtype)
            if special is not None:
                value[0, 4, 5] = special
            values += [value, value.transpose(0, 2, 1), value[:, ::2, 1:]]
    return values


@pytest.mark.parametrize("nonnegative", [False, True])
def test_a_value_checked_where_written_passes_exactly_when_its_reductions_lie_in_bounds(
        nonnegative):
    """The check by argmin/argmax gives the verdict of np.minimum/maximum.reduce (NaN
    failing), whatever the value's layout or float dtype; a failing value is clipped (in
    place) and counted, a passing one left as it is."""
    runtime = load(mlp())
    runtime.restrict_activations({"logits": (-1.0, 1.0)})
    check = runtime._range_check(0, True, nonnegative)
    low, high = runtime.resident_memory["bounds:low"], runtime.resident_memory["bounds:high"]
    for value in odd_values():
        value = np.abs(value) if nonnegative else value
        kept = value.copy()
        reduced = (nonnegative or low[0] <= np.minimum.reduce(value, None)) and (
            np.maximum.reduce(value, None) <= high[0])
        before = runtime.clipped_values
        with np.errstate(invalid="ignore"):
            result = check(value, low.tolist(), high.tolist())
        assert result is value and (runtime.clipped_values == before) == bool(reduced)
        if reduced:
            np.testing.assert_array_equal(result, kept)
        else:
            assert np.isfinite(result).all() and low[0] <= result.min() <= result.max() <= high[0]


@pytest.mark.parametrize("last, first, within", [
    (0.5, 2.0, True), (np.nan, 2.0, False), (1.0, 2.0, False), (0.5, 0.0, False),
    (0.5, 5.0, False), (-np.inf, 2.0, False)])
def test_the_gathered_check_passes_only_when_every_value_lies_strictly_within(last, first,
                                                                               within):
    check = RangeCheck(3, {0: ((1, 4), 0.0, 5.0), 2: ((1, 2), -1.0, 1.0)})
    check.slots[0][...] = [[first, 1.0, 2.0, 3.0]]
    check.slots[2][...] = [[0.0, last]]
    assert check.slots[1] is None and check.within() is within
