"""One way of measuring every model at every stage: science metrics and resource use.

:mod:`~satcompress.measure.metrics` is NumPy-only (the flight path scores with it) and
:mod:`~satcompress.measure.uncertainty` (paired intervals of a metric's drop) torch-free;
:class:`Measurement` and :func:`measure` need torch and are imported on first use, so that
importing the metrics never pulls torch in (PEP 562 module ``__getattr__``).
"""

from importlib import import_module

from satcompress.measure import metrics, uncertainty

_TORCH_NAMES = (
    "Measurement",
    "measure",
    "count_macs",
    "count_parameters",
    "serialized_bytes",
    "theoretical_bytes",
    "peak_ram_bytes",
    "latency_ms",
    "latency_samples_ms",
    "MacCountWarning",
    "STORED_BITS_ATTRIBUTE",
)

__all__ = ["metrics", "uncertainty", *_TORCH_NAMES]


def __getattr__(name: str):
    if name in _TORCH_NAMES:
        return getattr(import_module("satcompress.measure.measurement"), name)
    raise AttributeError(f"module 'satcompress.measure' has no attribute {name!r}")
