"""Broker tests. A package (unlike the other test folders) so that its conftest.py is imported
as ``broker.conftest`` and does not shadow ``tests/conftest.py``, which other test modules
import as ``conftest``."""
