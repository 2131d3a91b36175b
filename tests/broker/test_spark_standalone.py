"""``classify-alerts`` on a real Spark standalone cluster (a master and a worker on 127.0.0.1)
writes exactly the in-process results, for ZTF and LSST alerts; left to itself it picks the
engine and says which."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pandas.testing as pdt
import pytest
from typer.testing import CliRunner

from satcompress.broker import bundled_alert_paths, standalone_cluster
from satcompress.cli import app

needs_java = pytest.mark.skipif(
    not os.environ.get("JAVA_HOME") and shutil.which("java") is None,
    reason="Java is missing: Spark needs Java 17 (apt-get install openjdk-17-jre-headless, or "
           "set JAVA_HOME)")

QUICK_JVMS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
"""Short-lived JVMs on a few cores start in about half the time without the optimising JIT."""
COMMAND = "import sys; from satcompress.cli import main; sys.argv[0] = 'satcompress'; main()"


@needs_java
def test_the_cluster_path_writes_exactly_the_in_process_results(real_data_dir, elasticc,
                                                                tiny_artifact, tmp_path,
                                                                monkeypatch):
    inputs = {"ztf": list(map(str, bundled_alert_paths())),  # 78 of the 175 classified
              "lsst": [str(elasticc[0])]}  # 40 ELAsTiCC alerts, six passbands
    options = ["--artifact", str(tiny_artifact), "--max-age-days", "0"]
    for survey, files in inputs.items():
        result = CliRunner().invoke(app, ["classify-alerts", *files, *options, "--out",
                                          str(tmp_path / f"{survey}-local.parquet"),
                                          "--no-spark"])
        assert result.exit_code == 0, result.output
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", QUICK_JVMS)
    with standalone_cluster(tmp_path / "cluster", workers=1) as master:
        for survey, files in inputs.items():
            run = subprocess.run([sys.executable, "-c", COMMAND, "classify-alerts", *files,
                                  *options, "--master", master, "--out",
                                  str(tmp_path / f"{survey}-cluster.parquet")],
                                 capture_output=True, text=True, timeout=240, check=False)
            assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    executors = (tmp_path / "cluster" / "worker-0").glob("app-*/*/stderr")
    assert len({path.parent.parent for path in executors}) == 2, "an app ran no executor there"
    for survey in inputs:
        summary = json.loads((tmp_path / f"{survey}-cluster.json").read_text())
        assert summary["engine"] == f"spark {master}" and summary["engine_reason"] == "--master"
        assert summary["survey"] == survey
        pdt.assert_frame_equal(pd.read_parquet(tmp_path / f"{survey}-cluster.parquet"),
                               pd.read_parquet(tmp_path / f"{survey}-local.parquet"),
                               check_exact=True)
    assert json.loads((tmp_path / "ztf-cluster.json").read_text())["counts"]["classified"] == 78
    assert json.loads((tmp_path / "lsst-cluster.json").read_text())["counts"]["classified"] > 0


def test_left_to_itself_the_command_classifies_few_alerts_in_process(real_data_dir,
                                                                    tiny_artifact, tmp_path):
    for backend in ("numpy", "c"):
        out = tmp_path / f"{backend}.parquet"
        result = CliRunner().invoke(app, [
            "classify-alerts", str(bundled_alert_paths()[0]), "--artifact", str(tiny_artifact),
            "--max-age-days", "0", "--backend", backend, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "engine: pandas (in process) (auto:" in " ".join(result.output.split())
        summary = json.loads((tmp_path / f"{backend}.json").read_text())
        assert summary["engine"] == "pandas (in process)" and summary["backend"] == backend
    numpy, c = (pd.read_parquet(tmp_path / f"{name}.parquet") for name in ("numpy", "c"))
    pdt.assert_frame_equal(c, numpy, atol=1e-5)  # the C code: the same within float rounding
