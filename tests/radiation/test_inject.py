"""Fault injection: deterministic for a seed, flips exactly the bits asked for, undoes them,
and measures what a flip does to a tiny classifier whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from satcompress.artifact import encode_artifact
from satcompress.radiation import Campaign, fault_probabilities, run_campaign
from satcompress.radiation.inject import _flip_weights, _undo
from satcompress.runtime import load
from satcompress.runtime.graph import GRAPH_FORMAT

X = np.array([[1.0, 0.0], [0.0, 1.0]] * 8, dtype=np.float32)
Y = np.array([0, 1] * 8)


def classifier(fec: bool = False) -> bytes:
    """logits = x @ W (the identity): example i is class Y[i], with a margin of 1."""
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
             "nodes": [{"op": "Gemm", "in": ["x", "w"], "out": ["logits"]}]}
    return encode_artifact(graph, {"w": np.eye(2, dtype=np.float32)}, {"task": "tiny"}, fec=fec)


def error_rate(probabilities: np.ndarray) -> float:
    """The drop of accuracy from the clean model's 1.0."""
    return float(np.mean(probabilities.argmax(1) != Y))


def test_a_campaign_is_deterministic_for_a_seed_and_differs_across_seeds():
    campaign = Campaign(flips=(1, 3), trials=40, seed=7)
    first = run_campaign(classifier(), X, error_rate, campaign).to_dict()
    assert first == run_campaign(classifier(), X, error_rate, campaign).to_dict()
    other = Campaign(flips=(1, 3), trials=40, seed=8)
    assert run_campaign(classifier(), X, error_rate, other).to_dict() != first


def test_flips_hit_only_the_bit_class_asked_for_and_are_undone():
    runtime = load(classifier())
    tensors = runtime.resident_memory
    clean = {name: array.copy() for name, array in tensors.items()}
    rng = np.random.default_rng(0)
    for _ in range(50):
        flipped, _ = _flip_weights(tensors, ["w"], "exponent_top", 1, rng)
        changed = tensors["w"].view(np.uint32) ^ clean["w"].view(np.uint32)
        assert sorted(changed[changed != 0].tolist()) == [1 << 30]
        _undo(tensors, flipped)
        assert all(np.array_equal(tensors[n].view(np.uint8), clean[n].view(np.uint8))
                   for n in clean)


def test_a_top_exponent_flip_of_an_identity_weight_breaks_the_classifier():
    """Flipping bit 30 of 1.0 gives inf, of 0.0 gives 2.0: every trial changes predictions."""
    result = run_campaign(classifier(), X, error_rate,
                          Campaign(flips=(1,), bits="exponent_top", trials=20))
    summary = result.summary_rows()[0]
    assert summary["trials"] == 20 and summary["mean_drop"] > 0
    non_finite = result.results[0].non_finite_trials
    assert 0 < non_finite < 20  # the 1.0 entries (inf * 0 = NaN) but not the 0.0 ones
    assert result.layer_rows()[0]["tensor"] == "w"


def test_mantissa_flips_of_a_margin_of_one_never_change_a_prediction():
    result = run_campaign(classifier(), X, error_rate,
                          Campaign(flips=(1, 5), bits="mantissa", trials=20))
    assert all(row["p_drop_over_threshold"] == 0 and row["non_finite_rate"] == 0
               for row in result.summary_rows())


def test_file_flips_are_refused_without_fec_and_repaired_with_it():
    unprotected = run_campaign(classifier(), X, error_rate,
                               Campaign(flips=(1,), where="file", trials=20))
    assert unprotected.summary_rows()[0]["refused_rate"] == 1.0
    protected = run_campaign(classifier(fec=True), X, error_rate,
                             Campaign(flips=(1,), where="file", trials=20))
    row = protected.summary_rows()[0]
    assert row["refused_rate"] == 0 and row["repaired_rate"] == 1.0 and row["mean_drop"] == 0


def test_non_finite_logits_are_scored_as_the_first_class_and_flagged():
    probabilities, bad = fault_probabilities(np.array([[np.nan, 1.0], [0.0, 2.0]]))
    assert bad and probabilities[0].tolist() == [1.0, 0.0]
    assert probabilities[1].argmax() == 1


@pytest.mark.parametrize("bad, message", [
    ({"flips": ()}, "flips must be positive"),
    ({"where": "cache"}, "where must be one of"),
    ({"bits": "exponent", "where": "file"}, "A file has no float exponents"),
    ({"trials": 0}, "trials must be a positive"),
    ({"threshold": float("nan")}, "threshold must be a finite"),
])
def test_a_bad_campaign_is_refused_naming_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        Campaign(**bad)


def test_the_runtime_reads_its_resident_memory_at_every_run():
    runtime = load(classifier())
    runtime.resident_memory["w"][...] = 0
    assert np.array_equal(runtime.run(X), np.zeros((16, 2), dtype=np.float32))


def relu_net() -> bytes:
    """h = relu(x @ W1), logits = h @ W2: two layers, so a hidden activation can be bounded."""
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 2]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
             "nodes": [{"op": "Gemm", "in": ["x", "w1"], "out": ["pre"]},
                       {"op": "Relu", "in": ["pre"], "out": ["hidden"]},
                       {"op": "Gemm", "in": ["hidden", "w2"], "out": ["logits"]}]}
    tensors = {"w1": np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]], dtype=np.float32),
               "w2": np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=np.float32)}
    return encode_artifact(graph, tensors, {"task": "tiny"})


def test_activation_ranges_are_the_extremes_over_the_calibration_inputs():
    ranges = load(relu_net()).activation_ranges(X)
    assert ranges["hidden"] == (0.0, 1.0) and ranges["logits"] == (0.0, 1.0)


def test_range_restriction_clips_and_counts_what_a_flip_blows_up_and_maps_nan_to_low():
    runtime = load(relu_net())
    runtime.restrict_activations(runtime.activation_ranges(X))
    assert np.array_equal(runtime.run(X), load(relu_net()).run(X))  # clean: unchanged
    assert runtime.clipped_values == 0
    runtime.resident_memory["w1"][1, 2] = 3e38  # the 0.5 with its top exponent bit flipped
    logits = runtime.run(X)
    assert np.isfinite(logits).all() and logits.max() <= np.nextafter(np.float32(1), 2)
    assert runtime.clipped_values == 8  # the hidden unit of the 8 examples with x[1] = 1
    assert (logits.argmax(1) == Y).all()
    runtime.resident_memory["w2"][...] = np.nan
    with np.errstate(invalid="ignore"):
        logits = runtime.run(X)
    assert (logits == np.nextafter(np.float32(0), np.float32(-1))).all()  # NaN: the low bound


def test_ranger_removes_the_corruptions_that_top_exponent_flips_cause_here():
    campaign = Campaign(flips=(1,), bits="exponent_top", trials=30, protect="none")
    bare = run_campaign(relu_net(), X, error_rate, campaign).summary_rows()[0]
    protected = run_campaign(relu_net(), X, error_rate,
                             Campaign(flips=(1,), bits="exponent_top", trials=30,
                                      protect="ranger"), calibration_x=X).summary_rows()[0]
    assert bare["p_drop_over_threshold"] > 0.3
    assert protected["non_finite_rate"] == 0 and protected["clipped_values"] > 0
    assert protected["p_drop_over_threshold"] < bare["p_drop_over_threshold"]


def test_ranger_needs_calibration_inputs():
    with pytest.raises(ValueError, match="needs calibration inputs"):
        run_campaign(relu_net(), X, error_rate, Campaign(flips=(1,), protect="ranger"))
