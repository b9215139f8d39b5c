"""Raspberry Pi 5: the PMIC's ADC through ``vcgencmd pmic_read_adc`` (amps and volts per rail).

Every rail with a current and a voltage is parsed; power is the sum over the chosen rails (power
config key ``rails``; default: all). This undercounts the board: the 5 V input (``EXT5V_V``) has no
current reading, and USB, the fan and conversion losses are not on any rail.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .common import (
    ABSENT,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    detect_by_opening,
    pick_rails,
    run_command,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "rpi5-pmic"
NEEDS = "a Raspberry Pi 5 with vcgencmd (libraspberrypi-bin) usable by the runner's user (video group)"
PRIORITY = 40

SCOPE = (
    "sum of the PMIC's rails (SoC core, memory, I/O): it undercounts the 5 V input, which also "
    "feeds USB, the fan and conversion losses"
)


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    return {"rails": c.strings("rails")}


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    return RpiPmic(vcgencmd, cfg.options.get("rails"), cfg.timeout_s)


def detect(root: str, vcgencmd: str) -> Availability:
    return detect_by_opening(lambda: RpiPmic(vcgencmd))


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=(\S+?)([AV])\s*$")


def parse_pmic_read_adc(text: str) -> Dict[str, Dict[str, float]]:
    """``vcgencmd pmic_read_adc`` (Raspberry Pi 5) → {rail: {"current_a", "volt_v"}}.

    Lines look like ``  VDD_CORE_A current(7)=2.34567000A`` and ``  VDD_CORE_V volt(15)=0.78000000V``;
    a rail's current and voltage have different ADC channel numbers, so they pair by name. Some
    rails have a voltage only (``EXT5V_V``, ``BATT_V``); unreadable values (``nanV``) are skipped.
    """
    rails: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if not m:
            continue
        rail, suffix, what, _channel, raw, unit = m.groups()
        if (suffix, what, unit) not in (("A", "current", "A"), ("V", "volt", "V")):
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isnan(value) or math.isinf(value):
            continue
        rails.setdefault(rail, {})["current_a" if suffix == "A" else "volt_v"] = value
    return rails


def pmic_power_mw(rails: Dict[str, Dict[str, float]], chosen: Optional[Sequence[str]] = None) -> float:
    """Σ V·A over the rails that have both (or the chosen ones), in mW."""
    total = 0.0
    for name, r in rails.items():
        if chosen is not None and name not in chosen:
            continue
        if "current_a" in r and "volt_v" in r:
            total += r["current_a"] * r["volt_v"] * 1000.0  # A·V = W → mW
    return total


class RpiPmic(Reader):
    source = NAME
    spawns_process = True
    note = SCOPE

    def __init__(self, vcgencmd: str, rails: Optional[Sequence[str]] = None, timeout_s: float = 2.0) -> None:
        self.argv = [vcgencmd, "pmic_read_adc"]
        self.timeout_s = timeout_s
        try:
            parsed = parse_pmic_read_adc(run_command(self.argv, timeout_s))
        except SensorError as exc:
            # Older boards' firmware does not know the command: that is "not a Pi 5", not a fault.
            absent = exc.status == ABSENT or "not registered" in exc.message.lower()
            raise SensorError(
                "Raspberry Pi 5 PMIC not available: %s" % exc.message,
                "needs a Pi 5 with vcgencmd (apt install libraspberrypi-bin) and the runner's user in the "
                "video group; the profile's vcgencmd key names another path",
                status=ABSENT if absent else exc.status,
            ) from None
        paired = sorted(n for n, r in parsed.items() if "current_a" in r and "volt_v" in r)
        if not paired:
            raise SensorError(
                "vcgencmd pmic_read_adc printed no rail with both current and voltage",
                "pmic_read_adc reads the PMIC of a Raspberry Pi 5 only",
                status=ABSENT,
            )
        self.available: List[str] = paired
        self.rails = list(paired) if not rails else pick_rails(paired, rails, "the PMIC")

    def read(self) -> float:
        return pmic_power_mw(parse_pmic_read_adc(run_command(self.argv, self.timeout_s)), self.rails)

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "name": "pmic_read_adc", "rails": self.rails, "scope": SCOPE}

    def summary(self) -> str:
        return "vcgencmd pmic_read_adc: %d rails read %.1f mW" % (len(self.rails), self.read())
