"""A meter behind a command the user gives (a USB power meter's CLI, a smart plug's API…).

Power config keys: ``command`` (a command line, string or list), ``unit`` ``"W"`` (each call prints
the present power in watts; sampled like a sensor) or ``"J"`` (each call prints a cumulative energy
in joules, read at the window edges, and sampled too only if ``sample`` is true), ``wrap_j`` (where
that counter wraps, if it does). The first number in the output is taken. Never picked by ``auto``,
and a probe cannot find it: only the user knows the command.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any, Dict, Optional, Sequence

from .common import (
    UNKNOWN,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    run_command,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "external"
NEEDS = (
    'your own meter\'s command, e.g. --power-config \'{"source": "external", "command": "meter --watts"}\''
)
PRIORITY = None  # never guessed: only the user knows the command

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    command = c.raw("command")
    if isinstance(command, str):
        command = shlex.split(command)
    if command is not None and (
        not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
    ):
        raise c.bad("command", "a command line (string or list of strings)")
    if chosen and not command:
        raise c.bad("command", "given when source is external")
    return {
        "command": command,
        "unit": c.string("unit", "W", ("W", "J")) or "W",
        "sample": bool(c.flag("sample", False)),
        "wrap_j": c.number("wrap_j", None, positive=True),
    }


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    o = cfg.options
    if not o.get("command"):
        raise SensorError(
            "no meter command for the external power source",
            'give one: --power-config \'{"source": "external", "command": "meter --watts"}\'',
        )
    return External(o["command"], o.get("unit") or "W", bool(o.get("sample")), o.get("wrap_j"), cfg.timeout_s)


def detect(root: str, vcgencmd: str) -> Availability:
    return Availability(
        False,
        "an external meter cannot be detected: it is whatever command you give",
        'use --power-config \'{"source": "external", "command": "meter --watts", "unit": "W"}\'',
        UNKNOWN,
    )


class External(Reader):
    source = NAME
    spawns_process = True

    def __init__(
        self, command: Sequence[str], unit: str, sample: bool, wrap_j: Optional[float], timeout_s: float
    ) -> None:
        self.argv = list(command)
        self.unit = unit
        self.timeout_s = timeout_s
        if unit == "J":
            self.kind = "energy"
            self.sampled = sample
            self.max_range_uj = (wrap_j * 1e6 if wrap_j else None,)
        try:
            self.read()
        except SensorError as exc:
            raise SensorError(
                "external meter: %s" % exc.message,
                'check "command" in --power-config (run it by hand on the device)',
                status=exc.status,
            ) from None

    def _value(self) -> float:
        out = run_command(self.argv, self.timeout_s)
        m = _NUMBER.search(out)
        if not m:
            raise SensorError("%s printed no number: %r" % (self.argv[0], out.strip()[:80]))
        return float(m.group(0))

    def read(self) -> Any:
        value = self._value()
        if self.kind == "energy":
            return (value * 1e6,)  # J → µJ
        return value * 1000.0  # W → mW

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "command": self.argv, "unit": self.unit}

    def summary(self) -> str:
        value = self.read()
        if self.kind == "energy":
            return "%s prints %.3f J" % (self.argv[0], value[0] / 1e6)
        return "%s prints %.1f mW" % (self.argv[0], value)
