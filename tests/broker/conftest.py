"""Broker fixtures: the bundled alerts, a few ELAsTiCC alerts, tiny transient artifacts (one
whose logits overflow on some alerts), one SparkSession."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from satcompress import broker
from satcompress.tasks import transients


def tiny_transient_metadata() -> dict:
    """Metadata of a transient artifact, as task_metadata writes it (only what the broker reads)."""
    return {
        "task": "transients",
        "class_names": list(transients.CLASS_NAMES),
        "input_shape": [transients.N_TIMESTEPS, transients.N_GP_CHANNELS],
        "input_dtype": "float32",
        "preprocessing": {"config": json.loads(json.dumps(asdict(transients.PreprocessingConfig())))},
        "preprocessing_version": transients.PREPROCESSING_VERSION,
    }


def _write_artifact(model, path):
    """``model`` as a transient flight artifact at ``path``."""
    import torch

    from satcompress.pipeline.flight import build_artifact

    example = torch.zeros(1, transients.N_TIMESTEPS, transients.N_GP_CHANNELS)
    build_artifact(model, example, tiny_transient_metadata(), path)
    return path


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """A 2.4k-parameter T2 on the task's (100, 4) inputs with 5 classes, as a flight artifact."""
    import torch

    from satcompress.networks import T2Transformer

    torch.manual_seed(0)
    model = T2Transformer(n_timesteps=transients.N_TIMESTEPS, n_channels=transients.N_GP_CHANNELS,
                          n_classes=len(transients.CLASS_NAMES), d_model=16, n_heads=2, ff_dim=32,
                          n_blocks=1, dropout=0.0).eval()
    return _write_artifact(model, tmp_path_factory.mktemp("artifact") / "model.sca")


@pytest.fixture(scope="session")
def faulty_artifact(bundled, tmp_path_factory):
    """A linear classifier whose SN Ia logit is a huge multiple of the sum of the GP mean in g
    over the time grid: infinite (a fault) on the bundled alerts where that sum exceeds its
    median, finite elsewhere."""
    import torch
    from torch import nn

    config = broker.preprocessing_config(tiny_transient_metadata())
    prepared = broker.preprocess_alerts(bundled.table, config, broker.SelectionCuts(None, None))
    total = np.abs(prepared.x[:, :, 0].astype(np.float64).sum(axis=1))
    torch.manual_seed(0)
    head = nn.Linear(transients.N_TIMESTEPS * transients.N_GP_CHANNELS,
                     len(transients.CLASS_NAMES))
    with torch.no_grad():
        head.weight[0] = 0.0
        head.weight[0, 0 :: transients.N_GP_CHANNELS] = 3.0e38 / float(np.median(total))
    model = nn.Sequential(nn.Flatten(), head).eval()
    return _write_artifact(model, tmp_path_factory.mktemp("faulty") / "model.sca")


@pytest.fixture(scope="session")
def bundled(real_data_dir):
    """The 175 registered raw ZTF alerts (Fink's Parquet form), read and flattened."""
    return broker.read_alerts(broker.bundled_alert_paths())


ELASTICC_FILE = "transients/elasticc_sim/classId=111/part-0-0.parquet"
N_ELASTICC_ALERTS = 40


@pytest.fixture(scope="session")
def elasticc(real_data_dir, tmp_path_factory):
    """The first :data:`N_ELASTICC_ALERTS` alerts of a real ELAsTiCC file (SN Ia), written to a
    small Parquet file in a ``classId=111`` folder (as the task reads them): (path, raw
    records)."""
    import pyarrow.parquet as pq

    table = pq.read_table(real_data_dir / ELASTICC_FILE).slice(0, N_ELASTICC_ALERTS)
    folder = tmp_path_factory.mktemp("elasticc") / "classId=111"
    folder.mkdir()
    pq.write_table(table, folder / "part.parquet")
    return folder / "part.parquet", table.select(["diaSource", "prvDiaSources"]).to_pylist()


@pytest.fixture(scope="session")
def spark():
    """One embedded SparkSession for every Spark test (start-up takes 10-20 s)."""
    session = broker.spark_session("local[2]")
    yield session
    session.stop()


def _nullable(kind: str) -> list:
    return ["null", kind]


_POINT_FIELDS = [
    {"name": "jd", "type": "double"},
    {"name": "fid", "type": "int"},
    {"name": "candid", "type": _nullable("long"), "default": None},
    {"name": "magpsf", "type": _nullable("float"), "default": None},
    {"name": "sigmapsf", "type": _nullable("float"), "default": None},
    {"name": "isdiffpos", "type": _nullable("string"), "default": None},
]
ZTF_ALERT_SCHEMA = {
    "namespace": "ztf",
    "type": "record",
    "name": "alert",
    "doc": "The fields of the ZTF alert packet (schema 3.3) that the broker reads.",
    "fields": [
        {"name": "schemavsn", "type": "string"},
        {"name": "objectId", "type": "string"},
        {"name": "candid", "type": "long"},
        {"name": "candidate", "type": {
            "type": "record", "name": "candidate", "fields": [
                *_POINT_FIELDS,
                {"name": "jdstarthist", "type": _nullable("double"), "default": None},
                {"name": "ssdistnr", "type": _nullable("float"), "default": None},
                {"name": "ssmagnr", "type": _nullable("float"), "default": None},
            ]}},
        {"name": "prv_candidates", "type": ["null", {"type": "array", "items": {
            "type": "record", "name": "prv_candidate", "fields": _POINT_FIELDS}}],
         "default": None},
    ],
}  # fmt: skip


@pytest.fixture(scope="session")
def write_avro():
    """Write alert records (dicts as pyarrow gives them) as a ZTF Avro file with fastavro."""
    import fastavro

    schema = fastavro.parse_schema(ZTF_ALERT_SCHEMA)

    def write(path, records):
        with open(path, "wb") as stream:
            fastavro.writer(stream, schema, [dict(record, schemavsn="3.3") for record in records])
        return path

    return write


@pytest.fixture(scope="session")
def raw_records(real_data_dir):
    """The raw records of the first bundled file (51 alerts), as pyarrow reads them."""
    import pyarrow.parquet as pq

    path = broker.bundled_alert_paths()[0]
    return pq.read_table(path, columns=["objectId", "candid", "candidate", "prv_candidates"]).to_pylist()
