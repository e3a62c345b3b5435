"""A private PostgreSQL server for the tests: the Debian package's binaries, a fresh data folder, a Unix socket
only (no TCP port), and durability switched off (a test database need not survive a power cut).

As root (CI), the server runs as the `postgres` user, which PostgreSQL requires. Each test gets its own
database, copied from one migrated template (`CREATE DATABASE … TEMPLATE`, much faster than migrating).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

USER = "recovery"
TEMPLATE = "migrated"
MISSING = ("PostgreSQL's server binaries were not found: install the Debian package `postgresql` "
           "(apt-get install postgresql), or put its bin folder (pg_config --bindir) on PATH")


def server_bindir() -> Path:
    """The folder of `initdb` and `postgres`: on PATH, else the newest /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise RuntimeError(MISSING)
    return Path(versions[-1]).parent


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class PostgresServer:
    folder: Path
    durable: bool = False  # fsync on (the benchmarks); off, a commit need not survive a power cut (the tests)
    process: subprocess.Popen[bytes] | None = None
    _numbers: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def socket_dir(self) -> Path:
        return self.folder / "socket"

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://{USER}@/{database}?host={self.socket_dir}"

    def start(self) -> None:
        bindir = server_bindir()
        data = self.folder / "data"
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
                                        "-E", "UTF8", "--no-sync", "--locale=C"]),
                       check=True, capture_output=True)
        # Durable, commits are as safe as SQLite's in WAL mode with synchronous=NORMAL (the desk's setting): they
        # survive the process, and a power cut may lose the last few hundred milliseconds.
        safety = "on" if self.durable else "off"
        self.process = subprocess.Popen(
            _as_server_user([str(bindir / "postgres"), "-D", str(data), "-k", str(self.socket_dir),
                             "-c", "listen_addresses=", "-c", f"fsync={safety}", "-c", "synchronous_commit=off",
                             "-c", f"full_page_writes={safety}", "-c", "max_connections=200"]),
            stdout=subprocess.DEVNULL, stderr=open(self.folder / "server.log", "wb"),  # noqa: SIM115
        )
        self._wait_until_ready(bindir)

    def _wait_until_ready(self, bindir: Path) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", str(self.socket_dir), "-U", USER],
                                   capture_output=True)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start within 30 s")

    def sql(self, statement: str) -> None:
        """Run one statement as the superuser, in the `postgres` database."""
        subprocess.run([str(server_bindir() / "psql"), "-h", str(self.socket_dir), "-U", USER, "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-q", "-c", statement], check=True, capture_output=True)

    def new_database(self, template: str | None = None) -> str:
        """An empty database (a copy of `template` if named); returns its name."""
        name = f"test_{next(self._numbers)}"
        self.sql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        return name

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
