"""The results store's tables as the code uses them (SQLAlchemy Core), at the newest schema revision.

The migrations in ``migrations/versions/`` build exactly these tables, step by step; a test compares
a migrated database with this metadata on SQLite and PostgreSQL. Changing a table here means adding
a migration there.

``runs``       one farm run: which farm (name and FARM.toml sha256), where, which edgeq, when, status
``results``    one row per measurement attempt of a (model, device) pair in a run: ``ok`` or the
               failure kind, the edgeq.result JSON (its raw latency samples kept in their own
               column) and the figures the verdicts and reports read, extracted into columns
``baselines``  a name (``main``) → the run it points at
"""

from __future__ import annotations

import sqlalchemy as sa

SCHEMA_HEAD = "0002"

RUN_STATUSES = ("running", "finished", "failed", "interrupted")
OK = "ok"
FAILURE_KINDS = ("unreachable", "timeout", "runtime_error", "wrong_answer", "bad_input")
RESULT_STATUSES = (OK, *FAILURE_KINDS)

# One naming scheme for indexes and constraints, so every dialect gets the same names and a later
# migration can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)

TZ = sa.DateTime(timezone=True)
SHA = sa.String(64)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uuid", sa.String(36), nullable=False, unique=True),
    sa.Column("farm", sa.String(200), nullable=False),
    sa.Column("farm_sha256", SHA, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("edgeq_version", sa.String(50), nullable=False),
    sa.Column("started_at", TZ, nullable=False),
    sa.Column("finished_at", TZ, nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("meta", sa.JSON, nullable=True),
    sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'interrupted')", name="status"),
)

results = sa.Table(
    "results",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("recorded_at", TZ, nullable=False),
    sa.Column("model", sa.String(255), nullable=False),
    sa.Column("model_sha256", SHA, nullable=True),
    sa.Column("device", sa.String(255), nullable=False),
    sa.Column("profile_sha256", SHA, nullable=True),
    sa.Column("delegate", sa.String(50), nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    # The whole edgeq.result without latency_us.samples (they are latency_samples_us).
    sa.Column("result_json", sa.JSON, nullable=True),
    sa.Column("latency_samples_us", sa.JSON, nullable=True),
    sa.Column("latency_n", sa.Integer, nullable=True),
    sa.Column("latency_mean_us", sa.Float, nullable=True),
    sa.Column("latency_p50_us", sa.Float, nullable=True),
    sa.Column("latency_p90_us", sa.Float, nullable=True),
    sa.Column("latency_p99_us", sa.Float, nullable=True),
    sa.Column("init_ms", sa.Float, nullable=True),
    sa.Column("energy_mj", sa.Float, nullable=True),
    sa.Column("energy_sigma_mj", sa.Float, nullable=True),
    sa.Column("accuracy_correct", sa.Integer, nullable=True),
    sa.Column("accuracy_n", sa.Integer, nullable=True),
    sa.Column("peak_rss_kb", sa.Integer, nullable=True),
    sa.Column("model_peak_rss_kb", sa.Integer, nullable=True),  # revision 0002
    sa.Column("thermal_max_c", sa.Float, nullable=True),
    sa.Column("throttled", sa.Boolean, nullable=True),
    sa.Column("runner_sha256", SHA, nullable=True),
    sa.Column("spec_sha256", SHA, nullable=True),
    sa.Column("runtime", sa.String(50), nullable=True),
    sa.Column("runtime_version", sa.String(50), nullable=True),
    sa.Column("arch", sa.String(50), nullable=True),
    sa.CheckConstraint(
        "status IN ('ok', 'unreachable', 'timeout', 'runtime_error', 'wrong_answer', 'bad_input')",
        name="status",
    ),
    sa.CheckConstraint("attempt >= 1", name="attempt"),
    sa.Index(None, "run_id", "model", "device"),
    sa.Index(None, "model", "device", "run_id"),  # revision 0002: a pair's history across runs
)

baselines = sa.Table(
    "baselines",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="RESTRICT"), nullable=False),
    sa.Column("set_at", TZ, nullable=False),
    sa.Column("set_by", sa.String(255), nullable=False),
)
