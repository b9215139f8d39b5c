"""``MeasureSpec``: what to measure and how, as one frozen, validated record.

This is the contract between the host and the runner. The host resolves it once (built-in
defaults < device profile < command line, see :mod:`edgeq.spec`) and sends it whole, as JSON
(``runner.pyz run --model m.tflite --spec '{...}'``); the runner reads it back with
:meth:`MeasureSpec.from_dict`, which rejects unknown keys and bad values in one line, and says
clearly what this runner does not support. Python 3.8, standard library only (it runs on devices).

Adding a measurement setting: one entry in ``FIELDS`` here, its command-line option in
``edgeq/cli/measure.py``, and its use in the runner.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .protocol import RunnerError
from .runtimes import CHOICES as RUNTIME_CHOICES

SPEC_SCHEMA = "edgeq.spec/1"

# Where the ops run: ``none`` is the runtime's builtin CPU kernels only (no default delegate),
# ``xnnpack`` its CPU delegate, ``edgetpu`` a Coral through libedgetpu, ``openvino`` OpenVINO's devices.
DELEGATES = ("none", "xnnpack", "edgetpu", "openvino")

_Scalar = (str, int, float, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int_at_least(low: int) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        return None if _is_int(v) and v >= low else "an integer >= %d" % low

    return check


def _positive_number(v: Any) -> Optional[str]:
    return None if _is_number(v) and v > 0 else "a number > 0"


def _number(v: Any) -> Optional[str]:
    return None if _is_number(v) else "a number"


def _one_of(choices: Tuple[str, ...]) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        return None if v in choices else "one of %s" % ", ".join(choices)

    return check


def _string(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and v else "a non-empty string"


def _options(v: Any) -> Optional[str]:
    ok = isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, _Scalar) for k, x in v.items())
    return None if ok else "a table of names to strings, numbers or true/false"


def _object_or_none(v: Any) -> Optional[str]:
    return None if v is None or isinstance(v, dict) else "a JSON object or null"


def _coverage(v: Any) -> Optional[str]:
    if v is None or v == "all" or (_is_number(v) and 0.0 <= v <= 1.0):
        return None
    return '"all" or a fraction between 0 and 1'


def _optional(check: Callable[[Any], Optional[str]]) -> Callable[[Any], Optional[str]]:
    def inner(v: Any) -> Optional[str]:
        return None if v is None else check(v)

    return inner


def _m(check: Callable[[Any], Optional[str]], meaning: str) -> Dict[str, Any]:
    return {"check": check, "meaning": meaning}


@dataclass(frozen=True)
class MeasureSpec:
    """A measurement, frozen and validated: ``MeasureSpec(runs=200).threads == 1``.

    Wrong values raise :class:`RunnerError` (``bad_input``) with one line naming the setting, what
    it must be and what it was; :meth:`from_dict` also rejects unknown settings.
    """

    runs: int = field(default=100, metadata=_m(_int_at_least(1), "timed invokes (at least)"))
    warmup: int = field(default=10, metadata=_m(_int_at_least(0), "untimed invokes before timing"))
    min_seconds: Optional[float] = field(
        default=None, metadata=_m(_optional(_positive_number), "keep timing until this much time has passed")
    )
    threads: int = field(default=1, metadata=_m(_int_at_least(1), "interpreter threads"))
    runtime: str = field(
        default="auto", metadata=_m(_one_of(RUNTIME_CHOICES), "which runtime runs the model")
    )
    delegate: str = field(default="xnnpack", metadata=_m(_one_of(DELEGATES), "where the ops run"))
    delegate_options: Dict[str, Any] = field(
        default_factory=dict,
        metadata=_m(
            _options, "delegate settings (e.g. device = NPU for OpenVINO, device = usb:0 for a Coral)"
        ),
    )
    min_delegate_coverage: Any = field(
        default=None, metadata=_m(_coverage, "the fraction of ops that must run on the delegate, or all")
    )
    power: Optional[Dict[str, Any]] = field(
        default=None,
        metadata=_m(_object_or_none, "power sensor config (source and its settings); null = not measured"),
    )
    thermal: Optional[Dict[str, Any]] = field(
        default=None,
        metadata=_m(_object_or_none, "thermal config (zones, governor, cool-down); null = not recorded"),
    )
    sysfs_root: str = field(
        default="/sys", metadata=_m(_string, "where sensors are read (another root for an emulated tree)")
    )
    vcgencmd: str = field(default="vcgencmd", metadata=_m(_string, "the vcgencmd program (Raspberry Pi)"))
    timeout_s: float = field(
        default=600.0, metadata=_m(_positive_number, "seconds the whole device run may take")
    )
    return_samples: int = field(
        default=10000, metadata=_m(_int_at_least(0), "raw latency samples in the result, at most")
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and value.is_integer() and _is_int(f.default):
                value = int(value)  # JSON may carry 100.0 for 100
            elif _is_int(value) and f.name in ("min_seconds", "timeout_s"):
                value = float(value)
            problem = f.metadata["check"](value)
            if problem is not None:
                raise RunnerError(
                    "bad_input",
                    "measurement setting %s must be %s, got %s" % (f.name, problem, json.dumps(value)),
                    f.metadata["meaning"],
                )
            object.__setattr__(self, f.name, dict(value) if isinstance(value, dict) else value)
        if (self.runtime == "openvino") != (self.delegate == "openvino") and self.runtime != "auto":
            raise RunnerError(
                "bad_input",
                "runtime %s with delegate %s: OpenVINO is both the runtime and the delegate"
                % (self.runtime, self.delegate),
                "use runtime openvino (or auto) with delegate openvino, and a TFLite runtime otherwise",
            )

    def replace(self, **changes: Any) -> "MeasureSpec":
        return self.from_dict(dict(self.to_dict(), **changes))

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: _copy(getattr(self, f.name)) for f in fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MeasureSpec":
        if not isinstance(data, Mapping):
            raise RunnerError("bad_input", "the measurement spec must be a JSON object", "")
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise RunnerError(
                "bad_input",
                "unknown measurement setting%s: %s" % ("s" if len(unknown) > 1 else "", ", ".join(unknown)),
                "known: %s (a runner older than the host? edgeq redeploys it when its sources change)"
                % ", ".join(known),
            )
        return cls(**dict(data))

    @classmethod
    def from_json(cls, text: str) -> "MeasureSpec":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RunnerError(
                "bad_input", "the measurement spec is not valid JSON: %s" % exc, "pass one JSON object"
            ) from None
        return cls.from_dict(data)

    def __hash__(self) -> int:
        return hash(self.to_json())


def _copy(v: Any) -> Any:
    return json.loads(json.dumps(v)) if isinstance(v, (dict, list)) else v


def setting_help(name: str) -> str:
    """What a setting means (for help texts and errors)."""
    for f in fields(MeasureSpec):
        if f.name == name:
            return str(f.metadata["meaning"])
    raise KeyError(name)
