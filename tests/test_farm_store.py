"""The farm's results store on real SQLite (WAL) and a real PostgreSQL server: runs, results committed
one by one, baselines, history, export, migrations from the first schema, concurrent writers
(threads and processes), a writer killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from support_farmstore import make_result, sha
from support_postgres import PostgresServer

from edgeq.errors import UserInputError
from edgeq.farm.store import EXPORT_SCHEMA, Failure, open_store, resolve_url
from edgeq.farm.store import db as store_db
from edgeq.farm.store.tables import SCHEMA_HEAD, metadata

FARM_SHA = sha("FARM.toml")


def test_results_round_trip_whole_with_their_figures(store_url: str) -> None:
    store = open_store(store_url)
    run = store.create_run("lab farm", FARM_SHA, meta={"thresholds": {"alpha": 0.01}})
    assert run.status == "running" and run.finished_at is None and run.meta == {"thresholds": {"alpha": 0.01}}
    r = make_result(
        model="mobilenet.tflite", device="pi5", energy_mj=0.412, energy_sigma_mj=0.006, correct=331,
        tested=360, max_c=71.5, throttled=True, n=300,
    )  # fmt: skip
    rid = store.add_result(run.id, r, model="mobilenet", device="pi5-a")
    fid = store.add_result(
        run.id,
        Failure("timeout", "no result within 600 s", model="resnet", device="pi5-a", delegate="xnnpack"),
        attempt=3,
    )
    assert fid > rid

    rows = store.results(run.id)
    assert [x.id for x in rows] == [rid, fid]
    ok, failed = rows
    # The whole result comes back, samples included, exactly as given.
    assert ok.result_json == r.to_dict() and ok.result is not None and ok.result.to_dict() == r.to_dict()
    m = ok.metrics
    assert m.latency_samples_us == tuple(r.latency_us.samples or ())
    assert (m.latency_n, m.latency_p50_us, m.latency_p90_us, m.latency_p99_us) == (
        300, r.latency_us.p50, r.latency_us.p90, r.latency_us.p99,
    )  # fmt: skip
    assert (m.energy_mj, m.energy_sigma_mj) == (0.412, 0.006)
    assert (m.accuracy_correct, m.accuracy_n) == (331, 360)
    assert (m.peak_rss_kb, m.model_peak_rss_kb) == (49388, 5608)
    assert (m.thermal_max_c, m.throttled) == (71.5, True)
    assert ok.hashes.model == sha("mobilenet.tflite") and ok.hashes.runner and ok.hashes.profile
    assert ok.hashes.spec is not None and len(ok.hashes.spec) == 64
    assert (ok.model, ok.device, ok.delegate, ok.status, ok.attempt) == (
        "mobilenet",
        "pi5-a",
        "xnnpack",
        "ok",
        1,
    )
    assert (failed.status, failed.message, failed.attempt, failed.result_json) == (
        "timeout", "no result within 600 s", 3, None,
    )  # fmt: skip
    assert store.results(run.id, status="ok") == [ok]
    # a wrong answer keeps the runner's result that showed it
    wid = store.add_result(
        run.id,
        Failure("wrong_answer", "outputs differ from the reference", "mobilenet", "pi5-b", result=r),
        attempt=2,
    )
    [wrong] = [x for x in store.results(run.id) if x.id == wid]
    assert (wrong.status, wrong.result_json, wrong.metrics.latency_n) == ("wrong_answer", r.to_dict(), 300)
    assert wrong.delegate == "xnnpack" and wrong.hashes.model == sha("mobilenet.tflite")
    with pytest.raises(ValueError, match="failure kind must be one of"):
        Failure("crashed", "?", "m", "d")

    assert store.completed_pairs(run.id) == {("mobilenet", "pi5-a")}
    states = store.pair_states(run.id)
    assert states[("resnet", "pi5-a")].complete is False and states[("resnet", "pi5-a")].last_attempt == 3
    assert states[("mobilenet", "pi5-a")].ok_rounds == 1

    done = store.finish_run(run.id)
    assert done.status == "finished" and done.finished_at is not None and done.finished_at >= done.started_at
    second = store.create_run("lab farm", FARM_SHA)
    assert [x.id for x in store.runs()] == [second.id, run.id]
    assert [x.id for x in store.runs(farm="other")] == []

    exported = store.export_run(run.id)
    assert exported["schema"] == EXPORT_SCHEMA and exported["run"]["id"] == run.id
    assert exported["run"]["status"] == "finished" and exported["run"]["farm_sha256"] == FARM_SHA
    assert [x["status"] for x in exported["results"]] == ["ok", "timeout", "wrong_answer"]
    assert exported["results"][0]["result"] == r.to_dict()
    assert json.loads(json.dumps(exported)) == exported  # plain JSON


def test_baselines_resolve_and_unknown_runs(store_url: str) -> None:
    store = open_store(store_url)
    with pytest.raises(UserInputError, match="no runs yet"):
        store.resolve_run("latest")
    a = store.create_run("lab", FARM_SHA)
    with pytest.raises(UserInputError, match="no completed results"):
        store.set_baseline(a.id)
    store.add_result(a.id, make_result())
    b = store.create_run("lab", FARM_SHA)
    store.add_result(b.id, make_result(seed=1))
    assert store.baseline("main") is None
    assert store.set_baseline(a.id).baselines == ("main",)
    store.set_baseline(a.id, "release-1.2")
    assert store.set_baseline(b.id, "main").baselines == ("main",)  # moved, not duplicated
    assert store.baselines() == {"main": b.id, "release-1.2": a.id}
    assert store.run(a.id).baselines == ("release-1.2",)
    assert store.resolve_run("main") == b.id and store.resolve_run("latest") == b.id
    assert store.resolve_run(str(a.id)) == a.id and store.resolve_run(a.id) == a.id
    with pytest.raises(UserInputError, match="there is no run 999"):
        store.run(999)
    with pytest.raises(UserInputError, match="neither a run id nor a baseline"):
        store.resolve_run("nightly")
    with pytest.raises(UserInputError, match="cannot be a baseline name"):
        store.set_baseline(a.id, "latest")
    with pytest.raises(UserInputError, match="there is no run 999"):
        store.add_result(999, make_result())


def test_resume_history_and_names_with_unicode(store_url: str) -> None:
    store = open_store(store_url)
    model, device = "modèle ä 1", "board with spaces ✓"
    first = store.create_run("lab", FARM_SHA)
    store.add_result(
        first.id, make_result(median_us=400, correct=300, tested=360), model=model, device=device
    )
    store.finish_run(first.id)
    store.set_baseline(first.id)
    # A run killed midway: not finished, one pair done, one failed, one not started.
    killed = store.create_run("lab", FARM_SHA)
    store.add_result(killed.id, make_result(median_us=420, seed=2), model=model, device=device)
    store.add_result(
        killed.id, make_result(median_us=440, seed=3), model=model, device=device
    )  # a re-measure round
    store.add_result(
        killed.id, Failure("unreachable", "ssh: connection refused", model="other", device=device)
    )
    assert store.resumable_run(FARM_SHA) == store.run(killed.id)
    assert store.resumable_run(sha("another FARM.toml")) is None
    assert store.completed_pairs(killed.id) == {(model, device)}
    assert store.pair_states(killed.id)[(model, device)].ok_rounds == 2
    store.finish_run(killed.id, status="interrupted")
    assert store.resumable_run(FARM_SHA) is not None
    store.set_status(killed.id, "running")
    assert store.run(killed.id).finished_at is None
    store.finish_run(killed.id)
    assert store.resumable_run(FARM_SHA) is None

    hist = store.history(model, device)
    assert [h.run_id for h in hist] == [first.id, killed.id]
    assert hist[0].baselines == ("main",) and hist[0].accuracy_pct == pytest.approx(100 * 300 / 360)
    assert hist[1].rounds == 2 and hist[0].latency_p50_us is not None and hist[1].latency_p50_us is not None
    assert hist[1].latency_p50_us > hist[0].latency_p50_us
    assert store.history(model, device, limit=1)[0].run_id == killed.id


def test_store_location_env_and_bad_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEQ_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_url(None).database == str(tmp_path / "xdg" / "edgeq" / "results.db")
    store = open_store()
    store.create_run("lab", FARM_SHA)
    db_file = tmp_path / "xdg" / "edgeq" / "results.db"
    assert db_file.is_file() and Path(f"{db_file}-wal").exists()
    with sqlite3.connect(db_file) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()

    monkeypatch.setenv("EDGEQ_DB", str(tmp_path / "env dir" / "my results.db"))
    open_store().close()
    assert (tmp_path / "env dir" / "my results.db").is_file()
    assert resolve_url("postgres://u:secret@db.example/farm").drivername == "postgresql+psycopg"

    with pytest.raises(UserInputError, match="must be SQLite or PostgreSQL, not 'mysql'") as e:
        open_store("mysql://u:hunter2@db/farm")
    assert "hunter2" not in str(e.value)
    with pytest.raises(UserInputError, match="in-memory"):
        open_store("sqlite://")
    with pytest.raises(UserInputError, match="is a directory"):
        open_store(str(tmp_path))


def test_unreachable_postgres_is_one_line_without_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UserInputError) as e:
        open_store(f"postgresql://edgeq:hunter2@127.0.0.1:{port}/farm")
    assert "cannot open the results store postgresql+psycopg://edgeq:***@127.0.0.1" in str(e.value)
    assert "hunter2" not in str(e.value) and "\n" not in str(e.value)
    assert "EDGEQ_DB" in e.value.hint


# ------------------------------------------------------------------------------------- migrations


def test_first_schema_upgrades_to_head_keeping_data(store_url: str) -> None:
    """A store written at revision 0001 (by an older edgeq) is migrated on open; its data survive
    and the new column is filled from the stored result JSON."""
    store = open_store(store_url, revision="0001")
    engine = store.engine
    with engine.connect() as c:
        assert store_db.current_revision(c) == "0001"
        cols = {col["name"] for col in sa.inspect(c).get_columns("results")}
    assert "model_peak_rss_kb" not in cols
    # Write as edgeq did at 0001: reflected 0001 tables, no model_peak_rss_kb column.
    old = sa.MetaData()
    old.reflect(engine)
    r = make_result(model_peak_rss_kb=7321)
    data = r.to_dict()
    samples = data["latency_us"].pop("samples")
    with engine.begin() as c:
        run_id = c.execute(
            old.tables["runs"].insert().values(
                uuid="6f1c2a4e-0000-4000-8000-000000000001", farm="lab", farm_sha256=FARM_SHA, host="ci-1",
                edgeq_version="0.0.9", started_at=sa.func.now(), status="finished", meta={"k": "v"},
            ).returning(old.tables["runs"].c.id)
        ).scalar_one()  # fmt: skip
        c.execute(
            old.tables["results"].insert().values(
                run_id=run_id, recorded_at=sa.func.now(), model="net", device="pi5", attempt=1, status="ok",
                result_json=data, latency_samples_us=samples, latency_n=len(samples),
                latency_p50_us=r.latency_us.p50, peak_rss_kb=49388,
            )
        )  # fmt: skip
        c.execute(
            old.tables["results"].insert().values(
                run_id=run_id, recorded_at=sa.func.now(), model="net", device="pi4", attempt=2,
                status="unreachable", message="no route to host",
            )
        )  # fmt: skip
        c.execute(
            old.tables["baselines"]
            .insert()
            .values(name="main", run_id=run_id, set_at=sa.func.now(), set_by="ci")
        )
    store.close()

    upgraded = open_store(store_url)
    with upgraded.engine.connect() as c:
        assert store_db.current_revision(c) == SCHEMA_HEAD
        indexes = {ix["name"] for ix in sa.inspect(c).get_indexes("results")}
    assert {"ix_results_run_id_model_device", "ix_results_model_device_run_id"} <= indexes
    ok, failed = upgraded.results(run_id)
    assert ok.result_json == r.to_dict() and ok.metrics.model_peak_rss_kb == 7321
    assert ok.metrics.latency_samples_us == tuple(samples)
    assert (failed.status, failed.message, failed.metrics.model_peak_rss_kb) == (
        "unreachable",
        "no route to host",
        None,
    )
    assert upgraded.baseline("main") == run_id and upgraded.run(run_id).meta == {"k": "v"}
    # and the upgraded store keeps working at head
    upgraded.add_result(run_id, make_result(model_peak_rss_kb=8000), model="net", device="pi5")
    assert [x.metrics.model_peak_rss_kb for x in upgraded.results(run_id, status="ok")] == [7321, 8000]


def test_migrations_build_exactly_the_declared_tables(store_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    store = open_store(store_url)
    with store.engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), metadata)
    assert diff == []


def test_a_store_from_a_newer_edgeq_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    with store.engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    store.close()
    with pytest.raises(UserInputError, match="schema revision 0099, which this edgeq does not know"):
        open_store(store_url)


# ------------------------------------------------------------------------------------ concurrency


def test_worker_threads_write_and_read_at_once(store_url: str) -> None:
    store = open_store(store_url)
    run = store.create_run("lab", FARM_SHA)
    results = [make_result(n=200, seed=i) for i in range(8)]
    errors: list[BaseException] = []
    ids: list[int] = []
    lock = threading.Lock()

    def worker(board: int) -> None:
        try:
            for k in range(15):
                rid = store.add_result(run.id, results[board], model=f"m{k}", device=f"board{board}")
                with lock:
                    ids.append(rid)
                store.completed_pairs(run.id)  # readers alongside the writers
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == len(set(ids)) == 120
    assert len(store.completed_pairs(run.id)) == 120
    assert sorted(r.id for r in store.results(run.id, samples=False)) == sorted(ids)


WRITER = textwrap.dedent(
    """
    import sys, time
    from edgeq.farm.store import open_store
    from edgeq.result import Result
    url, run_id, name, count, result_file = sys.argv[1:6]
    store = open_store(url)
    result = Result.load(__import__("pathlib").Path(result_file))
    if run_id == "new":
        run_id = store.create_run("lab", "f" * 64).id
    for k in range(int(count)):
        rid = store.add_result(int(run_id), result, model=f"m{k}", device=name)
        print(rid, flush=True)
    """
)


def _writer(url: str, run_id: str, name: str, count: int, result_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, url, run_id, name, str(count), str(result_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_create_migrate_and_write_one_store(store_url: str, tmp_path: Path) -> None:
    """Both processes open a store nobody has created yet (both try to migrate it) and write to it."""
    result_file = tmp_path / "result.json"
    make_result(n=300).save(result_file)
    procs = [_writer(store_url, "new", f"board{i}", 40, result_file) for i in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    store = open_store(store_url)
    written = sorted(int(x) for out, _ in outs for x in out.split())
    assert len(written) == 80
    runs = store.runs()
    assert len(runs) == 2
    stored = sorted(r.id for run in runs for r in store.results(run.id, samples=False, result_json=False))
    assert stored == written
    with store.engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_connections_switching_a_new_sqlite_store_to_wal_at_once_all_get_through(tmp_path: Path) -> None:
    """Connections that switch a new SQLite file to WAL at the same moment deadlock on the lock
    upgrade, and SQLite answers one of them "database is locked" without waiting (about one in a
    hundred here, 300 rounds of 4); each must get through, with WAL set."""
    failures: list[str] = []
    modes: list[str] = []
    for round_ in range(300):
        url = store_db.resolve_url(str(tmp_path / f"new{round_ % 4}.db"))
        for leftover in tmp_path.glob(f"new{round_ % 4}.db*"):
            leftover.unlink()
        engines = [store_db.create_engine(url) for _ in range(4)]
        start = threading.Barrier(len(engines))

        def connect(engine: sa.Engine, start: threading.Barrier) -> None:
            start.wait()
            try:
                with engine.connect() as c:
                    modes.append(str(c.exec_driver_sql("PRAGMA journal_mode").scalar()))
            except sa.exc.OperationalError as exc:
                failures.append(str(exc.orig))

        threads = [threading.Thread(target=connect, args=(e, start)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for e in engines:
            e.dispose()
    assert failures == [] and modes == ["wal"] * 1200


def test_concurrent_processes_into_one_run(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    run = store.create_run("lab", FARM_SHA)
    result_file = tmp_path / "result.json"
    make_result(n=300).save(result_file)
    procs = [_writer(store_url, str(run.id), f"board{i}", 40, result_file) for i in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    assert len(store.completed_pairs(run.id)) == 120


def test_results_reported_before_a_kill_9_are_in_the_store(store_url: str, tmp_path: Path) -> None:
    store = open_store(store_url)
    run = store.create_run("lab", FARM_SHA)
    result_file = tmp_path / "result.json"
    make_result(n=2000).save(result_file)
    proc = _writer(store_url, str(run.id), "board", 100000, result_file)
    assert proc.stdout is not None
    reported = []
    for line in proc.stdout:
        reported.append(int(line))
        if len(reported) == 25:
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    reopened = open_store(store_url)
    stored = {r.id for r in reopened.results(run.id, samples=False, result_json=False)}
    assert set(reported) <= stored
    assert all(r.result is not None for r in reopened.results(run.id))  # none half-written


def test_same_schema_on_both_backends(postgres: PostgresServer, tmp_path: Path) -> None:
    """SQLite and PostgreSQL stores hold the same tables and columns at head."""
    shapes = []
    for url in (f"sqlite:///{tmp_path / 'a.db'}", postgres.create_database()):
        store = open_store(url)
        with store.engine.connect() as c:
            insp = sa.inspect(c)
            shapes.append(
                {t: sorted(col["name"] for col in insp.get_columns(t)) for t in insp.get_table_names()}
            )
    assert shapes[0] == shapes[1]
    assert set(shapes[0]) == {"alembic_version", "runs", "results", "baselines"}


def _comparable(export: dict) -> list[dict]:
    """An export's results without what differs by store (ids, times)."""
    out = []
    for r in export["results"]:
        r = dict(r)
        for k in ("id", "recorded_at"):
            r.pop(k)
        out.append(r)
    return out


def test_the_same_results_in_sqlite_and_postgresql_give_the_same_verdicts(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """A farm's worth of runs (5 runs × 6 pairs × 3 rounds, failures, a new pair) written to a
    SQLite store and to a PostgreSQL store: the same results come back, and compare gives the same
    verdicts, figure for figure."""
    from support_farmstore import build_farm

    from edgeq.farm import results_api as api

    stores = [open_store(f"sqlite:///{tmp_path / 'farm.db'}"), open_store(postgres.create_database())]
    comparisons = [build_farm(s) for s in stores]
    lite, pg = stores
    assert [r.id for r in lite.runs()] == [r.id for r in pg.runs()]
    for run in lite.runs():
        assert _comparable(api.export(lite, run.id)) == _comparable(api.export(pg, run.id))
    a, b = (c.to_dict() for c in comparisons)
    a.pop("created_at"), b.pop("created_at")
    assert a == b
    assert a["gate_failed"] is True and a["counts"]["regressed"] == 3
    hist = [[{**h.to_dict(), "started_at": None} for h in s.history("mobilenet", "pi5-a")] for s in stores]
    assert hist[0] == hist[1] and len(hist[0]) == 5
