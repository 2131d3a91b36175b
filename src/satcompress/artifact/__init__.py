"""The flight artifact: one compact, checksummed file holding a compressed model.

A versioned binary container (:mod:`satcompress.artifact.container` documents the byte layout):
a small header with the graph description and task metadata, then one block per tensor stored
with the smallest lossless encoding found (:mod:`satcompress.artifact.encodings`). Every block
carries a CRC32 and the file a SHA-256; loading a damaged file raises :class:`ArtifactError`
naming the bad part. Optionally (``fec=True``) every byte is protected by Reed-Solomon codes
(:mod:`satcompress.artifact.fec`) that correct upsets on load. Its size on disk, parity
included, is what a budget's ``max_bytes`` counts. Loading is bounded: :class:`LoadLimits`
caps what a file may make the loader allocate (:mod:`satcompress.artifact.limits`).

NumPy + stdlib + reedsolo only: part of the torch-free flight path.
"""

from satcompress.artifact.container import (
    ARTIFACT_SUFFIX,
    FORMAT_VERSION,
    MAGIC,
    Artifact,
    BlockInfo,
    decode_artifact,
    encode_artifact,
    read_artifact,
    write_artifact,
)
from satcompress.artifact.errors import ArtifactError
from satcompress.artifact.limits import LoadLimits

__all__ = [
    "ARTIFACT_SUFFIX",
    "FORMAT_VERSION",
    "MAGIC",
    "Artifact",
    "ArtifactError",
    "BlockInfo",
    "LoadLimits",
    "decode_artifact",
    "encode_artifact",
    "read_artifact",
    "write_artifact",
]
