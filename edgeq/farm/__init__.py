"""The device farm: many boards, one results store, baselines and regression verdicts.

* :mod:`edgeq.farm.store` — where every farm result is kept (SQLite or PostgreSQL, migrated schema);
* :mod:`edgeq.farm.verdict` — a run compared with a baseline: regressed / improved / unchanged /
  inconclusive per model × device × metric, and the thresholds FARM.toml sets;
* :mod:`edgeq.farm.reports` — JUnit XML and a self-contained HTML report for CI;
* :mod:`edgeq.farm.results_api` — what the ``edgeq farm`` commands call.

Nothing is imported here, so ``import edgeq.farm.verdict`` does not pull SQLAlchemy in.
"""
