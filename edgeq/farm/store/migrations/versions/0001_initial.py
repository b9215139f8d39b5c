"""The initial schema: runs, results (one row per measurement attempt), baselines.

Revision ID: 0001
Revises:
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("farm", sa.String(200), nullable=False),
        sa.Column("farm_sha256", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("edgeq_version", sa.String(50), nullable=False),
        sa.Column("started_at", TZ, nullable=False),
        sa.Column("finished_at", TZ, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.UniqueConstraint("uuid", name="uq_runs_uuid"),
        sa.CheckConstraint(
            "status IN ('running', 'finished', 'failed', 'interrupted')", name="ck_runs_status"
        ),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("recorded_at", TZ, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=True),
        sa.Column("device", sa.String(255), nullable=False),
        sa.Column("profile_sha256", sa.String(64), nullable=True),
        sa.Column("delegate", sa.String(50), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("message", sa.Text, nullable=True),
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
        sa.Column("thermal_max_c", sa.Float, nullable=True),
        sa.Column("throttled", sa.Boolean, nullable=True),
        sa.Column("runner_sha256", sa.String(64), nullable=True),
        sa.Column("spec_sha256", sa.String(64), nullable=True),
        sa.Column("runtime", sa.String(50), nullable=True),
        sa.Column("runtime_version", sa.String(50), nullable=True),
        sa.Column("arch", sa.String(50), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_results"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_results_run_id_runs", ondelete="CASCADE"),
        sa.CheckConstraint(
            "status IN ('ok', 'unreachable', 'timeout', 'runtime_error', 'wrong_answer', 'bad_input')",
            name="ck_results_status",
        ),
        sa.CheckConstraint("attempt >= 1", name="ck_results_attempt"),
    )
    op.create_index("ix_results_run_id_model_device", "results", ["run_id", "model", "device"])
    op.create_table(
        "baselines",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("set_at", TZ, nullable=False),
        sa.Column("set_by", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_baselines"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_baselines_run_id_runs", ondelete="RESTRICT"
        ),
    )


def downgrade() -> None:
    op.drop_table("baselines")
    op.drop_index("ix_results_run_id_model_device", table_name="results")
    op.drop_table("results")
    op.drop_table("runs")
