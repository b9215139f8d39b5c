"""A real PostgreSQL server for tests: Debian's postgresql-15, started in a temporary directory.

``postgres`` (session) starts one server, as the unprivileged user ``nobody`` when the tests run
as root (PostgreSQL refuses to run as root; ``setpriv`` drops the privileges), trust authentication on 127.0.0.1 only, a free port; it is
stopped and its directory removed at the end of the session. ``pg_url`` (per test) is a fresh
empty database on it. Without the package: ``missing_prerequisite`` (scripts/setup.sh --test
installs it).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing_prerequisite

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RUN_AS = "nobody"
SUPERUSER = "edgeq"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="edgeq-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:  # PostgreSQL refuses to run as root: hand the directory to nobody
            user = pwd.getpwnam(RUN_AS)
            self.uid, self.gid = user.pw_uid, user.pw_gid
            os.chown(self.root, self.uid, self.gid)
        self.root.chmod(0o700)

    def _as_user(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = list(argv)
        if self.as_root:
            cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *cmd]
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root)}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, env=env)

    def start(self) -> None:
        r = self._as_user(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "-E", "UTF8", "--no-locale", "--no-sync",
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-800:]}")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=100"
        r = self._as_user(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-t", "60", "-o", opts, "start",
        )  # fmt: skip
        if r.returncode != 0:
            log = (self.root / "server.log").read_text(errors="replace")[-800:]
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()[-400:]} {log}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._as_user(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", timeout=60
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        missing_prerequisite("PostgreSQL 15 server binaries are missing (apt-get install postgresql-15)")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        missing_prerequisite("setpriv is missing (apt-get install util-linux)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing_prerequisite("psycopg is not installed (pip install -e '.[test]')")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()
