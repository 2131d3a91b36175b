"""The per-layer table of a (compressed) model, read off its modules.

Every module that owns parameters directly (``recurse=False``: linear and convolution layers,
fake-quantized layers, normalisation layers, embeddings) is one row. What each stage leaves
on the model tells the compressed form:

* sparsity: exact zeros of the layer's parameters (pruning stages leave pruned weights at 0);
* bits: the width the layer declares for its weight in ``stored_bits``
  (:data:`satcompress.measure.STORED_BITS_ATTRIBUTE`: quantized and clustered layers), else the
  dtype's of its largest parameter;
* clusters: the length of a clustered layer's codebook buffer
  (:data:`satcompress.cluster.CODEBOOK_BUFFER`);
* rank: from the low-rank stage's report, for the factors of a factorized layer (an
  ``nn.Sequential`` at the original layer's name).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from satcompress.cluster.weight_clustering import CODEBOOK_BUFFER
from satcompress.lowrank.stage import LOWRANK_REPORT_ATTRIBUTE
from satcompress.measure import STORED_BITS_ATTRIBUTE

__all__ = ["layer_rows"]


def _factor_ranks(model: nn.Module) -> dict[str, str]:
    """Module-name prefix of every factorized layer -> its ranks, as text."""
    report = getattr(model, LOWRANK_REPORT_ATTRIBUTE, None) or {}
    return {f"{name}.": "x".join(str(rank) for rank in entry["ranks"])
            for name, entry in report.get("layers", {}).items()}


def _weight_bits(module: nn.Module, own: list[nn.Parameter]) -> int:
    """The declared width of ``weight``, else the dtype width of the largest own parameter."""
    declared = getattr(module, STORED_BITS_ATTRIBUTE, None) or {}
    if "weight" in declared:
        return int(declared["weight"])
    return max(own, key=torch.numel).element_size() * 8


def layer_rows(model: nn.Module) -> list[dict[str, Any]]:
    """One row per module owning parameters: its name, type, parameters, sparsity, weight bits,
    clusters and rank (blank where the layer is not clustered or factorized).

    A parameter shared by several modules is counted in the first only.
    """
    ranks = _factor_ranks(model)
    seen: set[int] = set()
    rows = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if id(p) not in seen]
        if not own:
            continue
        seen.update(id(p) for p in own)
        total = sum(p.numel() for p in own)
        with torch.no_grad():
            nonzero = sum(int(torch.count_nonzero(p)) for p in own)
        codebook = getattr(module, CODEBOOK_BUFFER, None)
        rank = next((text for prefix, text in ranks.items() if name.startswith(prefix)), "")
        rows.append({
            "layer": name or "(root)",
            "type": type(module).__name__,
            "params": total,
            "nonzero": nonzero,
            "sparsity_%": round(100.0 * (1.0 - nonzero / total), 2),
            "weight_bits": _weight_bits(module, own),
            "clusters": len(codebook) if isinstance(codebook, torch.Tensor) else "",
            "rank": rank,
        })
    return rows
