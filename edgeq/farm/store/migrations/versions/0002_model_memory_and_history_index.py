"""results.model_peak_rss_kb (what the model added to the runner's memory) and a history index.

The memory verdict compares what loading and running the model added (``memory.model_peak_rss_kb``
of edgeq.result), not the runner process's whole peak, which moves with the runtime's own
footprint. Rows written before this revision get it from their stored result JSON.

The HTML report and ``Store.history`` read one (model, device) across all runs; the index
(model, device, run_id) serves that without a scan of every result.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BATCH = 500


def _model_peak(result: Any) -> int | None:
    memory = result.get("memory") if isinstance(result, dict) else None
    value = memory.get("model_peak_rss_kb") if isinstance(memory, dict) else None
    return int(value) if isinstance(value, int | float) else None


def upgrade() -> None:
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("model_peak_rss_kb", sa.Integer, nullable=True))
    op.create_index("ix_results_model_device_run_id", "results", ["model", "device", "run_id"])

    # Backfill from the stored JSON, in Python: JSON path syntax differs between dialects.
    bind = op.get_bind()
    results = sa.table(
        "results",
        sa.column("id", sa.Integer),
        sa.column("result_json", sa.JSON),
        sa.column("model_peak_rss_kb", sa.Integer),
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(results.c.id, results.c.result_json)
            .where(results.c.id > last, results.c.result_json.is_not(None))
            .order_by(results.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        last = rows[-1].id
        updates = [{"rid": r.id, "kb": kb} for r in rows if (kb := _model_peak(r.result_json)) is not None]
        if updates:
            bind.execute(
                results.update()
                .where(results.c.id == sa.bindparam("rid"))
                .values(model_peak_rss_kb=sa.bindparam("kb")),
                updates,
            )


def downgrade() -> None:
    op.drop_index("ix_results_model_device_run_id", table_name="results")
    with op.batch_alter_table("results") as batch:
        batch.drop_column("model_peak_rss_kb")
