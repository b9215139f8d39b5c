"""Where a model's ops run: on a delegate (an accelerator, XNNPACK) or on the CPU, and why.

One record for the three ways edgeq learns it: an ``offline`` analysis of the file (what can run),
a ``compiler``'s own log (edgetpu_compiler), and the ``device``'s execution plan (what did run).
The runner writes the same shape as plain JSON; :meth:`Coverage.from_dict` reads it.

>>> cov.summary()
'9 of 12 ops on edgetpu, 3 on the CPU'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeq.errors import UserInputError

DELEGATE, CPU = "delegate", "cpu"
SOURCES = ("offline", "compiler", "device")


@dataclass(frozen=True)
class OpPlacement:
    """One op of the model (``index`` in its first subgraph) and where it runs."""

    index: int
    op: str
    placement: str  # DELEGATE or CPU
    reason: str = ""  # e.g. the Edge TPU compiler's status text

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "placement": self.placement, "reason": self.reason}


@dataclass(frozen=True)
class Coverage:
    delegate: str
    source: str  # offline, compiler or device
    ops: tuple[OpPlacement, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return len(self.ops)

    @property
    def on_delegate(self) -> int:
        return sum(1 for o in self.ops if o.placement == DELEGATE)

    @property
    def on_cpu(self) -> int:
        return self.total - self.on_delegate

    @property
    def fraction(self) -> float:
        """Share of ops on the delegate (1.0 for a model with no ops)."""
        return self.on_delegate / self.total if self.total else 1.0

    def fallen_back(self) -> list[OpPlacement]:
        return [o for o in self.ops if o.placement != DELEGATE]

    def summary(self) -> str:
        return f"{self.on_delegate} of {self.total} ops on {self.delegate}, {self.on_cpu} on the CPU"

    def meets(self, minimum: float | str | None) -> bool:
        """Whether the coverage is at least ``minimum`` (a fraction, or ``"all"``; None: always)."""
        if minimum is None:
            return True
        if minimum == "all":
            return self.on_cpu == 0
        return self.fraction + 1e-12 >= float(minimum)

    def shortfall(self, minimum: float | str | None) -> str | None:
        """None when :meth:`meets` ``minimum``; else one line saying what was asked and which ops
        fell back to the CPU (the first eight, with their reasons)."""
        if self.meets(minimum):
            return None
        fell = self.fallen_back()
        names = ", ".join(f"{o.op} (op {o.index}{': ' + o.reason if o.reason else ''})" for o in fell[:8])
        more = f" and {len(fell) - 8} more" if len(fell) > 8 else ""
        want = "all ops" if minimum == "all" else f"{float(minimum or 0):.0%}"
        return f"{self.summary()}; the device profile asks for {want} on {self.delegate}. On the CPU: {names}{more}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegate": self.delegate,
            "source": self.source,
            "summary": self.summary(),
            "on_delegate": self.on_delegate,
            "on_cpu": self.on_cpu,
            "total": self.total,
            "ops": [o.to_dict() for o in self.ops],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Coverage:
        try:
            ops = tuple(
                OpPlacement(int(o["index"]), str(o["op"]), str(o["placement"]), str(o.get("reason", "")))
                for o in data.get("ops") or ()
            )
            return cls(str(data["delegate"]), str(data["source"]), ops, tuple(data.get("notes") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"malformed op placement record: {exc}", "") from None


def parse_min_coverage(value: Any, where: str) -> float | str | None:
    """``"all"``, a fraction 0..1, a percentage such as ``"90%"``, or None."""
    if value is None or value == "all":
        return value
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            f = float(value.strip()[:-1]) / 100.0
        elif isinstance(value, bool):
            raise ValueError
        else:
            f = float(value)
    except (TypeError, ValueError):
        f = -1.0
    if not 0.0 <= f <= 1.0:
        raise UserInputError(
            f"{where}: min_delegate_coverage must be 'all' or a fraction 0..1, got {value!r}",
            'write e.g. min_delegate_coverage = "all" or 0.9',
        )
    return f
