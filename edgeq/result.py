"""What was measured: ``Result`` (one device run, ``edgeq.result/1``) and ``Report`` (a pipeline run,
``edgeq.report/1``), typed and versioned, with load, save and validation.

The runner writes a result as plain JSON (Python 3.8, standard library); the host reads it here and
everything downstream (CLI, report writers, the farm's store, baselines, verdicts) uses these types.
Their JSON Schemas are published in ``docs/schemas/`` (``scripts/gen_schemas.py`` writes them; a
test checks they match these classes).

>>> r = Result.load(Path("result.json"))
>>> r.latency_us.p50, r.device.arch
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeq.errors import UserInputError
from edgeq.files import read_json, write_json

RESULT_SCHEMA = "edgeq.result/1"
REPORT_SCHEMA = "edgeq.report/1"


class _Strict(BaseModel):
    """Unknown keys are an error: the published schema says everything a file may hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Open(BaseModel):
    """A record whose listed keys are typed and whose other keys are sensor-specific detail."""

    model_config = ConfigDict(extra="allow", frozen=True)


# ------------------------------------------------------------------------------------------- result


class LatencyStats(_Strict):
    """Invoke latency in microseconds over the timed runs (population std; percentiles linear)."""

    mean: float
    std: float
    min: float
    p50: float
    p90: float
    p99: float
    max: float
    n: int = Field(description="timed invokes")
    wall_s: float | None = Field(None, description="wall time of the timed phase, seconds")
    samples: list[float] | None = Field(
        None, description="raw per-invoke latencies in µs (all of them, or an unbiased sample of them)"
    )
    samples_note: str | None = Field(None, description="how `samples` was drawn when it is not every run")


class Memory(_Strict):
    """Resident memory in kB (Linux VmRSS / VmHWM of the runner process)."""

    peak_rss_kb: int | None = Field(None, description="the runner process's peak")
    runner_baseline_rss_kb: int | None = Field(
        None, description="the runner with its runtime imported, before the model is loaded"
    )
    model_peak_rss_kb: int | None = Field(
        None, description="peak minus baseline: what loading and running the model added"
    )


class Placement(_Strict):
    """Where the ops ran (the edgeq.placement shape)."""

    delegate: str
    source: Literal["offline", "compiler", "device"]
    summary: str
    on_delegate: int
    on_cpu: int
    total: int
    ops: list[dict[str, Any]]
    notes: list[str] = []


class Execution(_Open):
    """How the model ran: the delegate, its node count, the op placement, the threads in effect."""

    delegate: str | None = None
    delegate_nodes: int | None = None
    path: str | None = None
    placement: Placement | None = None
    threads: int | None = Field(None, description="threads really in effect (None: not settable/known)")


class DeviceInfo(_Open):
    name: str
    arch: str
    runtime: str
    runtime_version: str
    os: str | None = None
    kernel: str | None = None
    python: str | None = None
    hostname: str | None = None
    numpy: str | None = None
    profile: str | None = None
    profile_sha256: str | None = None


class ModelRef(_Strict):
    name: str
    sha256: str
    size_bytes: int


class Accuracy(_Open):
    top1: float
    n: int
    correct: int | None = None
    confusion: list[list[int]] | None = Field(
        None, description="confusion[true][predicted]: sample counts per class pair"
    )

    def per_class(self) -> list[float | None]:
        """Top-1 accuracy of each true class (None for a class with no sample)."""
        if not self.confusion:
            return []
        return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(self.confusion)]


class Warning_(_Strict):
    code: str
    message: str
    hint: str = ""


class Power(_Open):
    """Power and energy (see the README's power section); ``available`` false says why not."""

    available: bool
    source: str | None = None
    reason: str | None = None
    power_mw: dict[str, float | None] | None = None
    energy_mj_per_inference: float | None = None
    energy_mj_per_inference_sigma: float | None = None


class Hashes(_Strict):
    """sha256 of what produced the numbers."""

    model: str | None = None
    runner: str | None = None
    profile: str | None = None
    spec: str | None = None


class Result(_Strict):
    """One measurement on one device, as the runner reported it and the host completed it."""

    SCHEMA: ClassVar[str] = RESULT_SCHEMA

    schema_: Literal["edgeq.result/1"] = Field("edgeq.result/1", alias="schema")
    timestamp: str
    init_ms: float
    latency_us: LatencyStats
    peak_rss_kb: int | None = None
    memory: Memory | None = None
    execution: Execution = Field(default_factory=Execution)
    device: DeviceInfo
    model: ModelRef
    config: dict[str, Any] = Field(description="what the runner really used (runs, warm-up, threads...)")
    spec: dict[str, Any] | None = Field(None, description="the MeasureSpec the host asked for")
    runner_version: str
    runner: dict[str, Any] | None = None
    accuracy: Accuracy | None = None
    custom_ops: list[str] | None = None
    power: Power | None = None
    thermal: dict[str, Any] | None = None
    warnings: list[Warning_] = []
    hashes: Hashes | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "result") -> Result:
        return _validate(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def load(cls, path: Path) -> Result:
        return cls.from_dict(read_json(path, "result", "pass a result file written by edgeq"), str(path))

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())


# ------------------------------------------------------------------------------------------- report


class Report(_Open):
    """A pipeline run: data, recipe, accuracies, sizes, the gate and the on-device result."""

    SCHEMA: ClassVar[str] = REPORT_SCHEMA

    schema_: Literal["edgeq.report/1"] = Field("edgeq.report/1", alias="schema")
    created: str
    dataset: dict[str, Any]
    recipe: dict[str, Any]
    weights: str
    accuracy: dict[str, float]
    params: dict[str, int]
    size_bytes: dict[str, int]
    model: dict[str, Any]
    custom_ops: list[dict[str, Any]] | None = None
    gate: dict[str, Any]
    profile: Result | None = Field(None, description="the int8 (or ternary) model measured on the device")
    profile_float: Result | None = Field(
        None, description="the float student measured on the same device with the same spec"
    )
    plots: dict[str, str] = {}
    versions: dict[str, str]
    wall_s: float
    training: dict[str, Any] | None = Field(
        None,
        description="where training ran (op determinism, TensorFlow threads, CPU): what a repeat depends on",
    )
    delegate: dict[str, Any] | None = Field(
        None, description="for an accelerator: the offline coverage and what its compiler made of the model"
    )
    warnings: list[Warning_] = Field(default_factory=list, description="what a careful user should know")
    failure: dict[str, Any] | None = Field(
        None,
        description="the step that failed (stage, message, hint, exit_code); the report holds what was done",
    )

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @classmethod
    def from_dict(cls, data: Any, where: str = "report") -> Report:
        return _validate(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def load(cls, path: Path) -> Report:
        return cls.from_dict(read_json(path, "report", "pass a report.json from edgeq pipeline"), str(path))

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())


def _validate(cls: Any, data: Any, where: str) -> Any:
    schema = cls.SCHEMA
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise UserInputError(
            f"{where} is not an {schema} file (schema {found!r})", "pass a file written by edgeq"
        )
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise UserInputError(
            f"{where} does not match {schema}: {loc}: {first['msg']}",
            "it was written by another edgeq version or edited by hand",
        ) from None


def json_schema(cls: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of ``Result`` or ``Report`` as published in docs/schemas/."""
    schema = cls.model_json_schema(by_alias=True, mode="serialization")
    schema["required"] = sorted({"schema", *schema.get("required", [])})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://edgeq.dev/schemas/{cls.SCHEMA.replace('/', '-')}.json"  # type: ignore[attr-defined]
    return schema
