"""The protection an artifact records, in its generated C (issue 17), against the protected
NumPy runtime: range clipping counted, triplicated tables voted, scrubbing with reload from
flash, and a non-finite logit returned as a fault, never a class."""

from __future__ import annotations

import ctypes
import zlib

import numpy as np
import pytest
from c_build import compile_many, generate_c

from satcompress.artifact import encode_artifact
from satcompress.codegen.protect import crc32_table
from satcompress.firmware import CRuntime
from satcompress.pipeline.flight import LOGIT_TOLERANCE
from satcompress.radiation import protect_artifact
from satcompress.runtime import GRAPH_FORMAT, load
from satcompress.runtime.protect import DEFAULT_SCRUB_EVERY, FAULT

RNG = np.random.default_rng(11)
X = RNG.normal(size=(96, 12)).astype(np.float32)
CODEBOOK = np.array([-0.4, -0.15, 0.1, 0.35], np.float32)
TENSORS = {"w1": CODEBOOK[RNG.integers(0, 4, (16, 12))],  # clustered: a codebook in C
           "b1": RNG.normal(0, 0.1, 16).astype(np.float32),
           "s": (1 + RNG.normal(0, 0.1, 16)).astype(np.float32),
           "o": RNG.normal(0, 0.1, 16).astype(np.float32),
           "w2": RNG.normal(0, 0.5, (3, 16)).astype(np.float32),
           "b2": RNG.normal(0, 0.1, 3).astype(np.float32)}
NODES = [("Gemm", ["x", "w1", "b1"], ["pre"], {"transB": 1}),
         ("Relu", ["pre"], ["hidden"], {}),
         ("LayerNormalization", ["hidden", "s", "o"], ["normed"], {}),
         ("Gemm", ["normed", "w2", "b2"], ["logits"], {"transB": 1})]
QUANTIZED_TENSORS = {"sx": np.float32(0.05), "zx": np.uint8(128),
                     "w": RNG.integers(-7, 8, (16, 12)).astype(np.int8),  # int4 in C
                     "sw": np.abs(RNG.normal(0, 0.1, 16)).astype(np.float32),
                     "b": RNG.normal(0, 0.1, 16).astype(np.float32),
                     "w2": TENSORS["w2"], "b2": TENSORS["b2"]}
QUANTIZED_NODES = [("QuantizeLinear", ["x", "sx", "zx"], ["q"], {}),
                   ("QuantGemm", ["q", "sx", "zx", "w", "sw", "", "b"], ["pre"], {}),
                   ("Relu", ["pre"], ["hidden"], {}),
                   ("Gemm", ["hidden", "w2", "b2"], ["logits"], {"transB": 1})]
EVERY = ("ranges", "tables", "scrub")
TOP_EXPONENT = 0x40  # bit 30 of a little-endian float32: the byte at offset 3 of each word


def artifact(folder, name, protect, nodes=NODES, tensors=TENSORS):
    graph = {"format": GRAPH_FORMAT,
             "inputs": [{"name": "x", "dtype": "float32", "shape": [None, 12]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [None, 3]}],
             "nodes": [{"op": op, "in": i, "out": o, **({"attrs": a} if a else {})}
                       for op, i, o, a in nodes]}
    path = folder / f"{name}.sca"
    path.write_bytes(encode_artifact(graph, tensors, {"task": "tiny",
                                                      "class_names": ["a", "b", "c"]}))
    protect_artifact(path, protect, X)
    return path


# name -> (protect, compressed, ram_bytes, quantized model)
BUILDS = {"every": (EVERY, True, 0, False), "every-dense": (EVERY, False, 0, False),
          "every-ram": (EVERY, True, 2**20, False), "ranges": (("ranges",), True, 0, False),
          "tables-scrub": (("tables", "scrub"), True, 2**20, False),
          "quantized": (EVERY, True, 0, True), "nan": (("tables",), True, 0, False),
          "bare": ((), True, 0, False)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("protected")
    flights, sources = {}, {}
    for number, (name, (protect, compressed, ram, quantized)) in enumerate(BUILDS.items()):
        nodes, tensors = (QUANTIZED_NODES, QUANTIZED_TENSORS) if quantized else (NODES, TENSORS)
        flights[name] = load(artifact(folder, name, protect, nodes, tensors))
        sources[name] = generate_c(flights[name], prefix=f"p{number}_", compressed=compressed,
                                   ram_bytes=ram)
    return flights, sources, compile_many(list(sources.values()), folder), folder


class Library:
    """The entry points of one compiled source, initialised (its RAM loaded from flash)."""

    def __init__(self, library: ctypes.CDLL, source) -> None:
        self.source = source

        def function(name, restype, *argtypes):
            found = getattr(library, f"{source.prefix}{name}")
            found.restype, found.argtypes = restype, list(argtypes)
            return found

        self.predict = function("predict", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        self.scrub = function("scrub", ctypes.c_uint32)
        self.clipped = function("clipped_count", ctypes.c_uint32)
        self.faults = function("fault_count", ctypes.c_uint32)
        self.resident = function("resident", ctypes.c_void_p, ctypes.c_int,
                                 ctypes.POINTER(ctypes.c_size_t))
        function("init", None)()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(logits, what predict returned) of every example."""
        x = np.ascontiguousarray(x, np.float32)
        y = np.empty((len(x), self.source.output_size), np.float32)
        classes = np.array([self.predict(x[row].ctypes.data, y[row].ctypes.data)
                            for row in range(len(x))])
        return y, classes

    def block(self, index: int) -> np.ndarray:
        """Resident block ``index`` as a writable byte array over the library's RAM."""
        size = ctypes.c_size_t()
        address = self.resident(index, ctypes.byref(size))
        assert address and size.value
        return np.ctypeslib.as_array((ctypes.c_uint8 * size.value).from_address(address))


def library(built, name) -> Library:
    _, sources, compiled, _ = built
    return Library(compiled, sources[name])


@pytest.mark.parametrize("name", ["every", "every-dense", "every-ram", "ranges",
                                  "tables-scrub", "quantized"])
def test_the_protected_c_gives_the_protected_runtimes_predictions(built, name):
    flights, sources, _, _ = built
    flight, c = flights[name], library(built, name)
    counts = (c.clipped(), c.faults(), flight.clipped_values)
    expected = flight.run(X)
    logits, classes = c.run(X)
    np.testing.assert_array_equal(classes, expected.argmax(1))
    assert np.abs(logits - expected).max() <= LOGIT_TOLERANCE * max(1, np.abs(expected).max())
    assert (c.clipped(), c.faults(), flight.clipped_values) == counts  # in range: none
    assert sources[name].protection == flight.protection.names
    assert f"#define {sources[name].prefix.upper()}FAULT (-1)" in sources[name].header


def test_tables_in_ram_give_the_flash_builds_logits_bit_for_bit(built):
    _, sources, _, _ = built
    assert sources["every"].triplicated_bytes > 0 and sources["ranges"].triplicated_bytes == 0
    assert "_rom[" in sources["every"].source and "_rom[" not in sources["ranges"].source
    np.testing.assert_array_equal(library(built, "every").run(X)[0].view(np.uint32),
                                  library(built, "ranges").run(X)[0].view(np.uint32))


def test_an_unprotected_artifact_or_runtime_generates_the_plain_code(built, tmp_path):
    _, sources, _, _ = built
    plain = sources["bare"]
    assert plain.protection == () and "guard" not in plain.source
    assert "FAULT" not in plain.header and "scrub" not in plain.header
    unprotected = load(artifact(tmp_path, "off", EVERY), protect=False)
    again = generate_c(unprotected, prefix=plain.prefix)
    checksum = unprotected.checksum
    assert again.source.replace(checksum, "-") == plain.source.replace(
        built[0]["bare"].checksum, "-")


def test_an_out_of_range_activation_is_clipped_and_counted_as_the_runtime_does(built):
    flight, c = built[0]["every-dense"], library(built, "every-dense")
    wild = X[:8] * 40
    before, c_before = flight.clipped_values, c.clipped()
    expected = flight.run(wild)
    logits, classes = c.run(wild)
    assert flight.clipped_values > before
    assert c.clipped() - c_before == flight.clipped_values - before
    np.testing.assert_array_equal(classes, expected.argmax(1))
    assert np.abs(logits - expected).max() <= LOGIT_TOLERANCE * max(1, np.abs(expected).max())
    unprotected = load(built[3] / "every-dense.sca", protect=False)
    assert np.abs(unprotected.run(wild) - expected).max() > 0.1  # the clipping mattered


def test_a_non_finite_logit_is_a_fault_never_a_class(built):
    c = library(built, "nan")  # tables only: nothing clips a NaN on its way
    clean, classes = c.run(X[:4])
    assert list(classes) == list(clean.argmax(1)) and c.faults() == 0
    for index in range(3):  # every table NaN in every copy: beyond what the vote corrects
        c.block(index).view(np.uint32)[:] = 0x7FC00000
    logits, classes = c.run(X[:4])
    assert np.isnan(logits).all() and list(classes) == [FAULT] * 4 and c.faults() == 4
    assert c.scrub() == 2  # the copies agree, but not with their checksum: reloaded
    np.testing.assert_array_equal(c.run(X[:4])[0].view(np.uint32), clean.view(np.uint32))
    ranged = library(built, "every-ram")  # with ranges, a blown-up weight's outputs are clipped
    clipped = ranged.clipped()
    ranged.block(3).view(np.float32)[:] = 1e30  # the decoded w1 in RAM
    _, classes = ranged.run(X[:4])
    assert FAULT not in classes and ranged.clipped() > clipped and ranged.faults() == 0
    assert ranged.scrub() == 1 << 2


def test_a_flipped_copy_of_the_tables_is_outvoted_and_scrub_rewrites_it(built):
    c = library(built, "every-ram")
    clean, _ = c.run(X[:16])
    copy = c.block(1)
    before = copy.copy()
    copy[3::4] ^= TOP_EXPONENT  # every float of the second copy blown up or shrunk
    np.testing.assert_array_equal(c.run(X[:16])[0].view(np.uint32), clean.view(np.uint32))
    assert c.scrub() == 1  # the copy differed from the vote: rewritten
    np.testing.assert_array_equal(copy, before)
    assert c.scrub() == 0


def test_two_copies_wrong_in_the_same_bits_are_caught_against_flash_and_reloaded(built):
    c = library(built, "every")
    clean, _ = c.run(X[:16])
    for index in (0, 2):
        c.block(index)[3::4] ^= TOP_EXPONENT
    corrupted, _ = c.run(X[:16])
    assert not np.array_equal(corrupted, clean)  # the vote alone cannot fix two copies
    assert c.scrub() == 3  # the good copy rewritten from the vote, then all from flash
    np.testing.assert_array_equal(c.run(X[:16])[0].view(np.uint32), clean.view(np.uint32))


def test_scrub_decodes_a_corrupted_ram_table_again_from_flash(built):
    c = library(built, "every-ram")
    clean, _ = c.run(X[:16])
    weights = c.block(3)  # after the three copies: the decoded w1
    before = weights.copy()
    weights[3::4] ^= TOP_EXPONENT
    assert c.scrub() == 1 << 2
    np.testing.assert_array_equal(weights, before)
    np.testing.assert_array_equal(c.run(X[:16])[0].view(np.uint32), clean.view(np.uint32))


def test_predict_scrubs_every_n_inferences_as_the_artifact_says(built):
    c = library(built, "tables-scrub")
    assert f"SCRUB_EVERY {DEFAULT_SCRUB_EVERY}" in c.source.header
    assert c.scrub() == 0  # the count starts again
    copy = c.block(0)
    before = copy.copy()
    copy[3::4] ^= TOP_EXPONENT
    c.run(X[:1].repeat(DEFAULT_SCRUB_EVERY, axis=0))
    assert not np.array_equal(copy, before)  # not yet
    c.run(X[:1])
    np.testing.assert_array_equal(copy, before)


def test_the_crc_table_is_zlibs_crc32():
    table, data = crc32_table(), RNG.integers(0, 256, 1000).astype(np.uint8).tobytes()
    crc = 0xFFFFFFFF
    for byte in data:  # the generated loop, in Python
        crc = (crc >> 8) ^ table[(crc ^ byte) & 255]
    assert crc ^ 0xFFFFFFFF == zlib.crc32(data)


def test_the_c_backend_classifies_and_counts_clips_with_the_compiled_code(built):
    path = built[3] / "every.sca"
    oracle, compiled = load(path), load(path, backend="c")
    assert isinstance(compiled, CRuntime) and compiled.clipped_values == 0
    wild = np.concatenate([X[:8], X[:8] * 40])
    expected, got = oracle.classify(wild), compiled.classify(wild)
    np.testing.assert_array_equal(got.predicted, expected.predicted)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)
    assert compiled.clipped_values == oracle.clipped_values > 0  # the C's own counter
    assert compiled.faults == oracle.faults == 0 and not got.faults.any()
    assert compiled.scrub() == oracle.scrub() == 0
    assert set(compiled.resident_memory) == {"tables#0", "tables#1", "tables#2"}


def test_the_c_backend_reports_the_compiled_codes_faults_and_scrubs_as_the_runtime(built):
    path = built[3] / "nan.sca"  # tables only: nothing clips a NaN on its way
    oracle, compiled = load(path), load(path, backend="c")
    clean = oracle.classify(X[:4]).predicted
    tables = {name: array for name, array in oracle.resident_memory.items() if "#" in name}
    assert tables and all(array.dtype == np.float32 for array in tables.values())
    for array in tables.values():  # every table NaN in every copy: beyond the vote
        array[:] = np.nan
    for block in compiled.resident_memory.values():
        block.view(np.uint32)[:] = 0x7FC00000
    expected, got = oracle.classify(X[:4]), compiled.classify(X[:4])
    assert list(got.predicted) == list(expected.predicted) == [FAULT] * 4
    assert got.faults.all() and np.isnan(got.probabilities).all()
    assert compiled.faults == oracle.faults == 4
    assert compiled.scrub() == oracle.scrub() == 1  # the voted tables reloaded
    assert compiled.repairs == oracle.repairs == 1
    np.testing.assert_array_equal(compiled.classify(X[:4]).predicted, clean)
    np.testing.assert_array_equal(oracle.classify(X[:4]).predicted, clean)
    compiled.resident_memory["tables#1"][3::4] ^= TOP_EXPONENT  # one copy: outvoted
    np.testing.assert_array_equal(compiled.classify(X[:4]).predicted, clean)
    assert compiled.scrub() == 1 and compiled.repairs == 2


def test_the_c_backend_of_an_unprotected_artifact_makes_a_non_finite_logit_a_fault(built):
    path = built[3] / "bare.sca"
    oracle, compiled = load(path), load(path, backend="c")
    assert compiled.source.protection == ()
    huge = np.concatenate([X[:3], np.full((2, 12), 3e38, np.float32)])
    with np.errstate(all="ignore"):
        expected = oracle.classify(huge)
    got = compiled.classify(huge)
    assert not np.isfinite(compiled.run(huge)[3:]).all()
    np.testing.assert_array_equal(got.faults, [False] * 3 + [True] * 2)
    np.testing.assert_array_equal(got.predicted, expected.predicted)
    assert list(got.predicted[3:]) == [FAULT] * 2 and compiled.faults == oracle.faults == 2
    assert np.isnan(compiled.predict_proba(huge)[3:]).all()
    assert compiled.scrub() == 0 and compiled.resident_memory == {}
    assert compiled.clipped_values == 0
