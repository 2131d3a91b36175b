"""A compress run with a target: limits from the profile, verdict on the built firmware."""

from __future__ import annotations

import json

from test_runner import REGISTERED, trained  # noqa: F401 (the runner tests' tiny task fixture)

from satcompress.firmware import TARGETS, missing_tools
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.firmware import target_budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import run_recipe


def test_a_target_sets_the_memory_limits_the_budget_leaves_open():
    samv71 = TARGETS["samv71"]
    filled = target_budget(Budget.parse("max_metric_drop=accuracy:0.1"), samv71)
    assert filled.max_bytes == samv71.flash_bytes and filled.max_ram_bytes == samv71.ram_bytes
    assert target_budget(Budget(max_bytes=1000), samv71).max_bytes == 1000
    assert target_budget(Budget(), TARGETS["host"]) == Budget()


def test_with_a_target_bytes_and_ram_are_the_firmwares(trained, tmp_path):  # noqa: F811
    samv71 = TARGETS["samv71"]
    recipe = Recipe("int8", (REGISTERED["post_training_quantize"](quantize_activations=False),))
    result = run_recipe(trained, recipe, target_budget(Budget(), samv71), tmp_path,
                        latency_repeats=3, target=samv71)
    exported = json.loads((tmp_path / "firmware" / "firmware.json").read_text())
    assert (tmp_path / "firmware" / "model.c").is_file() and result.firmware == exported
    report = json.loads((tmp_path / "stages.json").read_text())
    assert report["firmware"]["target"]["name"] == "samv71"
    assert "## Firmware" in (tmp_path / "report.md").read_text()
    if missing_tools(samv71, emulate=True):
        assert exported["skipped"]
        assert result.flight.theoretical_bytes == result.verification.size_bytes
        return
    firmware = exported["firmware"]
    assert result.flight.theoretical_bytes == firmware["flash_bytes"]
    assert result.flight.peak_ram_bytes == firmware["ram_bytes"] == (
        firmware["static_ram_bytes"] + firmware["stack_bytes"])
    assert firmware["bit_identical_to_host_build"]
    assert firmware["differing_predictions_vs_numpy"] == 0
