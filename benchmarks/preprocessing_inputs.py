"""Do two light-curve preprocessings give the model the same inputs? (issue 18)

    .venv/bin/python benchmarks/preprocessing_inputs.py \
        --cache v3=/tmp/wll/cache_before v4=/tmp/wll/cache_final \
        --artifact v3-trained=/tmp/wll/before/model.sca v4-trained=/tmp/wll/final/model.sca

Each ``--cache`` is a ``SATCOMPRESS_CACHE_DIR`` whose ``preprocessed/`` holds the transient
task's cached GP arrays (written by a ``compress --task transients`` run with that code);
each ``--artifact`` a compressed transient classifier. Prints (1) per-object maximum absolute
differences between the first cache's inputs and each other's, by source, and (2) the weighted
log loss, macro F1 and SN Ia vs rest AUC of every artifact on every cache's real ZTF test split
(the task's split, seed 0), so the effect of the preprocessing on a fixed model is measured
apart from the noise of retraining. Torch-free (the NumPy runtime).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from satcompress import runtime
from satcompress.report import markdown_table
from satcompress.tasks import transients


def named(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, path)."""
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def cached_arrays(cache: Path) -> dict[str, np.ndarray]:
    """The single preprocessed-array file of a cache folder."""
    files = sorted((cache / "preprocessed").glob("transients_gp_*.npz"))
    if len(files) != 1:
        raise SystemExit(f"{cache}/preprocessed holds {len(files)} transient caches; need one.")
    with np.load(files[0], allow_pickle=False) as stored:
        return {name: stored[name] for name in ("x", "labels", "object_ids", "sources")}


def test_split(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, classes and ids of the task's real ZTF test split (as ``transients.load``)."""
    classes = np.array([transients.label_to_class(label) for label in arrays["labels"]])
    real = np.flatnonzero(arrays["sources"] == "ztf")
    _, _, test = transients.split_objects(classes[real].astype(np.int64), seed=0)
    rows = real[test]
    return arrays["x"][rows], classes[rows].astype(np.int64), arrays["object_ids"][rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=named, nargs="+", required=True)
    parser.add_argument("--artifact", type=named, nargs="+", required=True)
    options = parser.parse_args()
    caches = {name: cached_arrays(path) for name, path in options.cache}
    (reference_name, reference), *others = caches.items()
    rows = []
    for name, arrays in others:
        if not np.array_equal(arrays["object_ids"], reference["object_ids"]):
            raise SystemExit(f"{name} keeps other objects than {reference_name}.")
        difference = np.abs(arrays["x"] - reference["x"]).reshape(len(arrays["x"]), -1).max(1)
        for source in ("ztf", "elasticc"):
            part = difference[reference["sources"] == source]
            rows.append({"inputs": f"{name} vs {reference_name}", "source": source,
                         "objects": len(part), "median": float(np.median(part)),
                         "p90": float(np.quantile(part, 0.9)),
                         "within_0.01": float(np.mean(part <= 0.01)),
                         "within_0.05": float(np.mean(part <= 0.05))})  # fmt: skip
    print(markdown_table([{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                          for row in rows]))  # fmt: skip
    splits = {name: test_split(arrays) for name, arrays in caches.items()}
    scores = []
    for artifact_name, path in options.artifact:
        model = runtime.load(path)
        for cache_name, (x, y, _) in splits.items():
            result = transients.score(None, None, model.predict_proba(x), y)
            scores.append({"model": artifact_name, "inputs": cache_name, "test_objects": len(y),
                           "weighted_log_loss": round(result["weighted_log_loss"], 4),
                           "macro_f1": round(result["macro_f1"], 4),
                           "ia_vs_rest_auc": round(result["ia_vs_rest_auc"], 4)})  # fmt: skip
    print(markdown_table(scores))


if __name__ == "__main__":
    main()
