"""Reading what ``edgetpu_compiler`` prints (stdout with ``-s``) and writes (``*_edgetpu.log``).

The compiler's report, as versions 2.x to 16.0 print it::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 1753 ms.

    Input model: m.tflite
    ...
    Number of Edge TPU subgraphs: 1
    Total number of operations: 8
    Operation log: out/m_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 5
    Number of operations that will run on CPU: 3

    Operator                       Count      Status

    CONV_2D                        2          Mapped to Edge TPU
    LEAKY_RELU                     1          Operation not supported
    ...

(the two "Number of operations" lines only when something stays on the CPU; the log file has the
version, "Input:", "Output:" and the same table). Failures end the run with one of: "Invalid model:
m.tflite" and a reason ("Model not quantized", "Model could not be parsed" after "ERROR: Didn't
find op for builtin opcode ..."), "Internal compiler error. Aborting!", or "Compilation failed:
..." after the TFLite "ERROR: ..." that caused it, or "Compilation timeout. ..." when its own
timer (``-t``, 180 s by default) ran out; 16.0 then ends with "Compilation failed!".

The table counts ops per (operator, status), not per op: :func:`to_coverage` gives the statuses to
the ops of each type in execution order, agreeing with the offline analysis wherever the counts
allow, and lists the ops where the two still differ.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

from edgeq.placement import CPU, DELEGATE, Coverage, OpPlacement

from .coverage import MAPPED, NAME

_VERSION = re.compile(r"^Edge TPU Compiler version (\S+)")
_HEADER = re.compile(r"^Operator\s+Count\s+Status\s*$")
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_INT_FIELDS = {
    "Number of operations that will run on Edge TPU": "on_edgetpu",
    "Number of operations that will run on CPU": "on_cpu",
    "Total number of operations": "total",
    "Number of Edge TPU subgraphs": "subgraphs",
}
_STR_FIELDS = {
    "Input model": "input_model",
    "Input": "input_model",
    "Output model": "output_model",
    "Output": "output_model",
    "Operation log": "operation_log",
}


@dataclass(frozen=True)
class Row:
    op: str
    count: int
    status: str


@dataclass(frozen=True)
class CompilerLog:
    """What one run of the compiler said. ``failure`` is None when it compiled the model."""

    version: str = ""
    compiled: bool = False
    failure: str | None = None
    failure_kind: str = ""  # not_quantized, op_version, internal, timeout, failed, invalid
    input_model: str = ""
    output_model: str = ""
    operation_log: str = ""
    subgraphs: int | None = None
    total: int | None = None
    on_edgetpu: int | None = None
    on_cpu: int | None = None
    rows: tuple[Row, ...] = field(default=())

    @property
    def mapped(self) -> int:
        """Ops on the Edge TPU: the count the compiler printed, else the table's."""
        if self.on_edgetpu is not None:
            return self.on_edgetpu
        return sum(r.count for r in self.rows if r.status == MAPPED)

    @property
    def table_total(self) -> int:
        return sum(r.count for r in self.rows)


def _failure(lines: list[str]) -> tuple[str | None, str]:
    """The one line that says why the compiler gave up, and its kind (None when it did not)."""
    errors = [ln[len("ERROR:") :].strip() for ln in lines if ln.startswith("ERROR:")]
    errors = [e for e in errors if e and e != "Registration failed."]
    mlir = [ln for ln in lines if re.search(r"\berror: ", ln) and not ln.startswith("ERROR:")]
    for i, ln in enumerate(lines):
        if ln.startswith("Invalid model:"):
            reason = lines[i + 1] if i + 1 < len(lines) and lines[i + 1] else "invalid model"
            if reason == "Model not quantized":
                return "Model not quantized", "not_quantized"
            opcode = [e for e in errors if e.startswith("Didn't find op for builtin opcode")]
            if opcode:
                return opcode[0].split(". An older version")[0], "op_version"
            return f"{reason}" + (f" ({errors[0]})" if errors else ""), "invalid"
    for ln in lines:
        if ln.startswith("Compilation timeout"):
            return ln, "timeout"
    for ln in lines:
        if ln.startswith("Internal compiler error"):
            return "Internal compiler error. Aborting!", "internal"
    for ln in lines:
        if ln.startswith("Compilation failed:"):
            reason = ln[len("Compilation failed:") :].strip()
            cause = errors[0] if errors else (mlir[0].split("error: ", 1)[1] if mlir else "")
            return (f"{cause} ({reason})" if cause else reason), "failed"
    if any(ln.startswith("Compilation failed") for ln in lines):
        return (errors[0] if errors else "Compilation failed!"), "failed"
    return None, ""


def parse(text: str) -> CompilerLog:
    """Parse the compiler's stdout (``-s``) or its ``*_edgetpu.log`` file."""
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").split("\n")]
    stripped = [ln.strip() for ln in lines]
    values: dict[str, object] = {}
    rows: list[Row] = []
    in_table = False
    for ln in stripped:
        m = _VERSION.match(ln)
        if m:
            values["version"] = m.group(1)
            continue
        if _HEADER.match(ln):
            in_table = True
            continue
        if in_table:
            row = _ROW.match(ln)
            if row and not ln.startswith(("Compilation", "Edge TPU")):
                rows.append(Row(row.group(1), int(row.group(2)), row.group(3)))
                continue
            if ln:
                in_table = False
        if ":" in ln:
            key, _, value = ln.partition(":")
            key, value = key.strip(), value.strip()
            if key in _INT_FIELDS and value.isdigit():
                values[_INT_FIELDS[key]] = int(value)
            elif key in _STR_FIELDS and value:
                values.setdefault(_STR_FIELDS[key], value)
    failure, kind = _failure(stripped)
    compiled = failure is None and any(ln.startswith("Model compiled successfully") for ln in stripped)
    return CompilerLog(
        version=str(values.get("version", "")),
        compiled=compiled,
        failure=failure,
        failure_kind=kind,
        input_model=str(values.get("input_model", "")),
        output_model=str(values.get("output_model", "")),
        operation_log=str(values.get("operation_log", "")),
        subgraphs=_int(values.get("subgraphs")),
        total=_int(values.get("total")),
        on_edgetpu=_int(values.get("on_edgetpu")),
        on_cpu=_int(values.get("on_cpu")),
        rows=tuple(rows),
    )


def _int(v: object) -> int | None:
    return v if isinstance(v, int) else None


def to_coverage(log: CompilerLog, offline: Coverage) -> tuple[Coverage, tuple[str, ...]]:
    """The compiler's table as per-op coverage of the model ``offline`` describes, and the ops (and
    counts) where the compiler and the offline analysis disagree."""
    available: dict[str, list[str]] = defaultdict(list)  # op name -> statuses, one per op
    for r in log.rows:
        available[r.op].extend([r.status] * r.count)
    by_name: dict[str, list[OpPlacement]] = defaultdict(list)
    for o in offline.ops:
        by_name[o.op].append(o)
    assigned: dict[int, str] = {}
    notes = [
        f"edgetpu_compiler {log.version or '(unknown version)'} counts statuses per op type; "
        "they are given to the ops of each type in execution order, as the offline analysis has them "
        "where the counts agree"
    ]
    for name, ops in by_name.items():
        pool = available.pop(name, [])
        if len(pool) != len(ops):
            notes.append(f"{name}: the model has {len(ops)}, the compiler's table {len(pool)}")
        for o in ops:  # first, where the compiler says what the offline analysis says
            if o.reason in pool:
                pool.remove(o.reason)
                assigned[o.index] = o.reason
        rest = sorted(pool, key=lambda s: s != MAPPED)  # the compiler maps a prefix: mapped first
        for o in ops:
            if o.index not in assigned and rest:
                assigned[o.index] = rest.pop(0)
    for name, pool in available.items():
        notes.append(f"{name}: {len(pool)} in the compiler's table, none in the model")
    placed = tuple(
        OpPlacement(
            o.index,
            o.op,
            DELEGATE if assigned.get(o.index) == MAPPED else CPU,
            assigned.get(o.index, "not in the compiler's table"),
        )
        for o in offline.ops
    )
    compiled = Coverage(NAME, "compiler", placed, tuple(notes))
    disagreements = []
    if log.mapped != offline.on_delegate:
        disagreements.append(
            f"ops on the Edge TPU: offline {offline.on_delegate} of {offline.total}, "
            f"compiler {log.mapped} of {log.total if log.total is not None else log.table_total}"
        )
    for off, comp in zip(offline.ops, placed, strict=True):
        if (off.placement, off.reason) != (comp.placement, comp.reason):
            disagreements.append(
                f"op {off.index} {off.op}: offline {off.placement} ({off.reason}), "
                f"compiler {comp.placement} ({comp.reason})"
            )
    return compiled, tuple(disagreements)
