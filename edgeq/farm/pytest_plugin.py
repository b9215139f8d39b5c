"""pytest plugin (``pytest11`` entry point ``edgeq``): a device farm as fixtures, board tests as pytest.

    pytest --edgeq-farm FARM.toml [--edgeq-db URL] tests/device/

``edgeq_board`` is parametrized over the farm's boards (test ids are the device names); a test that
uses it runs once per board::

    import pytest

    @pytest.mark.edgeq_requires("edgetpu")            # boards without it are skipped, with the reason
    def test_mobilenet_is_fast_enough(edgeq_board):
        r = edgeq_board.measure("mobilenet", runs=500)  # a model of FARM.toml by name, or a .tflite path
        assert r.latency_us.p50 < 2_000

A board's capabilities are its delegate, architecture and runtime, ``power`` when it has a power
sensor, ``ssh`` or ``local``, and the ``capabilities`` its [[devices]] entry lists. Boards are taken
as ``edgeq farm run`` takes them — labgrid place, host lock, one SSH connection, board lock — on
first use, and kept until the session ends; every measurement (and every failure, typed) goes to the
results store in one run per pytest session (``edgeq farm show latest``). Without ``--edgeq-farm``
the tests that use ``edgeq_board`` are skipped. ``edgeq_farm`` is the session (its ``plan``,
``store`` and ``run_id``).

Like labgrid's own plugin, which turns a lab into fixtures and its ``lg_feature`` marker into
skips, this keeps device tests ordinary pytest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeq.errors import EdgeqError

_SESSION_KEY: Any = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgeq", "edgeq device farm")
    group.addoption("--edgeq-farm", metavar="FARM.toml", help="run board tests on this farm's boards")
    group.addoption(
        "--edgeq-db",
        metavar="URL",
        help="results store (default: FARM.toml's store, EDGEQ_DB, then the user's)",
    )
    group.addoption(
        "--edgeq-profiles",
        metavar="DIR",
        action="append",
        default=[],
        help="device profile directory (repeatable)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "edgeq_requires(*capabilities): run only on farm boards that have all of these "
        "(a delegate such as edgetpu, an arch, a runtime, power, or FARM.toml capabilities)",
    )
    _session(config)  # a bad FARM.toml is a usage error before anything is collected


def _session(config: pytest.Config) -> FarmSession | None:
    path = config.getoption("edgeq_farm")
    if not path:
        return None
    found = config.stash.get(_SESSION_KEY, None)
    if found is None:
        from edgeq.farm.plan import load_plan

        try:
            plan = load_plan(Path(path), [Path(p) for p in config.getoption("edgeq_profiles")])
            found = FarmSession(plan, config.getoption("edgeq_db"))
        except EdgeqError as exc:
            raise pytest.UsageError(f"--edgeq-farm: {exc.message} ({exc.hint})") from None
        config.stash[_SESSION_KEY] = found
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "edgeq_board" not in metafunc.fixturenames:
        return
    session = _session(metafunc.config)
    if session is None:
        metafunc.parametrize(
            "edgeq_board", [pytest.param(None, marks=pytest.mark.skip(reason="no --edgeq-farm FARM.toml given"))],
            indirect=True, ids=["no-farm"],
        )  # fmt: skip
        return
    names = [d.name for d in session.plan.devices]
    metafunc.parametrize("edgeq_board", names, indirect=True, ids=names)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    farm = session.config.stash.get(_SESSION_KEY, None)
    if farm is not None:
        farm.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    farm = config.stash.get(_SESSION_KEY, None)
    if farm is not None and farm.run_id is not None:
        terminalreporter.write_line(
            f"edgeq: {farm.measured} measurement(s), {farm.failures} failure(s) in run {farm.run_id} "
            f"of {farm.store_name} (edgeq farm show {farm.run_id})"
        )


@pytest.fixture(scope="session")
def edgeq_farm(request: pytest.FixtureRequest) -> FarmSession:
    """The farm of ``--edgeq-farm``: its plan, the results store and this session's run."""
    session = _session(request.config)
    if session is None:
        pytest.skip("no --edgeq-farm FARM.toml given")
    return session


@pytest.fixture
def edgeq_board(request: pytest.FixtureRequest) -> FarmBoard:
    """One board of the farm (the test runs once per board); ``measure(model, **settings)``."""
    name = getattr(request, "param", None)
    session = _session(request.config)
    if name is None or session is None:
        pytest.skip("no --edgeq-farm FARM.toml given")
    device = session.plan.device(name)
    wanted: set[str] = set()
    for mark in request.node.iter_markers("edgeq_requires"):
        wanted.update(str(a) for a in mark.args)
    missing = sorted(wanted - device.capabilities)
    if missing:
        pytest.skip(
            f"board {name} lacks {', '.join(missing)} (it has: {', '.join(sorted(device.capabilities))})"
        )
    return session.board(name)


class FarmBoard:
    """A board of the farm inside a test: ``measure`` runs the real runner there and stores it."""

    def __init__(self, session: FarmSession, name: str) -> None:
        self.session = session
        self.name = name
        self.device = session.plan.device(name)
        self.capabilities = self.device.capabilities
        self.profile = self.device.profile

    def __repr__(self) -> str:
        return f"FarmBoard({self.name!r}, {self.profile.address})"

    def measure(self, model: str | Path, *, test_data: Any = None, **settings: Any) -> Any:
        """Measure ``model`` (a FARM.toml model name, or a .tflite path) with the board's settings
        for it plus ``settings`` (MeasureSpec settings: ``runs=500``, ``power=True``...); the
        :class:`~edgeq.result.Result`, committed to the store. A failure is stored, typed, and raised."""
        return self.session.measure(self.name, model, test_data=test_data, settings=settings)


class FarmSession:
    """The farm for one pytest session: boards taken on first use and kept, one run in the store."""

    def __init__(self, plan: Any, db: str | None) -> None:
        from edgeq.farm.store import open_store

        self.plan = plan
        self.store = open_store(db or plan.store)
        self.store_name = repr(self.store)
        self.run_id: int | None = None
        self.run_uuid = ""
        self.ctx: Any = None
        self.workers: dict[str, Any] = {}
        self.boards: dict[str, Any] = {}
        self.measured = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._labgrid: Any = None

    def _context(self) -> Any:
        from edgeq.farm.pool import Context

        with self._lock:
            if self.ctx is None:
                # Its own digest: `edgeq farm run` of the same FARM.toml never resumes a pytest run.
                digest = hashlib.sha256(f"pytest:{self.plan.digest}".encode()).hexdigest()
                run = self.store.create_run(
                    self.plan.name,
                    digest,
                    meta={"pytest": True, "pid": os.getpid(), "thresholds": self.plan.thresholds.to_dict()},
                )
                self.run_id, self.run_uuid = run.id, run.uuid
                if any(d.labgrid_place for d in self.plan.devices):
                    from edgeq.farm.labgrid import Places

                    self._labgrid = Places(self.plan.labgrid).__enter__()
                self.ctx = Context(
                    self.plan, self.store, run.id, run.uuid, lambda e: None, labgrid=self._labgrid
                )
            return self.ctx

    def board(self, name: str) -> FarmBoard:
        return FarmBoard(self, name)

    def _board(self, name: str) -> Any:
        from edgeq.farm.pool import BoardWorker

        ctx = self._context()
        if name not in self.boards:
            worker = BoardWorker(ctx, self.plan.device(name))
            board = worker.setup()
            if board is None:
                worker.stack.close()
                pytest.skip(f"board {name}: {worker.outcome.message}")
            self.workers[name], self.boards[name] = worker, board
        return self.boards[name]

    def measure(self, name: str, model: str | Path, *, test_data: Any, settings: dict[str, Any]) -> Any:
        from edgeq.farm.plan import Model, Pair
        from edgeq.farm.pool import _coverage_short, _measure, _wrong_answer, classify, load_test_data
        from edgeq.farm.store import Failure

        device = self.plan.device(name)
        by_name = {m.name: m for m in self.plan.models}
        if isinstance(model, str) and model in by_name:
            m = by_name[model]
            base = next((p.spec for p in self.plan.pairs if p.key == (m.name, name)), None)
            spec = base.replace(**settings) if base is not None else device.profile.measure_spec(settings)
        else:
            from edgeq.files import sha256_file

            path = Path(model)
            if not path.is_file():
                known = ", ".join(by_name) or "none"
                raise EdgeqError(f"{model!r} is neither a model of the farm ({known}) nor a file", "")
            m = Model(name=path.stem, path=path.absolute(), sha256=sha256_file(path))
            spec = device.profile.measure_spec({**dict(device.measure), **settings})
        pair = Pair(m, device, spec)
        board = self._board(name)
        data = test_data if test_data is not None else load_test_data(self.plan).get(m.name)
        self.ctx.test_data = {m.name: data} if data is not None else {}
        t0 = time.time()
        try:
            session = board.connect()
            result = _measure(self.ctx, session, pair, board)
        except Exception as exc:
            kind, line = classify(exc)
            self._fail(
                Failure(kind, line, model=m.name, device=name, delegate=spec.delegate, model_sha256=m.sha256)
            )
            raise
        for kind, why in (
            ("wrong_answer", _wrong_answer(pair, result)),
            ("bad_input", _coverage_short(pair, result)),
        ):
            if why is not None:
                self._fail(
                    Failure(kind, why, model=m.name, device=name, model_sha256=m.sha256, result=result)
                )
                raise EdgeqError(f"{m.name} on {name}: {why}", "")
        assert self.run_id is not None
        self.store.add_result(self.run_id, result, model=m.name, device=name)
        self.measured += 1
        board.emit("result", model=m.name, status="ok", t_start=t0, t_end=time.time())
        return result

    def _fail(self, failure: Any) -> None:
        assert self.run_id is not None
        self.store.add_result(self.run_id, failure)
        self.failures += 1

    def close(self) -> None:
        for worker in self.workers.values():
            with contextlib.suppress(Exception):  # releasing at the end of the session is best effort
                worker.stack.close()
        self.workers.clear()
        self.boards.clear()
        if self._labgrid is not None:
            self._labgrid.__exit__(None, None, None)
            self._labgrid = None
        if self.run_id is not None:
            self.store.finish_run(self.run_id, status="finished" if not self.failures else "failed")
        self.store.close()
