"""The farm's results store: every result committed as it completes, baselines, history.

>>> store = open_store()                       # $EDGEQ_DB, else SQLite in the user's data directory
>>> run = store.create_run("lab", farm_sha256)
>>> store.add_result(run.id, result, model="mobilenet", device="pi5")    # committed on return
>>> store.finish_run(run.id); store.set_baseline(run.id, "main")

SQLite (WAL) is the embedded default; ``postgresql://user@host/db`` (psycopg 3) is a team's shared
store. The schema is versioned (Alembic, ``migrations/``) and brought to the newest revision when a
store is opened. Tables: see :mod:`.tables`. Export shape (``edgeq.farm.export/1``): docs/ci.md.
"""

from edgeq.farm.store.db import ENV_DB, default_path, resolve_url
from edgeq.farm.store.records import (
    Failure,
    Hashes,
    HistoryPoint,
    Metrics,
    PairState,
    RunInfo,
    StoredResult,
)
from edgeq.farm.store.store import EXPORT_SCHEMA, Store, open_store
from edgeq.farm.store.tables import FAILURE_KINDS, OK, RESULT_STATUSES, RUN_STATUSES

__all__ = [
    "ENV_DB",
    "EXPORT_SCHEMA",
    "FAILURE_KINDS",
    "OK",
    "RESULT_STATUSES",
    "RUN_STATUSES",
    "Failure",
    "Hashes",
    "HistoryPoint",
    "Metrics",
    "PairState",
    "RunInfo",
    "Store",
    "StoredResult",
    "default_path",
    "open_store",
    "resolve_url",
]
