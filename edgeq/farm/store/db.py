"""Where the store lives and how it is opened: the URL, the engine, the schema migrations.

``resolve_url(None)`` is ``$EDGEQ_DB`` or SQLite at ``platformdirs.user_data_dir("edgeq")/results.db``.
A URL or a plain path is accepted anywhere: ``postgresql://user@host/db`` (psycopg 3),
``sqlite:///abs/path.db``, ``results.db``.

SQLite runs in WAL mode (readers never block the writer, a commit is durable on its own), with a
busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for writes: a writer takes the write lock
when its transaction starts, so two writers (threads or processes) queue on the busy timeout
instead of one failing with "database is locked" when it upgrades a read lock.

Migrations run on open, under a lock that serializes concurrent openers (SQLite: the write lock of
the migrating transaction; PostgreSQL: a transaction-scoped advisory lock), so two processes opening
a new store at once migrate it once.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from edgeq.errors import UserInputError

ENV_DB = "EDGEQ_DB"
SQLITE_BUSY_TIMEOUT_S = 60.0
# Any fixed 64-bit key: the advisory lock PostgreSQL sessions take while migrating this schema.
_PG_MIGRATION_LOCK = 0x6564_6765_7166_6D31  # "edgeqfm1"
_IMMEDIATE = "edgeq_immediate"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def default_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("edgeq")) / "results.db"


def resolve_url(url: str | None) -> URL:
    """The store's URL: ``url``, else ``$EDGEQ_DB``, else the default SQLite file."""
    raw = url or os.environ.get(ENV_DB) or ""
    if not raw:
        return _sqlite_url(default_path())
    if "://" not in raw:
        return _sqlite_url(Path(raw))
    try:
        parsed = make_url(raw)
    except Exception:
        raise UserInputError(
            f"the results store URL {_mask(raw)!r} is not a database URL",
            "pass --db postgresql://USER@HOST/DB, --db sqlite:///PATH or a file path (or set EDGEQ_DB)",
        ) from None
    backend = parsed.get_backend_name()
    if backend in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise UserInputError(
                "the results store cannot be an in-memory SQLite database",
                "pass --db sqlite:///PATH (a file) or postgresql://...",
            )
        return _sqlite_url(Path(parsed.database or ""))
    raise UserInputError(
        f"the results store must be SQLite or PostgreSQL, not {backend!r} ({_mask(raw)})",
        "pass --db postgresql://USER@HOST/DB or --db sqlite:///PATH (or set EDGEQ_DB)",
    )


def _sqlite_url(path: Path) -> URL:
    path = path.expanduser().absolute()
    if path.is_dir():
        raise UserInputError(
            f"the results store {path} is a directory", "pass a file path such as results.db"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(
            f"cannot create the directory of the results store {path}: {exc.strerror}",
            "pass --db with a path you can write (or set EDGEQ_DB)",
        ) from None
    return URL.create("sqlite+pysqlite", database=str(path))


def _mask(raw: str) -> str:
    try:
        return make_url(raw).render_as_string(hide_password=True)
    except Exception:
        return raw.split("@")[-1]


def display(url: URL) -> str:
    """The URL without its password, for messages."""
    return url.render_as_string(hide_password=True)


def create_engine(url: URL) -> sa.Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            pool_pre_ping=False,
        )
        _sqlite_setup(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})


def _into_wal(cur: Any) -> str:
    """``PRAGMA journal_mode = WAL``, retried while the database is locked: two processes switching a
    new store at once both hold a shared lock and want the exclusive one, and SQLite answers one of
    them "database is locked" at once instead of calling its busy handler (a deadlock it avoids). The
    other one's switch takes milliseconds; then the pragma finds WAL already set."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            return str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(2 * delay, 0.2)


def _sqlite_setup(engine: sa.Engine) -> None:
    """WAL, busy timeout, foreign keys, and transactions begun by SQLAlchemy (not pysqlite)."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own implicit BEGIN would be DEFERRED; SQLAlchemy emits BEGIN itself (below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        mode = _into_wal(cur)
        if mode.lower() != "wal":
            raise UserInputError(
                f"the results store could not be put in WAL mode (journal mode {mode})",
                "put the store on a local file system (--db PATH), not a network share",
            )
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def writing(conn: sa.Connection) -> sa.Connection:
    """The connection with its next transaction taking the write lock at once (SQLite)."""
    return conn.execution_options(**{_IMMEDIATE: True})


def alembic_config(connection: sa.Connection | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(conn: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (``head``: the newest), once even with concurrent openers."""
    from alembic import command

    target = head_revision() if revision == "head" else revision
    with engine.connect() as conn:
        if current_revision(conn) == target:
            return
    with engine.connect() as conn:
        conn = writing(conn)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_PG_MIGRATION_LOCK)))
            found = current_revision(conn)
            if found is not None and found not in known_revisions():
                raise UserInputError(
                    f"the results store {display(engine.url)} has schema revision {found}, "
                    "which this edgeq does not know (a newer edgeq wrote it)",
                    "upgrade edgeq (pip install -U edgeq) or use another store with --db",
                )
            if found != target:
                command.upgrade(alembic_config(conn), target)
