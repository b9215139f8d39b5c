"""What the store hands out and takes in: runs, stored results with their figures, failures.

:func:`row_values` turns an ``edgeq.result`` into the ``results`` row: the result JSON (without its
raw latency samples, which get their own column) and the figures verdicts and reports read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgeq.errors import UserInputError
from edgeq.farm.store.tables import FAILURE_KINDS, OK
from edgeq.result import Result


def utc(value: datetime | None) -> datetime | None:
    """Aware UTC (SQLite gives back naive datetimes; they were written as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    v = utc(value)
    return v.isoformat().replace("+00:00", "Z") if v is not None else None


@dataclass(frozen=True)
class RunInfo:
    """One farm run as the store keeps it."""

    id: int
    uuid: str
    farm: str
    farm_sha256: str
    host: str
    edgeq_version: str
    started_at: datetime
    finished_at: datetime | None
    status: str  # running, finished, failed, interrupted
    meta: dict[str, Any] = field(default_factory=dict)
    baselines: tuple[str, ...] = ()  # baseline names that point at this run

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uuid": self.uuid,
            "farm": self.farm,
            "farm_sha256": self.farm_sha256,
            "host": self.host,
            "edgeq_version": self.edgeq_version,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "status": self.status,
            "meta": self.meta,
            "baselines": list(self.baselines),
        }


@dataclass(frozen=True)
class Failure:
    """A (model, device) measurement that did not give a result: ``kind`` is one of
    :data:`FAILURE_KINDS`; ``result`` is the runner's result when there was one (a wrong answer)."""

    kind: str
    message: str
    model: str
    device: str
    delegate: str | None = None
    model_sha256: str | None = None
    profile_sha256: str | None = None
    result: Result | None = None

    def __post_init__(self) -> None:
        if self.kind not in FAILURE_KINDS:
            raise ValueError(f"failure kind must be one of {', '.join(FAILURE_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class Metrics:
    """The figures of one result, as stored in their own columns (units in the names)."""

    latency_samples_us: tuple[float, ...] | None = None
    latency_n: int | None = None
    latency_mean_us: float | None = None
    latency_p50_us: float | None = None
    latency_p90_us: float | None = None
    latency_p99_us: float | None = None
    init_ms: float | None = None
    energy_mj: float | None = None  # per inference
    energy_sigma_mj: float | None = None  # its standard uncertainty
    accuracy_correct: int | None = None
    accuracy_n: int | None = None
    peak_rss_kb: int | None = None
    model_peak_rss_kb: int | None = None
    thermal_max_c: float | None = None
    throttled: bool | None = None

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = asdict(self)
        d["latency_samples_us"] = list(self.latency_samples_us) if self.latency_samples_us else None
        if not samples:
            d.pop("latency_samples_us")
        return d


METRIC_COLUMNS = tuple(Metrics.__dataclass_fields__)


@dataclass(frozen=True)
class Hashes:
    """sha256 of what produced the numbers."""

    model: str | None = None
    runner: str | None = None
    profile: str | None = None
    spec: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StoredResult:
    """One row of ``results``: one measurement attempt of a (model, device) pair in a run."""

    id: int
    run_id: int
    recorded_at: datetime
    model: str
    device: str
    delegate: str | None
    attempt: int
    status: str  # ok or a failure kind
    message: str | None
    metrics: Metrics
    hashes: Hashes
    runtime: str | None = None
    runtime_version: str | None = None
    arch: str | None = None
    result_json: dict[str, Any] | None = None  # whole, samples included

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def pair(self) -> tuple[str, str]:
        return (self.model, self.device)

    @property
    def result(self) -> Result | None:
        return Result.from_dict(self.result_json, f"stored result {self.id}") if self.result_json else None

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        return {
            "id": self.id,
            "recorded_at": iso(self.recorded_at),
            "model": self.model,
            "device": self.device,
            "delegate": self.delegate,
            "attempt": self.attempt,
            "status": self.status,
            "message": self.message,
            "runtime": self.runtime,
            "runtime_version": self.runtime_version,
            "arch": self.arch,
            "hashes": self.hashes.to_dict(),
            "metrics": self.metrics.to_dict(samples=samples),
            "result": self.result_json,
        }


@dataclass(frozen=True)
class PairState:
    """Where a (model, device) pair of a run stands: what the orchestrator needs to resume or retry."""

    ok_rounds: int  # results with status ok (measurement rounds; >1 after re-measuring)
    failures: int  # rows with a failure kind
    last_status: str
    last_attempt: int

    @property
    def complete(self) -> bool:
        return self.ok_rounds > 0


@dataclass(frozen=True)
class HistoryPoint:
    """One run's figures for one (model, device), for trends across runs."""

    run_id: int
    started_at: datetime
    status: str
    rounds: int
    latency_p50_us: float | None
    latency_p90_us: float | None
    latency_p99_us: float | None
    energy_mj: float | None
    accuracy_pct: float | None
    peak_kb: int | None
    model_sha256: str | None
    baselines: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = iso(self.started_at)
        d["baselines"] = list(self.baselines)
        return d


# ---------------------------------------------------------------------------------- result → row


def spec_sha256(spec: Mapping[str, Any] | None) -> str | None:
    """sha256 of a MeasureSpec's canonical JSON (sorted keys, no spaces), as MeasureSpec.to_json."""
    if not spec:
        return None
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def row_values(result: Result) -> dict[str, Any]:
    """The ``results`` columns that come from an edgeq.result (not the run, pair, status, attempt)."""
    data = result.to_dict()
    lat = dict(data["latency_us"])
    samples = lat.pop("samples", None)
    data["latency_us"] = lat
    memory = result.memory
    power = result.power if result.power is not None and result.power.available else None
    acc = result.accuracy
    correct = None
    if acc is not None:
        correct = acc.correct if acc.correct is not None else round(acc.top1 * acc.n)
    thermal = result.thermal or {}
    throttling = thermal.get("throttling") if isinstance(thermal.get("throttling"), dict) else None
    hashes = result.hashes
    runner = result.runner or {}
    return {
        "result_json": data,
        "latency_samples_us": [float(v) for v in samples] if samples else None,
        "latency_n": result.latency_us.n,
        "latency_mean_us": result.latency_us.mean,
        "latency_p50_us": result.latency_us.p50,
        "latency_p90_us": result.latency_us.p90,
        "latency_p99_us": result.latency_us.p99,
        "init_ms": result.init_ms,
        "energy_mj": power.energy_mj_per_inference if power else None,
        "energy_sigma_mj": power.energy_mj_per_inference_sigma if power else None,
        "accuracy_correct": correct,
        "accuracy_n": acc.n if acc is not None else None,
        "peak_rss_kb": (
            memory.peak_rss_kb if memory and memory.peak_rss_kb is not None else result.peak_rss_kb
        ),
        "model_peak_rss_kb": memory.model_peak_rss_kb if memory else None,
        "thermal_max_c": _float(thermal.get("max_c")),
        "throttled": bool(throttling.get("detected")) if throttling is not None else None,
        "model_sha256": (hashes.model if hashes and hashes.model else result.model.sha256),
        "profile_sha256": (hashes.profile if hashes and hashes.profile else result.device.profile_sha256),
        "runner_sha256": (hashes.runner if hashes and hashes.runner else runner.get("sha256")),
        "spec_sha256": (hashes.spec if hashes and hashes.spec else spec_sha256(result.spec)),
        "delegate": result.execution.delegate or (result.spec or {}).get("delegate"),
        "runtime": result.device.runtime,
        "runtime_version": result.device.runtime_version,
        "arch": result.device.arch,
    }


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def whole_result(result_json: Any, samples: Any) -> dict[str, Any] | None:
    """The stored result JSON with its latency samples put back."""
    if not isinstance(result_json, dict):
        return None
    if samples:
        data = dict(result_json)
        data["latency_us"] = dict(data["latency_us"], samples=list(samples))
        return data
    return result_json


def check_name(what: str, value: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"the {what} name is empty", f"give the {what} a name")
    if len(value) > limit:
        raise UserInputError(
            f"the {what} name {value[:40]!r}... is {len(value)} characters long (at most {limit})",
            f"give the {what} a shorter name",
        )
    return value
