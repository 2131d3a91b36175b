"""The default recipe for your own model (issue 16): a small plain MLP, every shipped recipe.

    SATCOMPRESS_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/default_recipe.py [--seeds 3]

A user's model as users write them: a plain ``nn.Module`` (8 -> 64 -> 64 -> 2, 4,866
parameters) trained by hand (Adam, 300 full-batch steps) on a synthetic non-linear problem
of 900 rows (8 Gaussian features, label ``x0 x1 + x2 / 2 - x3^2 + 0.8 > 0``), split 60/20/20,
then ``satcompress.compress`` with each shipped recipe that runs on it, side by side. Per
recipe over the seeds (each seed redraws the data and retrains): artifact bytes, test accuracy
of the artifact and of the base model (mean +- sd), and the runs where a stage lost most of the
base model's skill over chance (the run's ``warnings``). Writes
``benchmarks/results/default_recipe.json`` and prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import satcompress
from satcompress.fileio import atomic_write_text
from satcompress.report import markdown_table

RESULTS = Path(__file__).parent / "results" / "default_recipe.json"
RECIPES = ("general", "int8", "tinho", "deep-compression", "assembled")
ROWS, FEATURES = 900, 8


class PlainMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(FEATURES, 64), nn.ReLU(), nn.Linear(64, 64),
                                  nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def user_data(seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = ((x[:, 0] * x[:, 1] + 0.5 * x[:, 2] - x[:, 3] ** 2 + 0.8) > 0).astype(np.int64)
    cut = (int(0.6 * ROWS), int(0.8 * ROWS))
    return (x[:cut[0]], y[:cut[0]]), (x[cut[0]:cut[1]], y[cut[0]:cut[1]]), (x[cut[1]:], y[cut[1]:])


def trained_by_hand(train: tuple, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = PlainMLP()
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    for _ in range(300):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


def main(n_seeds: int) -> None:
    torch.set_num_threads(1)
    runs: dict[str, list[dict]] = {recipe: [] for recipe in RECIPES}
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(n_seeds):
            splits = user_data(seed)
            model = trained_by_hand(splits[0], seed)
            for recipe in RECIPES:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # counted from the result
                    result = satcompress.compress(model, splits, recipe=recipe, seed=seed,
                                                  out=Path(scratch) / f"{recipe}-{seed}")
                runs[recipe].append({
                    "seed": seed, "bytes": result.verification.size_bytes,
                    "base_accuracy": result.measurements[0].metrics["accuracy"],
                    "accuracy": result.flight.metrics["accuracy"],
                    "warned": bool(result.warnings)})
    rows = [{"recipe": recipe,
             "artifact bytes (mean)": round(float(np.mean([r["bytes"] for r in done]))),
             "base accuracy": f"{np.mean([r['base_accuracy'] for r in done]):.3f} "
                              f"+- {np.std([r['base_accuracy'] for r in done], ddof=1):.3f}",
             "artifact accuracy": f"{np.mean([r['accuracy'] for r in done]):.3f} "
                                  f"+- {np.std([r['accuracy'] for r in done], ddof=1):.3f}",
             "runs warned": f"{sum(r['warned'] for r in done)} / {len(done)}"}
            for recipe, done in runs.items()]
    RESULTS.parent.mkdir(exist_ok=True)
    atomic_write_text(RESULTS, json.dumps(
        {"runs": runs, "rows": rows, "float32_bytes": 4 * sum(
            p.numel() for p in PlainMLP().parameters()),
         "machine": platform.processor() or platform.machine(),
         "torch": torch.__version__}, indent=2) + "\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    main(parser.parse_args().seeds)
