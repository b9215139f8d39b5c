"""One worker per board: lock it, connect once, measure its pairs, commit each result as it comes.

A worker (:func:`work_board`) owns one board for its whole share of the run:

1. a labgrid place, when the device names one (its NetworkService is the address);
2. the host lock, then one SSH connection (the transport), then the board lock over that same
   connection (:mod:`edgeq.farm.locks`); that connection serves the deploys and every run;
3. each task (a pair that needs one more round): ``edgeq.remote.measure`` with bounded retries; each
   attempt's outcome — the :class:`~edgeq.result.Result`, or a typed failure — is committed to the
   store before it is reported, so what was reported is what a killed run leaves behind;
4. everything released in reverse order, also on Ctrl-C / SIGTERM (the run closes the transports,
   which stops the device-side processes).

Failures are typed as the store knows them: ``unreachable`` (connect failed, connection lost),
``timeout`` (the runner ran past its ``timeout_s``), ``runtime_error`` (the runner or runtime
failed), ``wrong_answer`` (on-device top-1 below the model's ``min_top1``), ``bad_input`` (the model
or a setting is wrong: the runner refused it). The first three are retried (``retries``, with
doubling delays); a board that stays unreachable has its remaining pairs recorded unreachable
without trying each, and the other boards go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import posixpath
import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeq.devices.connect import DeviceSession, device_python
from edgeq.devices.profile import DeviceProfile
from edgeq.devices.transports import Transport, open_transport
from edgeq.errors import DeviceError, EdgeqError, UserInputError
from edgeq.farm.locks import LOCK_NAME, BoardBusy, BoardLock, HostLock, board_key, describe, wait_for
from edgeq.farm.plan import Device, Pair, Plan
from edgeq.farm.store import Failure, Store
from edgeq.result import Result

RETRYABLE = ("unreachable", "timeout", "runtime_error")
Emit = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Task:
    """Measure ``pair`` until it has ``target_rounds`` ok rounds in the run (one more round)."""

    pair: Pair
    target_rounds: int


@dataclass
class BoardOutcome:
    """How a board's share of the run went."""

    device: str
    state: str = "pending"  # done, failed, busy, skipped, interrupted
    message: str = ""
    measured: int = 0  # ok results committed
    failures: int = 0  # failed attempts committed
    first_s: float | None = None  # time.time() of its first and last second of work
    last_s: float | None = None
    connections: int = 0
    took_over: dict[str, Any] | None = None

    @property
    def busy_s(self) -> float:
        return (self.last_s - self.first_s) if self.first_s is not None and self.last_s is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["busy_s"] = round(self.busy_s, 3)
        return d


@dataclass
class SharedBoard:
    """One board as the run's workers share it when FARM.toml lists it more than once (say the
    local device with two delegates): one host lock, one board lock per workdir, and one device
    measured at a time."""

    mutex: threading.Lock = field(default_factory=threading.Lock)  # held while a worker measures
    setup: threading.Lock = field(default_factory=threading.Lock)
    host: HostLock | None = None
    users: int = 0
    board_locks: dict[str, BoardLock] = field(default_factory=dict)  # lock path -> held by this run


@dataclass
class Context:
    """What every worker of one run shares (all of it thread-safe)."""

    plan: Plan
    store: Store
    run_id: int
    run_uuid: str
    emit: Emit
    stop: threading.Event = field(default_factory=threading.Event)
    labgrid: Any = None  # edgeq.farm.labgrid.Places when a device names a place
    test_data: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _transports: dict[str, Transport] = field(default_factory=dict)
    _boards: dict[str, SharedBoard] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def shared(self, key: str) -> SharedBoard:
        with self._lock:
            return self._boards.setdefault(key, SharedBoard())

    def register(self, device: str, transport: Transport | None) -> None:
        with self._lock:
            if transport is None:
                self._transports.pop(device, None)
            else:
                self._transports[device] = transport

    def close_all(self) -> None:
        """Interrupted: close every board's connection, which stops what runs there."""
        self.stop.set()
        with self._lock:
            transports = list(self._transports.values())
        for t in transports:
            with contextlib.suppress(Exception):  # closing after an interrupt is best effort
                t.close()


def classify(exc: BaseException) -> tuple[str, str]:
    """(failure kind, one line) for what a measurement attempt raised."""
    from edgeq.devices.transports.ssh import CommandTimeout, ConnectionLost

    if isinstance(exc, UserInputError):
        return "bad_input", _line(exc)
    if isinstance(exc, CommandTimeout) or (isinstance(exc, DeviceError) and "timed out" in exc.message):
        return "timeout", _line(exc)
    if isinstance(exc, ConnectionLost | _Unreachable):
        return "unreachable", _line(exc)
    if isinstance(exc, DeviceError):
        if exc.message.startswith(("cannot connect", "cannot resolve")):
            return "unreachable", _line(exc)
        return "runtime_error", _line(exc)
    if isinstance(exc, OSError | EOFError):
        return "unreachable", f"{type(exc).__name__}: {exc}"[:500]
    return "runtime_error", f"internal error: {type(exc).__name__}: {exc}"[:500]


def _line(exc: EdgeqError) -> str:
    return (exc.message + (f" ({exc.hint})" if exc.hint else ""))[:1000]


class _Unreachable(DeviceError):
    """The board could not be connected to (after the transport's own retries)."""


def load_test_data(plan: Plan) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each model's test data, read once on the host."""
    from edgeq.remote import check_test_data

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in plan.models:
        if m.test_data is None:
            continue
        try:
            with np.load(m.test_data, allow_pickle=False) as z:
                out[m.name] = check_test_data((z["x"], z["y"]))
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(
                f"test data {m.test_data} of model {m.name!r} cannot be read: {exc}",
                "give an .npz with arrays x (N, ...) and integer labels y (N,)",
            ) from None
    return out


# ------------------------------------------------------------------------------------------ worker


class _Board:
    """One board's connection and locks, re-established when the connection drops."""

    def __init__(
        self, ctx: Context, device: Device, profile: DeviceProfile, outcome: BoardOutcome, shared: SharedBoard
    ) -> None:
        self.ctx = ctx
        self.shared = shared
        self.device = device
        self.profile = profile
        self.outcome = outcome
        self.session: DeviceSession | None = None
        self.board_lock: BoardLock | None = None
        self.lock_deadline = time.monotonic() + ctx.plan.timeouts.lock_wait_s

    def emit(self, event: str, **fields: Any) -> None:
        self.ctx.emit({"event": event, "board": self.device.name, "t": time.time(), **fields})

    def connect(self) -> DeviceSession:
        """The board's session with the board lock held; (re)connects as needed."""
        if self.session is not None and (self.board_lock is None or self.board_lock.alive):
            return self.session
        if self.session is None:
            trust = self.ctx.plan.trust_new_hosts
            # One connection per board for the whole run, its own: no keeper in between.
            transport = open_transport(self.profile, trust_new_host=trust, persist=False)
            self.ctx.register(self.device.name, transport)
            self.emit("board", state="connecting", message=f"connecting to {self.profile.address}")
            try:
                transport.connect()
                workdir = transport.workdir
                python = device_python(transport, self.profile, workdir)
            except EdgeqError as exc:
                transport.close()
                self.ctx.register(self.device.name, None)
                if isinstance(exc, UserInputError):
                    raise
                raise _Unreachable(exc.message, exc.hint) from exc
            except (OSError, EOFError) as exc:
                transport.close()
                self.ctx.register(self.device.name, None)
                raise _Unreachable(f"cannot connect to {self.profile.address}: {exc}", "") from exc
            self.session = DeviceSession(self.profile, transport, python, workdir)
            self.outcome.connections += 1
        else:
            # The keeper died with the old connection: reconnect, then take the lock again.
            try:
                self.session.transport.connect()
            except EdgeqError as exc:
                raise _Unreachable(exc.message, exc.hint) from exc
            self.outcome.connections += 1
        if not self.session.transport.is_local:
            self._lock_board(self.session)
        return self.session

    def _lock_board(self, s: DeviceSession) -> None:
        if self.board_lock is not None:  # its keeper went with the old connection
            self.board_lock.release()
            self.board_lock = None
        path = posixpath.join(s.workdir, LOCK_NAME)
        other = self.shared.board_locks.get(path)
        if other is not None and other.alive:
            return  # another device of this run on this board holds it (they take turns)
        info = {**self.ctx_info(), "device": self.device.name}
        lock = BoardLock(s.transport, s.python, s.workdir, info)
        remaining = max(0.0, self.lock_deadline - time.monotonic())
        self.emit("board", state="locking", message="taking the board lock")
        wait_for(
            lock.try_acquire,
            remaining,
            f"board {self.device.name} ({self.profile.address})",
            self.ctx.stop.is_set,
            lambda h: self.emit("board", state="waiting", message=f"waiting for {describe(h)}"),
        )
        self.board_lock = lock
        self.shared.board_locks[path] = lock
        if lock.took_over:
            self.outcome.took_over = lock.took_over
            self.emit(
                "board",
                state="locked",
                message=f"took over a stale board lock of {describe(lock.took_over)}: its holder is gone",
            )

    def ctx_info(self) -> dict[str, Any]:
        from edgeq.farm.locks import holder_info

        return holder_info(f"{self.ctx.run_id} ({self.ctx.run_uuid[:8]})")

    def close(self) -> None:
        if self.board_lock is not None:
            for path, held in list(self.shared.board_locks.items()):
                if held is self.board_lock:
                    del self.shared.board_locks[path]
            self.board_lock.release()
            self.board_lock = None
        if self.session is not None:
            self.session.transport.close()
            self.ctx.register(self.device.name, None)
            self.session = None


class BoardWorker(threading.Thread):
    """The one thread of one board for the whole run: it takes batches of tasks from its queue,
    keeping the labgrid place, the locks and the connection from its first batch to the end."""

    def __init__(self, ctx: Context, device: Device) -> None:
        super().__init__(name=f"edgeq-board-{device.name}", daemon=True)
        self.ctx = ctx
        self.device = device
        self.outcome = BoardOutcome(device.name)
        self.queue: queue.Queue[list[Task] | None] = queue.Queue()
        self.idle = threading.Event()
        self.idle.set()
        self.stack = ExitStack()
        self.board: _Board | None = None

    def submit(self, tasks: list[Task]) -> None:
        self.idle.clear()
        self.queue.put(tasks)

    def finish(self) -> None:
        self.queue.put(None)

    def emit(self, event: str, **fields: Any) -> None:
        self.ctx.emit({"event": event, "board": self.device.name, "t": time.time(), **fields})

    def run(self) -> None:
        try:
            while True:
                tasks = self.queue.get()
                if tasks is None:
                    return
                try:
                    self._batch(tasks)
                finally:
                    self.idle.set()
        finally:
            with contextlib.suppress(Exception):  # releasing after a lost connection is best effort
                self.stack.close()
            if self.outcome.first_s is not None:
                self.outcome.last_s = time.time()

    def _batch(self, tasks: list[Task]) -> None:
        out = self.outcome
        if out.state in ("failed", "busy", "skipped", "interrupted") or not tasks:
            return
        try:
            if self.board is None:
                self.board = self.setup()
                if self.board is None:
                    return
            with self.board.shared.mutex:  # one device of a board at a time
                gone = _run_tasks(self.ctx, self.board, tasks, out)
            out.last_s = time.time()
            if self.ctx.stop.is_set():
                out.state = "interrupted"
                return
            if gone is not None:
                out.state, out.message = "failed", gone
                self.emit("board", state="failed", message=gone, measured=out.measured, failures=out.failures)
                return
        except BoardBusy as exc:
            if self.ctx.stop.is_set():  # it stopped waiting because the run was interrupted
                out.state = "interrupted"
                return
            out.state, out.message = "busy", exc.message
            self.emit("board", state="busy", message=exc.message)
            return
        except Exception as exc:
            if self.ctx.stop.is_set():
                out.state = "interrupted"
                return
            kind, line = classify(exc)
            out.state, out.message = "failed", f"{kind}: {line}"
            if line.startswith("internal error"):
                self.emit("warning", message=traceback.format_exc()[-2000:])
            self.emit("board", state="failed", message=out.message)
            return
        if out.failures and not out.measured:
            out.state, out.message = "failed", f"every attempt failed ({out.failures})"
        else:
            out.state = "done"
            out.message = f"{out.failures} failed attempt(s)" if out.failures else ""
        self.emit("board", state=out.state, message=out.message, measured=out.measured, failures=out.failures)

    def setup(self) -> _Board | None:
        """The labgrid place (when named), the host lock, the board (connected on first use);
        None when the place is busy and the farm skips it. Released by ``self.stack.close()``."""
        ctx, device, out, stack = self.ctx, self.device, self.outcome, self.stack
        profile = device.profile
        if device.labgrid_place is not None:
            self.emit("board", state="acquiring", message=f"acquiring labgrid place {device.labgrid_place}")
            placed = stack.enter_context(_place(ctx, device, self.emit))
            if placed is None:
                out.state = "skipped"
                out.message = f"labgrid place {device.labgrid_place} is held by someone else: skipped"
                self.emit("board", state="skipped", message=out.message)
                return None
            profile = placed
        shared = ctx.shared(board_key(profile))
        with shared.setup:  # the first of this run's workers on this board takes its host lock
            if shared.host is None:
                host = HostLock(board_key(profile), _info(ctx, device))
                self.emit("board", state="locking", message="taking the host lock")
                wait_for(
                    host.try_acquire,
                    ctx.plan.timeouts.lock_wait_s,
                    f"board {device.name} ({profile.address})",
                    ctx.stop.is_set,
                    lambda h: self.emit("board", state="waiting", message=f"waiting for {describe(h)}"),
                )
                shared.host = host
            shared.users += 1

        def release_host() -> None:
            with shared.setup:
                shared.users -= 1
                if shared.users == 0 and shared.host is not None:
                    shared.host.release()
                    shared.host = None

        stack.callback(release_host)
        out.first_s = time.time()
        board = _Board(ctx, device, profile, out, shared)
        stack.callback(board.close)
        return board


def _info(ctx: Context, device: Device) -> dict[str, Any]:
    from edgeq.farm.locks import holder_info

    return {**holder_info(f"{ctx.run_id} ({ctx.run_uuid[:8]})"), "device": device.name}


@contextmanager
def _place(ctx: Context, device: Device, emit: Callable[..., None]) -> Iterator[DeviceProfile | None]:
    assert device.labgrid_place is not None and ctx.labgrid is not None
    with ctx.labgrid.hold(device.labgrid_place, device.profile, ctx.stop, emit) as profile:
        yield profile


def _run_tasks(ctx: Context, board: _Board, tasks: list[Task], out: BoardOutcome) -> str | None:
    """Measure ``tasks`` in order; returns why the board is gone (unreachable), or None."""
    plan = ctx.plan
    gone: str | None = None  # the board is unreachable: the rest are recorded without trying
    for task in tasks:
        if ctx.stop.is_set():
            return gone
        pair = task.pair
        model, dev = pair.model, pair.device
        state = ctx.store.pair_states(ctx.run_id).get(pair.key)
        if state is not None and state.ok_rounds >= task.target_rounds:
            continue  # another run of the same plan (resumed elsewhere) measured it meanwhile
        round_no = (state.ok_rounds if state else 0) + 1
        first_attempt = (state.last_attempt + 1) if state and state.last_status != "ok" else 1
        if gone is not None:
            _record_failure(
                ctx, board, pair, "unreachable", f"not measured: {gone}", first_attempt, round_no, out
            )
            continue
        attempts = 1 + plan.retries
        for i in range(attempts):
            attempt = first_attempt + i
            if ctx.stop.is_set():
                return gone
            t0: float | None = None  # set once the board is ours: the attempt's time on the board
            board.emit("measure", model=model.name, round=round_no, attempt=attempt)
            try:
                session = board.connect()
                t0 = time.time()
                result = _measure(ctx, session, pair, board)
            except BoardBusy:
                raise
            except Exception as exc:
                if ctx.stop.is_set():
                    return gone
                kind, line = classify(exc)
                if kind == "runtime_error" and line.startswith("internal error"):
                    board.emit("warning", message=traceback.format_exc()[-2000:])
                _record_failure(ctx, board, pair, kind, line, attempt, round_no, out, t0)
                if kind not in RETRYABLE:
                    break
                if i + 1 == attempts:
                    if kind == "unreachable":
                        gone = f"board unreachable ({line[:200]})"
                    break
                board.emit(
                    "retry",
                    model=model.name,
                    attempt=attempt,
                    kind=kind,
                    delay_s=plan.retry_delay_s * 2**i,
                )
                if ctx.stop.wait(plan.retry_delay_s * 2**i):
                    return gone
                continue
            failure = _wrong_answer(pair, result)
            if failure is not None:
                _record_failure(ctx, board, pair, "wrong_answer", failure, attempt, round_no, out, t0, result)
                break
            fell_back = _coverage_short(pair, result)
            if fell_back is not None:
                _record_failure(ctx, board, pair, "bad_input", fell_back, attempt, round_no, out, t0, result)
                break
            rid = ctx.store.add_result(ctx.run_id, result, model=model.name, device=dev.name, attempt=attempt)
            out.measured += 1
            board.emit(
                "result",
                model=model.name,
                round=round_no,
                attempt=attempt,
                status="ok",
                result_id=rid,
                latency_p50_us=result.latency_us.p50,
                t_start=t0,
                t_end=time.time(),
            )
            break
    return gone


def _measure(ctx: Context, session: DeviceSession, pair: Pair, board: _Board) -> Result:
    from edgeq.remote import measure

    def on_event(e: dict[str, Any]) -> None:
        if e.get("event") == "progress":
            board.emit(
                "progress",
                model=pair.model.name,
                phase=e.get("phase"),
                done=e.get("done"),
                total=e.get("total"),
            )
        elif e.get("event") == "deploy" and e.get("bytes_sent"):
            board.emit("deploy", name=e.get("name"), bytes_sent=e.get("bytes_sent"))

    return measure(
        session,
        pair.model.path,
        pair.spec,
        test_data=ctx.test_data.get(pair.model.name),
        on_event=on_event,
    )


def _coverage_short(pair: Pair, result: Result) -> str | None:
    """``min_delegate_coverage`` not met: ops fell back to the CPU (the model or the setting must
    change, so it is bad input and not retried)."""
    from edgeq.placement import Coverage

    placement = result.execution.placement
    if pair.spec.min_delegate_coverage is None or placement is None:
        return None
    return Coverage.from_dict(placement.model_dump()).shortfall(pair.spec.min_delegate_coverage)


def _wrong_answer(pair: Pair, result: Result) -> str | None:
    want = pair.model.min_top1
    if want is None:
        return None
    acc = result.accuracy
    if acc is None:
        return f"no on-device accuracy came back (min_top1 {want})"
    if acc.top1 < want:
        return f"on-device top-1 {acc.top1:.4f} is below min_top1 {want} ({acc.n} test samples)"
    return None


def _record_failure(
    ctx: Context,
    board: _Board,
    pair: Pair,
    kind: str,
    message: str,
    attempt: int,
    round_no: int,
    out: BoardOutcome,
    t0: float | None = None,
    result: Result | None = None,
) -> None:
    failure = Failure(
        kind,
        message,
        model=pair.model.name,
        device=pair.device.name,
        delegate=pair.spec.delegate,
        model_sha256=pair.model.sha256,
        profile_sha256=pair.device.profile.digest(),
        result=result,
    )
    rid = ctx.store.add_result(ctx.run_id, failure, attempt=attempt)
    out.failures += 1
    board.emit(
        "result",
        model=pair.model.name,
        round=round_no,
        attempt=attempt,
        status=kind,
        message=message,
        result_id=rid,
        t_start=t0,
        t_end=time.time(),
    )


class Pool:
    """The run's board workers: ``run(work)`` hands each board its tasks and waits until all are
    idle; ``close()`` ends them (releasing places, locks and connections)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.workers: dict[str, BoardWorker] = {}

    def run(self, work: dict[str, list[Task]]) -> dict[str, BoardOutcome]:
        for name, tasks in work.items():
            w = self.workers.get(name)
            if w is None:
                w = self.workers[name] = BoardWorker(self.ctx, self.ctx.plan.device(name))
                w.start()
            w.submit(tasks)
        try:
            for name in work:
                while not self.workers[name].idle.wait(0.2):
                    pass
        except BaseException:
            self.interrupt()
            raise
        return {name: w.outcome for name, w in self.workers.items()}

    def interrupt(self) -> None:
        self.ctx.close_all()
        self.close(timeout_s=15.0)

    def close(self, timeout_s: float = 60.0) -> None:
        for w in self.workers.values():
            w.finish()
        deadline = time.monotonic() + timeout_s
        for w in self.workers.values():
            w.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
