"""``edgeq farm run FARM.toml``: the whole run — store, resume, workers, re-measurement, verdicts.

>>> outcome = run_farm(load_plan("FARM.toml"), db=None, against="main", on_event=print)
>>> outcome.exit_code        # 0, 3 (a board failed), 4 (a verdict regressed)

Resuming: a run is identified by the plan's digest (FARM.toml, every model file, every resolved
profile and spec). Rerunning the same plan after a crash or ``kill -9`` continues the newest
unfinished run of that digest — unless its owner is still alive on this host (then a new run
starts) — and measures only what it lacks: pairs without their rounds. Results are committed one
by one, so a killed run loses at most the measurements in flight.

Against a baseline (``--against`` or FARM.toml ``against``): once every pair is measured, the run is
compared with it; pairs whose verdict is ``inconclusive`` and that another round could settle are
measured again (one more round each, all boards in parallel), up to ``[thresholds] max_remeasures``
times, and the last comparison stands.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import EXIT_DEVICE, EXIT_GATE, EXIT_OK, UserInputError
from edgeq.farm.plan import Plan
from edgeq.farm.pool import BoardOutcome, Context, Pool, Task, load_test_data
from edgeq.farm.store import RunInfo, Store, open_store
from edgeq.farm.verdict import Comparison, compare_results
from edgeq.home import edgeq_home

SUMMARY_SCHEMA = "edgeq.farm.run-summary/1"
Emit = Callable[[dict[str, Any]], None]


@dataclass
class RunOutcome:
    """What ``edgeq farm run`` reports at the end."""

    plan: Plan
    run: RunInfo
    resumed: bool
    wall_s: float
    boards: dict[str, BoardOutcome]
    comparison: Comparison | None = None
    remeasured: list[list[tuple[str, str]]] = field(default_factory=list)
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # pairs without an ok result

    @property
    def failed_boards(self) -> list[BoardOutcome]:
        return [b for b in self.boards.values() if b.state in ("failed", "busy")]

    @property
    def failed_pairs(self) -> list[tuple[str, str]]:
        skipped = {b.device for b in self.boards.values() if b.state == "skipped"}
        return [p for p in self.incomplete if p[1] not in skipped]

    @property
    def exit_code(self) -> int:
        if self.comparison is not None and self.comparison.gate_failed:
            return EXIT_GATE
        if self.failed_boards or self.failed_pairs:
            return EXIT_DEVICE
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SUMMARY_SCHEMA,
            "event": "summary",
            "run_id": self.run.id,
            "run": self.run.to_dict(),
            "resumed": self.resumed,
            "farm": self.plan.name,
            "wall_s": round(self.wall_s, 3),
            "boards": {k: v.to_dict() for k, v in sorted(self.boards.items())},
            "incomplete": [list(p) for p in self.incomplete],
            "remeasured": [[list(p) for p in look] for look in self.remeasured],
            "comparison": self.comparison.to_dict() if self.comparison is not None else None,
            "exit_code": self.exit_code,
        }


# ----------------------------------------------------------------------------------- run identity


@contextlib.contextmanager
def _run_lock(uuid: str) -> Iterator[None]:
    """Held for as long as this process works on run ``uuid``: another edgeq on this host sees the
    run is alive and does not resume it."""
    path = edgeq_home() / "locks" / "runs" / f"{uuid}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()


def _owner_alive(run: RunInfo) -> bool:
    """Is the process that owns ``run`` still working on it? Known only on its own host."""
    if run.host != socket.gethostname():
        return False
    path = edgeq_home() / "locks" / "runs" / f"{run.uuid}.lock"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def start_run(store: Store, plan: Plan, fresh: bool = False) -> tuple[RunInfo, bool]:
    """The run to work on: the unfinished run of this plan (resumed), or a new one."""
    if not fresh:
        found = store.resumable_run(plan.digest, farm=plan.name)
        if found is not None and not _owner_alive(found):
            return store.set_status(found.id, "running"), True
    meta = {
        "farm_toml": str(plan.source),
        "plan_digest": plan.digest,
        "rounds": plan.rounds,
        "thresholds": plan.thresholds.to_dict(),
        "against": plan.against,
        "pid": os.getpid(),
        "models": {m.name: m.sha256 for m in plan.models},
        "devices": {d.name: d.profile.address for d in plan.devices},
    }
    return store.create_run(plan.name, plan.digest, meta=meta), False


def tasks_for(
    store: Store, run_id: int, plan: Plan, pairs: list[tuple[str, str]] | None = None
) -> dict[str, list[Task]]:
    """Per board, the pairs that still lack rounds (``pairs``: one more round of just these)."""
    states = store.pair_states(run_id)
    work: dict[str, list[Task]] = {d.name: [] for d in plan.devices}
    for p in plan.pairs:
        have = states[p.key].ok_rounds if p.key in states else 0
        if pairs is None:
            if have < plan.rounds:
                # one task per missing round, interleaved below so each model gets its rounds spread
                work[p.device.name].extend(Task(p, r) for r in range(have + 1, plan.rounds + 1))
        elif p.key in pairs:
            work[p.device.name].append(Task(p, have + 1))
    for name, tasks in work.items():
        # Round-robin: round 1 of every model, then round 2...: rounds of one model are separated
        # in time, as independent rounds should be.
        tasks.sort(key=lambda t: t.target_rounds)
        work[name] = tasks
    return {k: v for k, v in work.items() if v}


# ---------------------------------------------------------------------------------------- the run


def run_farm(
    plan: Plan,
    *,
    db: str | None = None,
    against: str | None = None,
    fresh: bool = False,
    on_event: Emit | None = None,
) -> RunOutcome:
    """Run ``plan``; every result is in the store before it is reported through ``on_event``."""
    started = time.monotonic()
    emit: Emit = on_event or (lambda e: None)
    test_data = load_test_data(plan)
    store = open_store(db or plan.store)
    try:
        against = against or plan.against
        base_id = store.resolve_run(against) if against else None
        run, resumed = start_run(store, plan, fresh)
        if base_id == run.id:
            raise UserInputError(
                f"the baseline {against!r} is this very run ({run.id})",
                "compare against an earlier run: set a baseline with `edgeq farm baseline set RUN`",
            )
        done_before = sum(s.ok_rounds for s in store.pair_states(run.id).values())
        emit(
            {
                "event": "run",
                "run": run.id,
                "uuid": run.uuid,
                "resumed": resumed,
                "store": repr(store),
                "pairs": len(plan.pairs),
                "rounds": plan.rounds,
                "done_before": done_before,
                "boards": [d.name for d in plan.devices],
                "t": time.time(),
            }
        )
        with _run_lock(run.uuid), contextlib.ExitStack() as stack:
            labgrid = None
            if any(d.labgrid_place for d in plan.devices):
                from edgeq.farm.labgrid import Places

                assert plan.labgrid is not None
                labgrid = stack.enter_context(Places(plan.labgrid))
            ctx = Context(plan, store, run.id, run.uuid, emit, labgrid=labgrid, test_data=test_data)
            pool = stack.enter_context(Pool(ctx))
            boards: dict[str, BoardOutcome] = {}
            outcome = RunOutcome(plan, run, resumed, 0.0, boards)
            try:
                boards.update(pool.run(tasks_for(store, run.id, plan)))
                for d in plan.devices:
                    boards.setdefault(
                        d.name, BoardOutcome(d.name, state="done", message="nothing left to measure")
                    )
                if base_id is not None:
                    outcome.comparison = _compare(store, run.id, base_id, plan, against or "")
                    for _ in range(plan.thresholds.max_remeasures):
                        usable = {n for n, b in boards.items() if b.state == "done"}
                        again = [
                            p
                            for p in outcome.comparison.pairs_to_remeasure(planned_rounds=plan.rounds)
                            if p[1] in usable
                        ]
                        if not again or ctx.stop.is_set():
                            break
                        outcome.remeasured.append(again)
                        emit({"event": "remeasure", "pairs": [list(p) for p in again], "t": time.time()})
                        boards.update(pool.run(tasks_for(store, run.id, plan, again)))
                        outcome.comparison = _compare(store, run.id, base_id, plan, against or "")
                pool.close()
            except KeyboardInterrupt:
                store.finish_run(run.id, status="interrupted")
                raise
            states = store.pair_states(run.id)
            outcome.incomplete = sorted(
                p.key for p in plan.pairs if p.key not in states or not states[p.key].complete
            )
            status = "finished" if not outcome.incomplete else "failed"
            outcome.run = store.finish_run(run.id, status=status)
            outcome.wall_s = time.monotonic() - started
            return outcome
    finally:
        store.close()


def _compare(store: Store, run_id: int, base_id: int, plan: Plan, against: str) -> Comparison:
    return compare_results(
        store.results(base_id, result_json=False),
        store.results(run_id, result_json=False),
        plan.thresholds,
        run_id=run_id,
        baseline_run_id=base_id,
        against=against,
    )
