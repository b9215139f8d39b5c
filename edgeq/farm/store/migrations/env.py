"""Alembic environment: edgeq runs migrations on a connection it opened (``attributes["connection"]``).

A developer may also run ``alembic -c edgeq/farm/store/migrations/alembic.ini -x url=sqlite:///x.db
upgrade head`` (or ``revision -m "..."`` to start a new revision file).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from edgeq.farm.store.tables import metadata


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise SystemExit("pass the database: alembic -x url=sqlite:///PATH ...")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        _run(conn)
