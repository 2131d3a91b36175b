"""Your own model, end to end: a zoo of user-written models (``benchmarks/zoo.py``), each
trained in plain PyTorch here and compressed through the public API or the CLI.

    export SATCOMPRESS_DATA_DIR=/work/shared/data
    .venv/bin/python benchmarks/your_own_model.py --seeds 0 1 --resnet-seeds 0 1 2 3 4 \
        --alternatives                      # the README's numbers
    .venv/bin/python benchmarks/your_own_model.py --quick          # a smoke run, minutes

``--only MODEL ...`` runs some models (``--merge`` keeps the others' rows from the results
file), ``--recipe MODEL=RECIPE`` tries another recipe, ``--alternatives`` also compresses the
seed-0 ResNet with the other recipes of :data:`ALTERNATIVES`.

For each model, as a user would: build the data, train (Adam, class-weighted cross-entropy,
early stopping on the validation loss with the best weights kept, seeds fixed), save the state
dict, then compress --

* ``resnet18_1d`` (transient light curves, weighted log loss) FROM THE CLI:
  ``satcompress compress --model benchmarks.zoo:resnet18_1d --weights W --data train.npz
  --val-data val.npz --test-data test.npz --metric weighted_log_loss --recipe
  benchmarks/resnet18-1d.toml --budget max_bytes=<1.67% of its float32 bytes>,
  max_metric_drop=weighted_log_loss:0.02`` (the budget is the target: the CLI refuses an
  artifact that misses it, exit status 2);
* ``flare_mlp`` (the SHARP flare table, TSS) FROM THE CLI on a CSV of the raw SHARP keys,
  label, region and the task's own region split, trained on standardised features and
  compressed with ``--standardize``, so the artifact takes the raw CSV features;
* ``rapid_gru``, ``transformer`` (light curves) and ``blob_cnn`` (synthetic 16 x 16 images,
  accuracy) through ``satcompress.compress(model, (train, val, test), ...)``.

Reported per model: float32 bytes (4 x parameters), artifact bytes (``model.sca`` on disk,
everything stored, Reed-Solomon parity included), their ratio, the metric of the model and of
the artifact (the runtime's own probabilities, from the run's verification), the wall time of
the compress step and the test predictions where the artifact and the compressed PyTorch
model differ (``verification.differing_predictions``). Writes
``benchmarks/results/your_own_model.json`` (``--quick``: a small smoke run, written to the
work folder instead) and prints the table. Work files go to ``out/your_own_model``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `benchmarks.zoo`, as `--model benchmarks.zoo:...` imports it
    sys.path.insert(0, str(ROOT))

import satcompress  # noqa: E402
from benchmarks import zoo  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "your_own_model.json"
RESNET_RECIPE = ROOT / "benchmarks" / "resnet18-1d.toml"
TARGET_FRACTION = 0.0167
"""Feng et al. (2023)'s published compressed size: 1.67% of the teacher's float32 bytes."""
TARGET_LOSS_INCREASE = 0.02
THREADS = 1

MODELS = ("resnet18_1d", "rapid_gru", "transformer", "flare_mlp", "blob_cnn")
RECIPES = {
    "resnet18_1d": str(RESNET_RECIPE.relative_to(ROOT)),
    "rapid_gru": "assembled-t2",
    "transformer": "assembled-t2",
    "flare_mlp": "assembled",
    "blob_cnn": "deep-compression",
}
TRAINING = {  # plain-PyTorch training of each model: Adam, early stopping on validation loss
    "resnet18_1d": dict(lr=1e-3, batch_size=64, epochs=40, patience=8, weight_decay=1e-4),
    "rapid_gru": dict(lr=3e-3, batch_size=64, epochs=80, patience=10, weight_decay=0.0),
    "transformer": dict(lr=1e-3, batch_size=64, epochs=80, patience=10, weight_decay=1e-4),
    "flare_mlp": dict(lr=1e-3, batch_size=128, epochs=100, patience=10, weight_decay=1e-4),
    "blob_cnn": dict(lr=3e-3, batch_size=64, epochs=40, patience=6, weight_decay=0.0),
}


# ------------------------------------------------------------------------------------------
# Training, as a user writes it
# ------------------------------------------------------------------------------------------


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Balanced weights ``n / (k * count_c)`` (scikit-learn's ``class_weight='balanced'``)."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    return torch.tensor(len(y) / (n_classes * np.maximum(counts, 1)), dtype=torch.float32)


def train(build, train_xy, val_xy, n_classes: int, *, seed: int, lr: float,
          batch_size: int, epochs: int, patience: int, weight_decay: float = 0.0
          ) -> tuple[nn.Module, dict]:
    """Seed, ``build()`` the model, then Adam on class-weighted cross-entropy; stop after
    ``patience`` epochs without a lower (class-weighted) validation loss and keep the best
    epoch's weights."""
    torch.manual_seed(seed)  # before building: the initial weights come from this seed
    model = build()
    rng = np.random.default_rng(seed)
    x, y = torch.from_numpy(train_xy[0]), torch.from_numpy(train_xy[1])
    xv, yv = torch.from_numpy(val_xy[0]), torch.from_numpy(val_xy[1])
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train_xy[1], n_classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch, waited, started = float("inf"), None, 0, 0, time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(y)))
        for start in range(0, len(y), batch_size):
            batch = order[start:start + batch_size]
            if len(batch) < 2:  # BatchNorm needs two examples
                continue
            optimiser.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(chunk) for chunk in xv.split(256)])
            val_loss = float(loss_fn(logits, yv))
        if val_loss < best - 1e-4:
            best, best_state, best_epoch, waited = val_loss, copy.deepcopy(
                model.state_dict()), epoch + 1, 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.load_state_dict(best_state)
    return model.eval(), {"epochs_run": epoch + 1, "best_epoch": best_epoch,
                          "best_val_loss": round(best, 4),
                          "train_seconds": round(time.perf_counter() - started, 1)}


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------


def transient_splits(quick: bool):
    """The transient task's train/val/test splits (GP light curves ``(n, 100, 4)``)."""
    from satcompress.tasks.registry import get_task

    data = get_task("transients").load(seed=0)
    parts = [data.train, data.val, data.test]
    if quick:
        parts = [_head_per_class(part, 40 if i == 0 else 16) for i, part in enumerate(parts)]
    return parts, tuple(data.class_names)


def _head_per_class(part, n: int):
    rows = np.concatenate([np.flatnonzero(part.y == c)[:n] for c in np.unique(part.y)])
    return type(part)(x=part.x[rows], y=part.y[rows], groups=part.groups[rows])


def save_npz(folder: Path, parts, class_names) -> list[Path]:
    """The splits as a user hands them to the CLI: one ``.npz`` per split (an ``.npz`` has
    no split column), with x, y, groups (the ZTF object) and class_names."""
    paths = []
    for name, part in zip(("train", "val", "test"), parts):
        path = folder / f"{name}.npz"
        np.savez(path, x=part.x, y=part.y, groups=np.asarray(part.groups).astype(str),
                 class_names=np.asarray(class_names))
        paths.append(path)
    return paths


def flare_table(quick: bool) -> pd.DataFrame:
    """The SHARP flare records as a user holds them: raw SHARP keys, label, active region
    and the task's own region split (60/20/20, stratified, seed 0)."""
    from satcompress.tasks import flares

    frame = flares.read_records().frame
    rows = flares.split_by_region(frame, seed=0)
    split = np.empty(len(frame), dtype=object)
    for name, part in zip(("train", "val", "test"), rows):
        split[part] = name
    table = frame[list(flares.SHARP_KEYS)].assign(
        label=frame[flares.LABEL_COLUMN].to_numpy(), region=frame[flares.REGION_COLUMN].to_numpy(),
        split=split)
    if quick:
        table = table[table.region.isin(np.unique(table.region)[::6])]
    return table.reset_index(drop=True)


def blob_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """16 x 16 images of three classes: a Gaussian blob, horizontal stripes, vertical stripes
    (random position, frequency, phase, contrast), under Gaussian noise."""
    rng = np.random.default_rng(seed)
    grid = np.arange(16, dtype=np.float64)
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    y = rng.permutation(np.arange(n) % 3)
    x = np.empty((n, 1, 16, 16), dtype=np.float32)
    for i, label in enumerate(y):
        contrast = rng.uniform(0.4, 1.0)
        if label == 0:
            centre, width = rng.uniform(3, 13, size=2), rng.uniform(1.5, 3.5)
            image = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) / (2 * width**2))
        else:
            axis = rows if label == 1 else cols
            image = 0.5 + 0.5 * np.sin(2 * np.pi * axis / rng.uniform(3, 8) + rng.uniform(0, 6.3))
        x[i, 0] = contrast * image + rng.normal(0, 0.6, size=(16, 16))
    return x, y.astype(np.int64)


# ------------------------------------------------------------------------------------------
# Compression and the numbers
# ------------------------------------------------------------------------------------------


def cli(arguments: list[str]) -> tuple[int, str, float]:
    """Run ``satcompress ARGUMENTS`` from the repository root (where ``benchmarks.zoo`` is
    importable); exit status, output and wall time."""
    executable = Path(sys.executable).with_name("satcompress")
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    started = time.perf_counter()
    done = subprocess.run([str(executable), *arguments], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


def command_line(arguments: list[str]) -> str:
    return "satcompress " + " ".join(
        str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a for a in arguments)


def run_numbers(out: Path, metric: str, parameters: int, seconds: float) -> dict:
    """The row of one run, read back from its ``stages.json`` (an artifact that breaks the
    budget is ``rejected/model.sca``)."""
    stages = json.loads((out / "stages.json").read_text())
    verification = stages["artifact"]["verification"]
    artifact = Path(verification["artifact"])
    float_bytes = 4 * parameters
    return {
        "parameters": parameters,
        "float32_bytes": float_bytes,
        "artifact_bytes": artifact.stat().st_size,
        "ratio_percent": round(100 * artifact.stat().st_size / float_bytes, 3),
        "metric": metric,
        "metric_model": stages["stages"][0]["metrics"][metric],
        "metric_artifact": verification["metrics"][metric],
        "metric_compressed_torch": verification["framework_metrics"][metric],
        "compress_seconds": round(seconds, 1),
        "differing_predictions": verification["differing_predictions"],
        "test_examples": verification["examples"],
        "max_abs_logit_difference": verification["max_abs_logit_difference"],
        "fits_budget": stages["fits_budget"],
        "compressed_parameters": stages["stages"][-1]["parameters"],
        "stages": [{"stage": s["stage"], "parameters": s["parameters"],
                    metric: s["metrics"][metric]} for s in stages["stages"]],
        "artifact": str(artifact.relative_to(ROOT) if artifact.is_relative_to(ROOT) else artifact),
    }


def api_numbers(result, metric: str, parameters: int, seconds: float) -> dict:
    return run_numbers(result.out_dir, metric, parameters, seconds)


def reseeded_recipe(recipe: str, seed: int, folder: Path) -> str:
    """``recipe`` (a TOML file) with every stage's ``seed`` set to ``seed``."""
    if seed == 0:
        return recipe
    from satcompress.pipeline.recipe import Recipe
    import dataclasses

    loaded = Recipe.load(str(ROOT / recipe) if (ROOT / recipe).is_file() else recipe)
    stages = tuple(dataclasses.replace(c, seed=seed) if hasattr(c, "seed") else c
                   for c in loaded.stages)
    path = folder / f"recipe-seed{seed}.toml"
    dataclasses.replace(loaded, stages=stages).save(path)
    return str(path)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------
# The five models
# ------------------------------------------------------------------------------------------


def train_resnet(work: Path, seed: int, quick: bool, transients) -> tuple[Path, int, dict]:
    """Train the ResNet-18 layout teacher; its folder holds train/val/test ``.npz`` and
    ``weights.pt``. Returns the folder, its parameter count and the training log."""
    parts, class_names = transients
    folder = work / f"resnet18_1d-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    save_npz(folder, parts, class_names)
    settings = dict(TRAINING["resnet18_1d"], **({"epochs": 2} if quick else {}))
    model, log = train(zoo.resnet18_1d, (parts[0].x, parts[0].y), (parts[1].x, parts[1].y), 5,
                       seed=seed, **settings)
    torch.save(model.state_dict(), folder / "weights.pt")
    return folder, n_parameters(model), log


def compress_resnet(folder: Path, parameters: int, recipe: str, tag: str = "out") -> dict:
    """``satcompress compress`` of the teacher in ``folder`` with ``recipe`` under the target
    as the budget, then ``satcompress verify`` of an artifact that fits."""
    data = [str(folder / f"{name}.npz") for name in ("train", "val", "test")]
    factory = "benchmarks.zoo:resnet18_1d"
    max_bytes = int(TARGET_FRACTION * 4 * parameters)
    out = folder / tag
    shutil.rmtree(out, ignore_errors=True)
    arguments = ["compress", "--model", factory, "--weights", str(folder / "weights.pt"),
                 "--data", data[0], "--val-data", data[1], "--test-data", data[2],
                 "--metric", "weighted_log_loss", "--recipe", recipe,
                 "--budget", f"max_bytes={max_bytes},max_metric_drop=weighted_log_loss:"
                 f"{TARGET_LOSS_INCREASE}", "--out", str(out)]
    status, output, seconds = cli(arguments)
    if status not in (0, 2):  # 2: the artifact breaks the budget (kept as rejected/model.sca)
        raise RuntimeError(f"{command_line(arguments)} failed ({status}):\n{output[-3000:]}")
    row = run_numbers(out, "weighted_log_loss", parameters, seconds)
    row.update(model="resnet18_1d", interface="CLI", command=command_line(arguments),
               exit_status=status, budget_max_bytes=max_bytes)
    if status == 0:
        verify = ["verify", row["artifact"], "--data", data[0], "--val-data", data[1],
                  "--test-data", data[2], "--model", factory]
        verify_status, verify_output, _ = cli(verify)
        row["cli_verify"] = {"command": command_line(verify), "exit_status": verify_status,
                             "output": verify_output.strip().splitlines()[-2:]}
    return row


def run_resnet(work: Path, seed: int, quick: bool, transients) -> dict:
    folder, parameters, log = train_resnet(work, seed, quick, transients)
    recipe = reseeded_recipe(RECIPES["resnet18_1d"], seed, folder)
    row = compress_resnet(folder, parameters, recipe)
    row.update(seed=seed, training=log, recipe=RECIPES["resnet18_1d"] + (
        f" (stage seeds {seed})" if seed else ""))
    return row


ALTERNATIVES = {  # other recipes measured on the seed-0 teacher (--alternatives)
    "assembled": None,  # shipped
    "assembled-int8": """
name = "assembled-int8"
description = "assembled with int8 weights in place of the clusters"
[[stage]]
stage = "dynamic_kd"
target_parameter_fraction = 0.1
epochs = 30
patience_epochs = 8
[[stage]]
stage = "structured_prune"
mac_reduction = 2.0
importance = "taylor"
[[stage]]
stage = "post_training_quantize"
weight_bits = 8
quantize_activations = false
""",
    "hinton_kd-ptq-int4": """
name = "hinton_kd-ptq-int4"
description = "resnet18-1d with post-training int4 in place of quantization-aware training"
[[stage]]
stage = "hinton_kd"
target_parameter_fraction = 0.1
depth_multiplier = 0.5
epochs = 60
patience_epochs = 15
[[stage]]
stage = "post_training_quantize"
weight_bits = 4
quantize_activations = false
""",
}


def run_alternatives(work: Path, quick: bool, transients) -> list[dict]:
    """Other recipes on the seed-0 teacher (trained again if absent), for the README."""
    folder = work / "resnet18_1d-seed0"
    if not (folder / "weights.pt").is_file():
        train_resnet(work, 0, quick, transients)
    parameters = n_parameters(zoo.resnet18_1d())
    rows = []
    for name, text in ALTERNATIVES.items():
        recipe = name
        if text is not None:
            recipe = str(folder / f"{name}.toml")
            Path(recipe).write_text(text.lstrip())
        print(f"== resnet18_1d seed 0, recipe {name}", flush=True)
        row = compress_resnet(folder, parameters, recipe, tag=f"out-{name}")
        row.update(seed=0, recipe=name, recipe_toml=text)
        rows.append(row)
    return rows


def run_flare_mlp(work: Path, seed: int, quick: bool) -> dict:
    folder = work / f"flare_mlp-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    table = flare_table(quick)
    csv = folder / "flares.csv"
    table.to_csv(csv, index=False)
    features = [c for c in table.columns if c not in ("label", "region", "split")]
    train_rows = table[table.split == "train"]
    mean = train_rows[features].to_numpy().mean(axis=0)
    std = train_rows[features].to_numpy().std(axis=0)  # StandardScaler: population std

    def xy(name):
        part = table[table.split == name]
        x = ((part[features].to_numpy() - mean) / std).astype(np.float32)
        return x, part.label.to_numpy(np.int64)

    settings = dict(TRAINING["flare_mlp"], **({"epochs": 3} if quick else {}))
    model, log = train(zoo.flare_mlp, xy("train"), xy("val"), 2, seed=seed, **settings)
    weights = folder / "weights.pt"
    torch.save(model.state_dict(), weights)
    recipe = reseeded_recipe(RECIPES["flare_mlp"], seed, folder)
    out = folder / "out"
    shutil.rmtree(out, ignore_errors=True)
    arguments = ["compress", "--model", "benchmarks.zoo:flare_mlp", "--weights", str(weights),
                 "--data", str(csv), "--split-column", "split", "--group-column", "region",
                 "--standardize", "--metric", "tss", "--recipe", recipe, "--out", str(out)]
    status, output, seconds = cli(arguments)
    if status != 0:
        raise RuntimeError(f"{command_line(arguments)} failed ({status}):\n{output[-3000:]}")
    row = run_numbers(out, "tss", n_parameters(model), seconds)
    row.update(model="flare_mlp", seed=seed, recipe=RECIPES["flare_mlp"], interface="CLI",
               command=command_line(arguments), exit_status=status, training=log)
    return row


def run_api(name: str, work: Path, seed: int, quick: bool, transients) -> dict:
    """``rapid_gru``, ``transformer`` and ``blob_cnn``: trained here, then
    ``satcompress.compress(model, (train, val, test), ...)``."""
    folder = work / f"{name}-seed{seed}"
    if name == "blob_cnn":
        x, y = blob_images(600 if quick else 3000, seed=0)
        cut = np.cumsum([int(0.6 * len(y)), int(0.2 * len(y))])
        parts = [(x[:cut[0]], y[:cut[0]]), (x[cut[0]:cut[1]], y[cut[0]:cut[1]]),
                 (x[cut[1]:], y[cut[1]:])]
        build, metric, class_names = zoo.blob_cnn, "accuracy", ("blob", "rows", "columns")
    else:
        splits, class_names = transients
        parts = [(part.x, part.y, np.asarray(part.groups).astype(str)) for part in splits]
        build = zoo.rapid_gru if name == "rapid_gru" else zoo.transformer
        metric = "weighted_log_loss"
    settings = dict(TRAINING[name], **({"epochs": 2} if quick else {}))
    model, log = train(build, parts[0][:2], parts[1][:2], len(class_names), seed=seed,
                       **settings)
    recipe = reseeded_recipe(RECIPES[name], seed, folder.parent)
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    torch.set_num_threads(1)  # as the CLI runs the stages
    result = satcompress.compress(model, tuple(parts), metric=metric, recipe=recipe,
                                  out=folder, class_names=class_names, seed=seed)
    seconds = time.perf_counter() - started
    torch.set_num_threads(THREADS)
    row = api_numbers(result, metric, n_parameters(model), seconds)
    row.update(model=name, seed=seed, recipe=RECIPES[name], interface="Python API",
               training=log)
    return row


# ------------------------------------------------------------------------------------------
# Table
# ------------------------------------------------------------------------------------------

DESCRIPTIONS = {
    "resnet18_1d": "(a) ResNet-18 layout 1-D CNN, transients",
    "rapid_gru": "(b) RAPID-style 2-layer GRU, transients",
    "transformer": "(c) nn.TransformerEncoder, transients",
    "flare_mlp": "(d) nn.Sequential MLP, flare CSV (raw SHARP in)",
    "blob_cnn": "(e) 2-D CNN, synthetic 16x16 images",
}


def table(rows: list[dict]) -> str:
    lines = ["| model | interface | recipe | seed | parameters | float32 bytes | artifact bytes "
             "| ratio | metric | model | artifact | compress wall time | differing predictions |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {DESCRIPTIONS[row['model']]} | {row['interface']} | `{row['recipe']}` | "
            f"{row['seed']} | {row['parameters']:,} | {row['float32_bytes']:,} | "
            f"{row['artifact_bytes']:,} | {row['ratio_percent']:.2f}% | {row['metric']} | "
            f"{row['metric_model']:.4f} | {row['metric_artifact']:.4f} | "
            f"{row['compress_seconds']:.0f} s | {row['differing_predictions']} / "
            f"{row['test_examples']} |")
    return "\n".join(lines)


def resnet_summary(rows: list[dict]) -> dict | None:
    runs = [row for row in rows if row["model"] == "resnet18_1d"]
    if not runs:
        return None
    ratio = np.array([row["ratio_percent"] for row in runs])
    increase = np.array([row["metric_artifact"] - row["metric_model"] for row in runs])
    return {
        "seeds": [row["seed"] for row in runs],
        "ratio_percent_mean": round(float(ratio.mean()), 3),
        "ratio_percent_spread": round(float(ratio.std()), 3),
        "loss_increase_mean": round(float(increase.mean()), 4),
        "loss_increase_spread": round(float(increase.std()), 4),
        "loss_increase_each": [round(float(v), 4) for v in increase],
        "target": f"<= {100 * TARGET_FRACTION:.2f}% of float32 bytes, weighted log loss "
                  f"<= teacher + {TARGET_LOSS_INCREASE}",
        "holds_each": [bool(r <= 100 * TARGET_FRACTION and i <= TARGET_LOSS_INCREASE)
                       for r, i in zip(ratio, increase)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--resnet-seeds", type=int, nargs="+", default=None,
                        help="seeds of the ResNet (default: --seeds)")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "your_own_model")
    parser.add_argument("--alternatives", action="store_true",
                        help="also compress the seed-0 ResNet with the other recipes measured")
    parser.add_argument("--recipe", action="append", default=[], metavar="MODEL=RECIPE",
                        help="compress MODEL with RECIPE (a shipped name or a TOML file)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the rows of models not run now from the existing results")
    args = parser.parse_args(argv)
    for override in args.recipe:
        name, _, recipe = override.partition("=")
        if name not in RECIPES or not recipe:
            parser.error(f"--recipe {override}: give MODEL=RECIPE with MODEL one of {MODELS}")
        RECIPES[name] = recipe
    torch.set_num_threads(THREADS)
    work = args.work / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    transients = transient_splits(args.quick) if args.alternatives or set(args.only) & {
        "resnet18_1d", "rapid_gru", "transformer"} else None
    rows = []
    for name in args.only:
        seeds = args.resnet_seeds if name == "resnet18_1d" and args.resnet_seeds else args.seeds
        for seed in seeds:
            print(f"== {name} seed {seed}", flush=True)
            if name == "resnet18_1d":
                row = run_resnet(work, seed, args.quick, transients)
            elif name == "flare_mlp":
                row = run_flare_mlp(work, seed, args.quick)
            else:
                row = run_api(name, work, seed, args.quick, transients)
            print(json.dumps({k: row[k] for k in ("parameters", "artifact_bytes",
                                                  "ratio_percent", "metric_model",
                                                  "metric_artifact", "compress_seconds",
                                                  "differing_predictions")}), flush=True)
            rows.append(row)
    alternatives = run_alternatives(work, args.quick, transients) if args.alternatives else []
    results = RESULTS if not args.quick else work / "your_own_model.json"
    if args.merge and results.is_file():
        previous = json.loads(results.read_text())
        kept = [row for row in previous["rows"] if row["model"] not in args.only]
        rows = sorted(kept + rows, key=lambda r: (MODELS.index(r["model"]), r["seed"]))
        alternatives = alternatives or previous.get("resnet18_1d_alternatives", [])
    command = ("SATCOMPRESS_DATA_DIR=../shared/data .venv/bin/python "
               "benchmarks/your_own_model.py " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]))
    commands = [command]
    if args.merge and results.is_file():  # the rows kept came from the earlier commands
        commands = previous.get("commands", [previous.get("command")]) + commands
    summary = {
        "commands": commands,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "threads": THREADS,
        "rows": rows,
        "resnet18_1d_target": resnet_summary(rows),
        "resnet18_1d_alternatives": alternatives,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(summary, indent=2) + "\n")
    print(table(rows))
    if alternatives:
        print(table(alternatives))
    if summary["resnet18_1d_target"]:
        print(json.dumps(summary["resnet18_1d_target"], indent=2))


if __name__ == "__main__":
    main()
