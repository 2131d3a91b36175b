"""satcompress: compress trained PyTorch models to fit satellites and alert brokers.

Importing the package is cheap and torch-free; see the README for the layout.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
