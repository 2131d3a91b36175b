"""Target profiles, export-c, the C backend, and one cross-built firmware run on QEMU."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from satcompress import runtime
from satcompress.artifact import encode_artifact
from satcompress.cli.app import app
from satcompress.codegen import generate_c
from satcompress.firmware import TARGETS, CRuntime, get_target, missing_tools
from satcompress.firmware.emulate import run_firmware
from satcompress.firmware.export import RAM_TABLES_UNPROTECTED, ram_for_tables
from satcompress.firmware.host import build_host_library
from satcompress.radiation import protect_artifact
from satcompress.runtime import GRAPH_FORMAT

WIDTH = 24


def _flares_like() -> bytes:
    """A residual MLP like the flares ``assembled`` model in miniature: 25 features, clustered
    (16-value) weights, LayerNorm, ReLU, residual Add, two logits."""
    rng = np.random.default_rng(3)

    def clustered(rows: int, columns: int) -> np.ndarray:
        table = np.sort(rng.normal(0, 0.3, 16)).astype(np.float32)
        return table[rng.integers(0, 16, (rows, columns))]

    def vector(size: int, offset: float = 0.0) -> np.ndarray:
        return (rng.normal(0, 0.1, size) + offset).astype(np.float32)

    tensors = {"w0": clustered(WIDTH, 25), "b0": vector(WIDTH), "s1": vector(WIDTH, 1),
               "o1": vector(WIDTH), "w2": clustered(WIDTH, WIDTH), "b2": vector(WIDTH),
               "w3": clustered(WIDTH, WIDTH), "b3": vector(WIDTH), "s4": vector(WIDTH, 1),
               "o4": vector(WIDTH), "w5": clustered(2, WIDTH), "b5": vector(2)}
    nodes = [("Gemm", ["x", "w0", "b0"], ["h0"], {"transB": 1}),
             ("LayerNormalization", ["h0", "s1", "o1"], ["h1"], {}),
             ("Gemm", ["h1", "w2", "b2"], ["h2"], {"transB": 1}),
             ("Relu", ["h2"], ["h3"], {}),
             ("Gemm", ["h3", "w3", "b3"], ["h4"], {"transB": 1}),
             ("Add", ["h0", "h4"], ["h5"], {}),
             ("LayerNormalization", ["h5", "s4", "o4"], ["h6"], {}),
             ("Gemm", ["h6", "w5", "b5"], ["logits"], {"transB": 1})]
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 25]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 2]}],
             "nodes": [{"op": op, "in": i, "out": o, **({"attrs": a} if a else {})}
                       for op, i, o, a in nodes]}
    return encode_artifact(graph, tensors, {"task": "flares", "class_names": ["quiet", ">=M"]})


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    path = tmp_path_factory.mktemp("firmware") / "model.sca"
    path.write_bytes(_flares_like())
    return path


def _inputs(count: int = 12) -> np.ndarray:
    return np.random.default_rng(5).normal(0, 1.5, (count, 25)).astype(np.float32)


def _needs_cc() -> None:
    if not shutil.which("cc"):
        pytest.skip("no C compiler (cc) on this machine: install gcc")


def test_target_profiles_are_data():
    samv71 = get_target("samv71")
    assert samv71.flash_bytes == 2 * 1024 * 1024 and samv71.ram_bytes == 384 * 1024
    assert samv71.clock_hz == 300_000_000 and "-mfpu=fpv5-d16" in samv71.cflags
    assert {"-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"} <= set(samv71.cflags)
    assert TARGETS["cortex-m4"].qemu_machine == "mps2-an386"
    assert TARGETS["host"].flash_bytes is None and not TARGETS["host"].compressed_weights
    with pytest.raises(ValueError, match="Unknown target 'msp430'; choose one of samv71"):
        get_target("msp430")


def test_the_c_backend_gives_the_numpy_runtimes_logits(artifact):
    _needs_cc()
    reference = runtime.load(artifact)
    compiled = runtime.load(artifact, backend="c")
    assert isinstance(compiled, CRuntime) and compiled.class_names == ("quiet", ">=M")
    x = _inputs(40)
    np.testing.assert_allclose(compiled.run(x), reference.run(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(compiled.predict_proba(x).argmax(1), reference.run(x).argmax(1))
    with pytest.raises(runtime.InputError, match="shape"):
        compiled.run(x[:, :3])


def test_without_a_compiler_the_c_backend_falls_back_to_numpy(artifact, monkeypatch):
    monkeypatch.setattr("satcompress.firmware.host.shutil.which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="No C compiler .* running the NumPy runtime"):
        flight = runtime.load(artifact, backend="c")
    assert isinstance(flight, runtime.Runtime)
    with pytest.raises(ValueError, match="Unknown backend 'cuda'"):
        runtime.load(artifact, backend="cuda")


def test_export_c_for_the_host_writes_the_library(artifact, tmp_path):
    result = CliRunner().invoke(app, ["export-c", str(artifact), "--target", "host",
                                      "--out", str(tmp_path / "c"), "--prefix", "flares_"])
    assert result.exit_code == 0, result.output
    header = (tmp_path / "c" / "model.h").read_text()
    assert "int flares_predict(const float *input, float *output);" in header
    assert "#define FLARES_INPUT_SIZE 25" in header and "#define FLARES_OUTPUT_SIZE 2" in header
    report = json.loads((tmp_path / "c" / "firmware.json").read_text())
    assert report["source"]["weights"] == "dense" and report["target"]["name"] == "host"


def test_export_c_refuses_an_unknown_target_or_prefix(artifact, tmp_path):
    result = CliRunner().invoke(app, ["export-c", str(artifact), "--target", "avr",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 2 and "choose one of samv71" in result.output
    result = CliRunner().invoke(app, ["export-c", str(artifact), "--target", "host",
                                      "--prefix", "9x", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not a C identifier" in result.output


def test_export_c_decodes_weights_into_the_ram_left(artifact, tmp_path):
    result = CliRunner().invoke(app, ["export-c", str(artifact), "--target", "samv71",
                                      "--no-emulate", "--out", str(tmp_path / "ram")])
    assert result.exit_code == 0, result.output
    source = json.loads((tmp_path / "ram" / "firmware.json").read_text())["source"]
    tables = source["ram_tables"]
    assert {table["tensor"] for table in tables} == {"w0", "w2", "w3"}  # 16-value clustered
    assert source["ram_table_bytes"] == 4 * WIDTH * (25 + 2 * WIDTH)
    assert source["expected_speedup"] > 1 and "weights decoded into RAM" in result.output
    header = (tmp_path / "ram" / "model.h").read_text()
    assert f"RAM_TABLE_BYTES {source['ram_table_bytes']}" in header
    for options in (["--no-ram-tables"], ["--ram-limit", "64KiB"]):  # no room past the stack
        result = CliRunner().invoke(app, ["export-c", str(artifact), "--target", "samv71",
                                          "--no-emulate", "--out", str(tmp_path / "flash"),
                                          *options])
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / "flash" / "firmware.json").read_text())
        assert report["source"]["ram_tables"] == []


def _emulated_target():
    """The Cortex-M7 target, or a skip naming the Debian packages its cross build needs."""
    samv71 = TARGETS["samv71"]
    lacking = missing_tools(samv71, emulate=True)
    if lacking:
        pytest.skip(f"cross toolchain or emulator missing: install the Debian packages "
                    f"{', '.join(lacking)}")
    _needs_cc()
    return samv71


def test_the_firmware_runs_on_qemu_with_the_host_builds_outputs(artifact, tmp_path):
    """The one cross-built run: Cortex-M7 (mps2-an500), bit for bit the host build; with its
    weights decoded into RAM at init, the same logits in fewer instructions."""
    samv71 = _emulated_target()
    flight = runtime.load(artifact)
    source = generate_c(flight, compressed=samv71.compressed_weights)
    x = _inputs()
    report = run_firmware(source, samv71, x, tmp_path)
    host = CRuntime(flight, source, build_host_library(source)).run(x)
    np.testing.assert_array_equal(report.logits.view(np.uint32), host.view(np.uint32))
    np.testing.assert_array_equal(report.logits.argmax(1), flight.run(x).argmax(1))
    constants = source.constant_bytes
    assert constants < report.flash_bytes < constants + 8 * 1024  # code is a few KiB
    assert report.static_ram_bytes >= source.arena_bytes and 0 < report.stack_bytes < 4096
    macs = 25 * WIDTH + 2 * WIDTH * WIDTH + 2 * WIDTH
    assert macs < report.instructions < 100 * macs  # an estimate to 40 instructions
    assert report.estimated_ms == pytest.approx(report.instructions / 300e3)
    ram = generate_c(flight, compressed=True, ram_bytes=ram_for_tables(flight, samv71))
    decoded = run_firmware(ram, samv71, x, tmp_path / "ram")
    np.testing.assert_array_equal(decoded.logits.view(np.uint32), report.logits.view(np.uint32))
    assert decoded.static_ram_bytes >= report.static_ram_bytes + ram.ram_table_bytes
    assert decoded.instructions < report.instructions and decoded.init_instructions > 0


def _protected(artifact, folder):
    """The artifact with ranges, triplicated tables and scrubbing (ranges calibrated on the
    test inputs' distribution)."""
    path = folder / "protected.sca"
    shutil.copyfile(artifact, path)
    protect_artifact(path, ("ranges", "tables", "scrub"), _inputs(64))
    return path


def test_export_c_carries_the_artifacts_protection_into_the_c(artifact, tmp_path):
    path = _protected(artifact, tmp_path)
    for flag, names in (("--protection", ["ranges", "tables", "scrub"]), ("--no-protection", [])):
        out = tmp_path / str(bool(names))
        result = CliRunner().invoke(app, ["export-c", str(path), "--target", "host",
                                          "--out", str(out), flag])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "firmware.json").read_text())
        assert report["source"]["protection"] == names
        header = (out / "model.h").read_text()
        assert ("uint32_t scm_scrub(void);" in header) == bool(names)
        assert ("protection" in result.output) == bool(names)


def test_a_protected_artifacts_code_keeps_its_weights_in_flash_unless_asked(artifact,
                                                                            tmp_path):
    """RAM tables are float weights no protection covers: off by default for a protected
    artifact; asked for, they are built and the report warns."""
    path = _protected(artifact, tmp_path)
    for options, tables in (([], False), (["--ram-tables"], True), (["--no-protection"], True)):
        out = tmp_path / "-".join(options or ["default"])
        result = CliRunner().invoke(app, ["export-c", str(path), "--target", "samv71",
                                          "--no-emulate", "--out", str(out), *options])
        assert result.exit_code == 0, result.output
        report = json.loads((out / "firmware.json").read_text())
        assert bool(report["source"]["ram_tables"]) == tables
        warned = tables and "--no-protection" not in options
        assert report["warnings"] == ([RAM_TABLES_UNPROTECTED] if warned else [])
        assert ("warning" in result.output) == warned


def test_a_protected_build_runs_on_qemu_with_the_host_builds_outputs(artifact, tmp_path):
    """One protected cross-built run (Cortex-M7): ranges, tables voted in RAM, scrubs, with
    weights decoded into RAM; bit for bit the host build, the runtime's predictions."""
    samv71 = _emulated_target()
    flight = runtime.load(_protected(artifact, tmp_path))
    source = generate_c(flight, compressed=True, ram_bytes=ram_for_tables(flight, samv71))
    assert source.protection == ("ranges", "tables", "scrub") and source.ram_tables
    x = _inputs()
    report = run_firmware(source, samv71, x, tmp_path / "fw")
    host = CRuntime(flight, source, build_host_library(source)).run(x)
    np.testing.assert_array_equal(report.logits.view(np.uint32), host.view(np.uint32))
    np.testing.assert_array_equal(report.logits.argmax(1), flight.run(x).argmax(1))
    assert report.static_ram_bytes >= source.arena_bytes + source.triplicated_bytes
