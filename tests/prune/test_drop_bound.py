"""Drop-bound pruning: the validation bound always holds, the report matches the model."""

from __future__ import annotations

import pytest
import torch

from conftest import make_blobs, make_sequences, tiny_mlp, tiny_t2
from satcompress import stages
from satcompress.measure.metrics import best_tss_threshold, binary_scores, weighted_log_loss
from satcompress.networks import ResidualMLP
from satcompress.finetune import register_validation_metric, validation_metrics, validation_score
from satcompress.prune import DropBoundPruneConfig, StructuredPruner, prune_report, units_to_remove
from satcompress.training import TrainConfig, fit, predict_proba


def _trained(model, data, epochs=15):
    return fit(model, data, TrainConfig(max_epochs=epochs, batch_size=32, learning_rate=1e-2,
                                        patience_epochs=epochs))


@pytest.fixture(scope="module")
def trained_mlp():
    data = make_blobs()
    return _trained(tiny_mlp(), data), data


@pytest.fixture(scope="module")
def trained_binary_mlp():
    data = make_blobs(n_classes=2, n_per_class=80, seed=1)
    torch.manual_seed(0)
    model = ResidualMLP(n_features=6, n_classes=2, width=16, depth=2, dropout=0.0)
    return _trained(model, data), data


@pytest.fixture(scope="module")
def trained_t2():
    data = make_sequences()
    return _trained(tiny_t2(), data, epochs=10), data


def _check_report(result, data, config, base):
    report = prune_report(result)
    final = validation_score(result, data, config.metric)
    assert report["final_val_score"] == final
    assert report["base_val_score"] == base
    drop = base - final if validation_metrics()[config.metric].higher_is_better else final - base
    assert drop <= config.max_drop  # the bound, on validation, never exceeded
    for entry in report["groups"]:
        assert entry["ratio"] == (entry["size_before"] - entry["size_after"]) / entry["size_before"]
        assert report["ratios"][entry["group"]] == entry["ratio"]
    return report


@pytest.mark.parametrize("search", ["largest_first", "bisection"])
@pytest.mark.parametrize("max_drop", [0.0, 0.02])
def test_accuracy_bound_holds(trained_mlp, search, max_drop):
    model, data = trained_mlp
    config = DropBoundPruneConfig(metric="accuracy", max_drop=max_drop, search=search,
                                  ratio_grid=(0.9, 0.75, 0.5, 0.25), finetune_epochs=1)
    base = validation_score(model, data, "accuracy")
    result = stages.apply(model, config, data)
    report = _check_report(result, data, config, base)
    sizes = {"stem": result.stem.out_features, "blocks.0.fc1": result.blocks[0].fc1.out_features,
             "blocks.1.fc1": result.blocks[1].fc1.out_features}
    assert {e["group"]: e["size_after"] for e in report["groups"]} == sizes
    assert sum(sizes.values()) < 48  # something was pruned: blobs are easy


def test_log_loss_bound_holds_on_t2(trained_t2):
    model, data = trained_t2
    config = DropBoundPruneConfig(metric="weighted_log_loss", max_drop=0.02, finetune_epochs=0)
    base = validation_score(model, data, "weighted_log_loss")
    assert base == pytest.approx(weighted_log_loss(data.val.y, predict_proba(model, data.val.x)))
    result = stages.apply(model, config, data)
    report = _check_report(result, data, config, base)
    assert result.blocks[0].attention.n_heads == report["groups"][0]["size_after"]
    # "as far as the bound allows": replaying the groups in order, the next larger ratio of
    # the grid would have broken the bound at every group that stopped short of the largest.
    pruner, state = StructuredPruner(torch.from_numpy(data.train.x[:1])), model
    for entry in report["groups"]:
        removed = entry["size_before"] - entry["size_after"]
        larger = [r for r in sorted(config.ratio_grid)
                  if units_to_remove(r, entry["size_before"]) > removed]
        if larger:
            too_far = pruner.prune(state, {entry["group"]: larger[0]})
            assert validation_score(too_far, data, config.metric) > base + config.max_drop
        state = pruner.prune(state, {entry["group"]: entry["ratio"]})
    assert validation_score(state, data, config.metric) == report["final_val_score"]
    assert any(entry["ratio"] > 0 for entry in report["groups"])


def test_tss_bound_holds_and_uses_a_validation_threshold(trained_binary_mlp):
    model, data = trained_binary_mlp
    probability = predict_proba(model, data.val.x)[:, 1]
    expected = binary_scores(data.val.y, probability,
                             best_tss_threshold(data.val.y, probability))["tss"]
    base = validation_score(model, data, "tss")
    assert base == pytest.approx(expected)
    config = DropBoundPruneConfig(metric="tss", max_drop=0.01, finetune_epochs=1)
    _check_report(stages.apply(model, config, data), data, config, base)


def test_custom_metrics_register_and_bad_settings_are_refused(trained_mlp):
    model, data = trained_mlp
    register_validation_metric(
        "test_top_probability", lambda labels, p: float(p.max(axis=1).mean()), True)
    assert validation_score(model, data, "test_top_probability") == pytest.approx(
        float(predict_proba(model, data.val.x).max(axis=1).mean()))
    with pytest.raises(ValueError, match="already registered"):
        register_validation_metric("tss", lambda labels, p: 0.0, True)
    with pytest.raises(ValueError, match="registered validation metric"):
        DropBoundPruneConfig(metric="f2")
    with pytest.raises(ValueError, match="ratio_grid"):
        DropBoundPruneConfig(ratio_grid=(1.5,))
    with pytest.raises(ValueError, match="max_drop"):
        DropBoundPruneConfig(max_drop=-0.1)
    with pytest.raises(ValueError, match="binary"):
        stages.apply(model, DropBoundPruneConfig(metric="tss"), data)
    with pytest.raises(ValueError, match="needs the task's data"):
        stages.apply(model, DropBoundPruneConfig(), None)
