"""A throw-away PostgreSQL server for tests: initdb + pg_ctl in a temporary folder.

Uses the Debian ``postgresql`` binaries (``initdb``, ``pg_ctl``, ``postgres`` on the PATH or
in ``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root, so as root the
server runs as the unprivileged user ``nobody`` (through ``runuser``). Authentication is
``trust`` on 127.0.0.1 only, on a free port; fsync is off (the data are thrown away).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

__all__ = ["PostgresServer", "postgres_binaries"]


def postgres_binaries() -> dict[str, str] | None:
    """Paths of ``initdb`` and ``pg_ctl`` (None if PostgreSQL is not installed)."""
    found = {}
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        path = shutil.which(name) or next(
            (str(Path(folder) / name) for folder in folders if (Path(folder) / name).is_file()),
            None)
        if path is None:
            return None
        found[name] = path
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """Start with :meth:`start`, connect with :attr:`url`, end with :meth:`stop`."""

    def __init__(self, binaries: dict[str, str]) -> None:
        self.binaries = binaries
        self.folder = Path(tempfile.mkdtemp(prefix="satcompress-postgres-"))
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "nobody", "nogroup")
            self._as_user = [shutil.which("runuser") or "/usr/sbin/runuser", "-u", "nobody", "--"]

    def _run(self, *command: str) -> None:
        result = subprocess.run([*self._as_user, *command], capture_output=True, text=True,
                                timeout=120, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr or result.stdout}")

    def start(self) -> "PostgresServer":
        data = self.folder / "data"
        self._run(self.binaries["initdb"], "-D", str(data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c max_connections=50")
        self._run(self.binaries["pg_ctl"], "-D", str(data), "-l", str(self.folder / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(self.binaries["pg_ctl"], "-D", str(self.folder / "data"), "-m", "immediate",
                      "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
