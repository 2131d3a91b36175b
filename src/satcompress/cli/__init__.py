"""The ``satcompress`` command line."""

from satcompress.cli.app import app, main

__all__ = ["app", "main"]
