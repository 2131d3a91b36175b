"""Fault injection in the generated C (issue 17): bits flipped in what the compiled library
holds in RAM, its predict run, the memory restored after every trial; deterministic for a
seed, and the triplicated tables outvote every flip of one copy."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from satcompress.artifact import encode_artifact
from satcompress.radiation import Campaign, c_runtime, protect_artifact, run_campaign
from tiny_mlp_graph import MLP_GRAPH

pytestmark = pytest.mark.skipif(not shutil.which("cc"), reason="no C compiler (cc)")

RNG = np.random.default_rng(3)
X = RNG.normal(size=(48, 40)).astype(np.float32)
TENSORS = {"w1": np.array([-0.3, -0.1, 0.1, 0.3], np.float32)[RNG.integers(0, 4, (40, 64))],
           "b1": RNG.normal(size=64).astype(np.float32),
           "w2": RNG.normal(size=(64, 3)).astype(np.float32)}
RAM = 2**20
"""RAM for weight tables: the 2,560-weight clustered matrix (over the tables' 1,024-element
limit, so not a table) is decoded into RAM at init."""


def mlp(folder, protect: tuple[str, ...]) -> bytes:
    """x (40) -> Gemm(w1 clustered, b1) -> Relu -> Gemm(w2) -> logits (3), with ``protect``."""
    path = folder / f"{'-'.join(protect) or 'bare'}.sca"
    path.write_bytes(encode_artifact(MLP_GRAPH, TENSORS, {"task": "tiny"}))
    protect_artifact(path, protect, X)
    return path.read_bytes()


def changed_predictions(content: bytes, ram_bytes: int):
    """Scorer: the share of predictions that differ from the clean compiled code's."""
    clean = c_runtime(content, ram_bytes).run(X).argmax(1)
    return lambda probabilities: float(np.mean(probabilities.argmax(1) != clean))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inject-c")
    return {protect: mlp(folder, protect) for protect in (("scrub",), ("tables", "scrub"))}


def test_a_c_campaign_is_deterministic_for_a_seed_and_restores_the_memory(artifacts):
    content = artifacts[("scrub",)]  # no vote, no clip: flips in the RAM weights matter
    held = c_runtime(content, RAM)
    assert set(held.resident_memory) == {"ram#0"}
    before = {name: block.copy() for name, block in held.resident_memory.items()}
    score = changed_predictions(content, RAM)
    campaign = Campaign(flips=(1, 5), trials=30, seed=4, backend="c", ram_bytes=RAM)
    first = run_campaign(content, X, score, campaign).to_dict()
    assert first == run_campaign(content, X, score, campaign).to_dict()
    assert first["campaign"]["backend"] == "c" and [r["trials"] for r in first["summary"]] \
        == [30, 30]
    other = Campaign(flips=(1, 5), trials=30, seed=5, backend="c", ram_bytes=RAM)
    assert run_campaign(content, X, score, other).to_dict() != first
    assert all(np.array_equal(block, before[name])  # every trial undone in the library
               for name, block in held.resident_memory.items())
    np.testing.assert_array_equal(held.run(X).argmax(1), c_runtime(content, RAM).run(X).argmax(1))


def test_top_exponent_flips_in_the_ram_weights_change_predictions_unless_tables_vote(artifacts):
    """The same RAM weight table in both builds: top-exponent flips in it change predictions;
    with ``tables`` every flip that lands in one copy of the tables changes none."""
    campaign = Campaign(flips=(1,), bits="exponent_top", trials=60, seed=0, backend="c",
                        ram_bytes=RAM)
    bare = run_campaign(artifacts[("scrub",)], X,
                        changed_predictions(artifacts[("scrub",)], RAM), campaign)
    assert bare.summary_rows()[0]["mean_drop"] > 0
    content = artifacts[("tables", "scrub")]
    layers = run_campaign(content, X, changed_predictions(content, RAM), campaign).layer_rows()
    tables = [row for row in layers if row["tensor"].startswith("tables#")]
    assert {row["tensor"] for row in layers} == {"tables#0", "tables#1", "tables#2", "ram#0"}
    assert all(row["mean_drop"] == 0 for row in tables) and sum(r["trials"] for r in tables)


def test_every_single_flip_in_the_dense_builds_tables_is_outvoted(artifacts):
    """Dense weights are read-only data: the tables' copies are all the RAM there is."""
    content = artifacts[("tables", "scrub")]
    for bits in ("exponent_top", "any"):
        campaign = Campaign(flips=(1,), bits=bits, trials=40, seed=1, backend="c")
        summary = run_campaign(content, X, changed_predictions(content, 0),
                               campaign).summary_rows()[0]
        assert summary["mean_drop"] == 0 and summary["non_finite_rate"] == 0


def test_code_with_nothing_in_ram_is_one_clear_error(artifacts, tmp_path):
    bare = mlp(tmp_path, ())
    with pytest.raises(ValueError, match="nothing in RAM"):
        run_campaign(bare, X, changed_predictions(bare, 0),
                     Campaign(flips=(1,), trials=2, backend="c"))
    with pytest.raises(ValueError, match="protect='stored'"):
        Campaign(backend="c", protect="ranger")
    with pytest.raises(ValueError, match="backend='c' only"):
        Campaign(ram_bytes=10)
