"""satcompress: compress trained PyTorch models to fit satellites and alert brokers.

Importing the package is cheap and torch-free (the flight path imports it);
``satcompress.compress``, ``satcompress.search`` and ``satcompress.prepare`` load the
pipeline on first use (:mod:`satcompress.api`). See the README for the layout.
"""

from typing import Any

__all__ = ["__version__", "compress", "prepare", "search"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("compress", "prepare", "search"):
        from satcompress import api

        return getattr(api, name)
    raise AttributeError(f"module 'satcompress' has no attribute {name!r}")
