"""The flight path (task preprocessing, data layer, metrics) runs where there is no PyTorch."""

from __future__ import annotations

import subprocess
import sys

FLIGHT_MODULES = [
    "satcompress.data",
    "satcompress.measure.metrics",
    "satcompress.tasks.flares",
    "satcompress.tasks.transients",
    "satcompress.tasks.lightcurves",
    "satcompress.progress",
    "satcompress.tasks.user",
    "satcompress.tasks.registry",
    "satcompress.fileio",
    "satcompress.entropy",
    "satcompress.artifact",
    "satcompress.runtime",
    "satcompress.broker",
    "satcompress.radiation",
    "satcompress.codegen",
    "satcompress.firmware",
    "satcompress.firmware.emulate",
    "satcompress.firmware.export",
    "satcompress.predict",
]


def test_flight_modules_never_import_torch():
    code = (
        "import importlib, sys\n"
        f"for name in {FLIGHT_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "print(len(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "0", "a flight-path module imports torch"
