"""The results store: runs, results committed one by one as they complete, baselines, history.

One :class:`Store` may be shared by threads (each call takes a pooled connection and commits before
it returns); several processes may write the same store at once (see :mod:`.db`).
"""

from __future__ import annotations

import getpass
import socket
import uuid as uuid_mod
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from statistics import median
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from edgeq.errors import UserInputError
from edgeq.farm.store import db
from edgeq.farm.store.records import (
    METRIC_COLUMNS,
    Failure,
    Hashes,
    HistoryPoint,
    Metrics,
    PairState,
    RunInfo,
    StoredResult,
    check_name,
    row_values,
    utc,
    whole_result,
)
from edgeq.farm.store.tables import OK, RUN_STATUSES, baselines, results, runs
from edgeq.result import Result

EXPORT_SCHEMA = "edgeq.farm.export/1"


def _now() -> datetime:
    return datetime.now(UTC)


def _edgeq_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgeq")
    except PackageNotFoundError:
        return "unknown"


def _who() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "?"
    return f"{user}@{socket.gethostname()}"


class Store:
    """A results store at ``url`` (already migrated to the newest schema by :func:`open_store`)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @property
    def url(self) -> URL:
        return self.engine.url

    def __repr__(self) -> str:
        return f"Store({db.display(self.url)})"

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self) -> Any:
        """A connection whose transaction takes the write lock at once; commits on leaving."""
        return _Writing(self.engine)

    # ----------------------------------------------------------------------------------- runs

    def create_run(
        self,
        farm: str,
        farm_sha256: str,
        *,
        host: str | None = None,
        edgeq_version: str | None = None,
        started: datetime | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunInfo:
        """Start a run of the farm ``farm`` (its FARM.toml's sha256); ``meta`` is free JSON (the
        thresholds in effect, the CI job, the FARM.toml text...)."""
        check_name("farm", farm, 200)
        values = {
            "uuid": str(uuid_mod.uuid4()),
            "farm": farm,
            "farm_sha256": farm_sha256,
            "host": host or socket.gethostname(),
            "edgeq_version": edgeq_version or _edgeq_version(),
            "started_at": utc(started) or _now(),
            "finished_at": None,
            "status": "running",
            "meta": meta or {},
        }
        with self._write() as conn:
            run_id = conn.execute(runs.insert().values(**values).returning(runs.c.id)).scalar_one()
        return self.run(run_id)

    def finish_run(
        self, run_id: int, *, status: str = "finished", finished: datetime | None = None
    ) -> RunInfo:
        """Mark the run finished (or ``failed`` / ``interrupted``) at ``finished`` (now)."""
        return self.set_status(run_id, status, finished=finished or _now())

    def set_status(self, run_id: int, status: str, *, finished: datetime | None = None) -> RunInfo:
        """Set a run's status; ``running`` (a resumed run) clears its finish time."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")
        with self._write() as conn:
            done = conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status=status, finished_at=None if status == "running" else (utc(finished) or _now()))
            ).rowcount
        if not done:
            raise self._no_run(run_id)
        return self.run(run_id)

    def run(self, run_id: int) -> RunInfo:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).one_or_none()
            if row is None:
                raise self._no_run(run_id)
            q = sa.select(baselines.c.name).where(baselines.c.run_id == run_id)
            return _run_info(row, tuple(sorted(r.name for r in conn.execute(q))))

    def runs(self, *, farm: str | None = None, limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first (optionally of one farm)."""
        q = sa.select(runs).order_by(runs.c.id.desc())
        if farm is not None:
            q = q.where(runs.c.farm == farm)
        if limit is not None:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
            names = _baseline_names(conn)
        return [_run_info(r, tuple(sorted(names.get(r.id, ())))) for r in rows]

    def resumable_run(self, farm_sha256: str, farm: str | None = None) -> RunInfo | None:
        """The newest run of this exact FARM.toml that did not finish (killed, interrupted, failed):
        rerunning the farm resumes it instead of starting over."""
        q = (
            sa.select(runs)
            .where(runs.c.farm_sha256 == farm_sha256, runs.c.status != "finished")
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        if farm is not None:
            q = q.where(runs.c.farm == farm)
        with self.engine.connect() as conn:
            row = conn.execute(q).one_or_none()
        return self.run(row.id) if row is not None else None

    def resolve_run(self, ref: int | str) -> int:
        """A run id from what a user types: ``12``, ``latest``, or a baseline name such as ``main``."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
            run_id = int(ref)
            self.run(run_id)
            return run_id
        if ref == "latest":
            with self.engine.connect() as conn:
                newest = conn.execute(sa.select(sa.func.max(runs.c.id))).scalar()
            if newest is None:
                raise UserInputError(
                    f"the results store {db.display(self.url)} has no runs yet",
                    "run a farm first: edgeq farm run FARM.toml",
                )
            return int(newest)
        found = self.baseline(ref)
        if found is None:
            raise UserInputError(
                f"{ref!r} is neither a run id nor a baseline in {db.display(self.url)}",
                "pass a run id from `edgeq farm runs`, `latest`, or a name set with `edgeq farm baseline set`",
            )
        return found

    def _no_run(self, run_id: int) -> UserInputError:
        return UserInputError(
            f"there is no run {run_id} in the results store {db.display(self.url)}",
            "list the runs with `edgeq farm runs` (and check --db / EDGEQ_DB)",
        )

    # -------------------------------------------------------------------------------- results

    def add_result(
        self,
        run_id: int,
        outcome: Result | Failure,
        *,
        model: str | None = None,
        device: str | None = None,
        delegate: str | None = None,
        attempt: int = 1,
    ) -> int:
        """Record one measurement of a (model, device) pair, committed before this returns.

        ``outcome`` is the runner's :class:`Result` (status ok) or a :class:`Failure`. ``model`` and
        ``device`` name the pair as the farm does (default: the result's model file name and device
        name); ``attempt`` counts the tries of this measurement (1 = first). Returns the row id.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        result = outcome.result if isinstance(outcome, Failure) else outcome
        values: dict[str, Any] = dict.fromkeys(METRIC_COLUMNS)
        values.update(result_json=None, runner_sha256=None, spec_sha256=None)
        if result is not None:
            values.update(row_values(result))
        if isinstance(outcome, Failure):
            status, message = outcome.kind, outcome.message
            model = model or outcome.model
            device = device or outcome.device
            delegate = delegate or outcome.delegate or values.get("delegate")
            values["model_sha256"] = outcome.model_sha256 or values.get("model_sha256")
            values["profile_sha256"] = outcome.profile_sha256 or values.get("profile_sha256")
        else:
            status, message = OK, None
            model = model or outcome.model.name
            device = device or outcome.device.name
            delegate = delegate or values.get("delegate")
        values.update(
            run_id=run_id,
            recorded_at=_now(),
            model=check_name("model", model, 255),
            device=check_name("device", device, 255),
            delegate=delegate,
            attempt=attempt,
            status=status,
            message=message,
        )
        with self._write() as conn:
            if conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id)).one_or_none() is None:
                raise self._no_run(run_id)
            return int(conn.execute(results.insert().values(**values).returning(results.c.id)).scalar_one())

    def results(
        self, run_id: int, *, status: str | None = None, samples: bool = True, result_json: bool = True
    ) -> list[StoredResult]:
        """The run's results in the order they were recorded (``status="ok"``: measurements only)."""
        cols = [
            c
            for c in results.c
            if (samples or c.name != "latency_samples_us") and (result_json or c.name != "result_json")
        ]
        q = sa.select(*cols).where(results.c.run_id == run_id).order_by(results.c.id)
        if status is not None:
            q = q.where(results.c.status == status)
        with self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(q).mappings()]

    def pair_states(self, run_id: int) -> dict[tuple[str, str], PairState]:
        """Per (model, device) of the run: ok rounds, failures, the last status and attempt."""
        q = (
            sa.select(results.c.model, results.c.device, results.c.status, results.c.attempt)
            .where(results.c.run_id == run_id)
            .order_by(results.c.id)
        )
        acc: dict[tuple[str, str], list[Any]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                st = acc.setdefault((r.model, r.device), [0, 0, r.status, r.attempt])
                st[0 if r.status == OK else 1] += 1
                st[2], st[3] = r.status, r.attempt
        return {
            k: PairState(ok_rounds=v[0], failures=v[1], last_status=v[2], last_attempt=v[3])
            for k, v in acc.items()
        }

    def completed_pairs(self, run_id: int) -> set[tuple[str, str]]:
        """The (model, device) pairs of the run that already have a result (status ok): a resumed
        run measures only the others."""
        q = (
            sa.select(results.c.model, results.c.device)
            .where(results.c.run_id == run_id, results.c.status == OK)
            .distinct()
        )
        with self.engine.connect() as conn:
            return {(r.model, r.device) for r in conn.execute(q)}

    # ------------------------------------------------------------------------------ baselines

    def set_baseline(self, run_id: int, name: str = "main") -> RunInfo:
        """Point the baseline ``name`` at the run (replacing where it pointed)."""
        check_name("baseline", name, 100)
        if name == "latest" or name.strip().isdigit():
            raise UserInputError(
                f"{name!r} cannot be a baseline name (it reads as a run reference)",
                "pick a name such as main",
            )
        run = self.run(run_id)
        if not self.completed_pairs(run_id):
            raise UserInputError(
                f"run {run_id} has no completed results to be a baseline",
                "pick a run with results (`edgeq farm show RUN`), or rerun the farm to complete it",
            )
        values = {"name": name, "run_id": run_id, "set_at": _now(), "set_by": _who()}
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            ins: Any = pg_insert(baselines).values(**values)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            ins = sqlite_insert(baselines).values(**values)
        ins = ins.on_conflict_do_update(
            index_elements=[baselines.c.name],
            set_={
                "run_id": ins.excluded.run_id,
                "set_at": ins.excluded.set_at,
                "set_by": ins.excluded.set_by,
            },
        )
        with self._write() as conn:
            conn.execute(ins)
        return self.run(run.id)

    def baseline(self, name: str = "main") -> int | None:
        """The run the baseline ``name`` points at, or None."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(baselines.c.run_id).where(baselines.c.name == name)
            ).scalar_one_or_none()

    def baselines(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(baselines.c.name, baselines.c.run_id).order_by(baselines.c.name))
            return {r.name: r.run_id for r in rows}

    # -------------------------------------------------------------------------- history, export

    def history(self, model: str, device: str, *, limit: int = 50) -> list[HistoryPoint]:
        """One (model, device) across runs, oldest first (the newest ``limit`` runs that have it)."""
        q = (
            sa.select(
                results.c.run_id,
                runs.c.started_at,
                runs.c.status,
                results.c.model_sha256,
                results.c.latency_p50_us,
                results.c.latency_p90_us,
                results.c.latency_p99_us,
                results.c.energy_mj,
                results.c.accuracy_correct,
                results.c.accuracy_n,
                results.c.model_peak_rss_kb,
                results.c.peak_rss_kb,
            )
            .join(runs, runs.c.id == results.c.run_id)
            .where(results.c.model == model, results.c.device == device, results.c.status == OK)
            .order_by(results.c.run_id, results.c.id)
        )
        per_run: dict[int, list[Any]] = defaultdict(list)
        with self.engine.connect() as conn:
            for row in conn.execute(q):
                per_run[row.run_id].append(row)
            names = _baseline_names(conn)
        points = []
        for rid in sorted(per_run)[-limit:]:
            rows = per_run[rid]
            acc = [r for r in rows if r.accuracy_n]
            last = rows[-1]
            peak = [r.model_peak_rss_kb if r.model_peak_rss_kb is not None else r.peak_rss_kb for r in rows]
            points.append(
                HistoryPoint(
                    run_id=rid,
                    started_at=utc(last.started_at) or _now(),
                    status=last.status,
                    rounds=len(rows),
                    latency_p50_us=_median(r.latency_p50_us for r in rows),
                    latency_p90_us=_median(r.latency_p90_us for r in rows),
                    latency_p99_us=_median(r.latency_p99_us for r in rows),
                    energy_mj=_median(r.energy_mj for r in rows),
                    accuracy_pct=100.0 * acc[-1].accuracy_correct / acc[-1].accuracy_n if acc else None,
                    peak_kb=int(m) if (m := _median(peak)) is not None else None,
                    model_sha256=last.model_sha256,
                    baselines=tuple(sorted(names.get(rid, ()))),
                )
            )
        return points

    def export_run(self, run_id: int) -> dict[str, Any]:
        """The run and every result, whole (``edgeq.farm.export/1``; shape in docs/ci.md)."""
        run = self.run(run_id)
        return {
            "schema": EXPORT_SCHEMA,
            "run": run.to_dict(),
            "results": [r.to_dict() for r in self.results(run_id)],
        }


class _Writing:
    """``with store._write() as conn``: BEGIN IMMEDIATE on SQLite, commit on success."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def __enter__(self) -> sa.Connection:
        self.conn = db.writing(self.engine.connect())
        self.tx = self.conn.begin()
        return self.conn

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None:
                self.tx.commit()
            else:
                self.tx.rollback()
        finally:
            self.conn.close()


def _baseline_names(conn: sa.Connection) -> dict[int, list[str]]:
    names: dict[int, list[str]] = defaultdict(list)
    for r in conn.execute(sa.select(baselines.c.name, baselines.c.run_id)):
        names[r.run_id].append(r.name)
    return names


def _median(values: Iterable[float | int | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(median(vals)) if vals else None


def _run_info(row: Any, names: tuple[str, ...]) -> RunInfo:
    return RunInfo(
        id=row.id,
        uuid=row.uuid,
        farm=row.farm,
        farm_sha256=row.farm_sha256,
        host=row.host,
        edgeq_version=row.edgeq_version,
        started_at=utc(row.started_at) or _now(),
        finished_at=utc(row.finished_at),
        status=row.status,
        meta=row.meta or {},
        baselines=names,
    )


def _stored(row: Any) -> StoredResult:
    samples = row.get("latency_samples_us")
    metrics = Metrics(**{k: row.get(k) for k in METRIC_COLUMNS if k != "latency_samples_us"})
    if samples:
        metrics = Metrics(**{**metrics.__dict__, "latency_samples_us": tuple(float(v) for v in samples)})
    return StoredResult(
        id=row["id"],
        run_id=row["run_id"],
        recorded_at=utc(row["recorded_at"]) or _now(),
        model=row["model"],
        device=row["device"],
        delegate=row["delegate"],
        attempt=row["attempt"],
        status=row["status"],
        message=row["message"],
        metrics=metrics,
        hashes=Hashes(
            model=row["model_sha256"],
            runner=row["runner_sha256"],
            profile=row["profile_sha256"],
            spec=row["spec_sha256"],
        ),
        runtime=row["runtime"],
        runtime_version=row["runtime_version"],
        arch=row["arch"],
        result_json=whole_result(row.get("result_json"), samples),
    )


def open_store(url: str | None = None, *, revision: str = "head") -> Store:
    """Open (creating and migrating as needed) the results store at ``url``: a URL or a path, else
    ``$EDGEQ_DB``, else SQLite in the user's data directory. ``revision`` is for tests of the
    migrations (``"0001"``: stop at the first schema)."""
    resolved = db.resolve_url(url)
    engine = db.create_engine(resolved)
    try:
        db.migrate(engine, revision)
    except UserInputError:
        engine.dispose()
        raise
    except sa.exc.OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise UserInputError(
            f"cannot open the results store {db.display(resolved)}: {reason}",
            "check --db / EDGEQ_DB: the server must be reachable and the file writable",
        ) from None
    return Store(engine)
