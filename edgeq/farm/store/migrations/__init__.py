"""Alembic migrations of the results store (run by :func:`edgeq.farm.store.open_store`)."""
