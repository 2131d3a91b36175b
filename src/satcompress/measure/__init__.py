"""One way of measuring every model at every stage: science metrics and resource use."""

from satcompress.measure import metrics

__all__ = ["metrics"]
