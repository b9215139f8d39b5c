"""Jetson on JetPack 4: the ``ina3221x`` iio driver, ``in_power<N>_input`` mW per rail ``rail_name_<N>``.

(``in_current<N>_input`` mA and ``in_voltage<N>_input`` mV exist too; power is read directly.) Power
config key: ``rails`` (default: a whole-input rail such as POM_5V_IN alone, else every rail).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .common import (
    ABSENT,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    detect_by_opening,
    list_dir,
    numbered,
    pick_rails,
    read_number,
    sys_path,
    try_read_text,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "jetson-iio"
NEEDS = "a Jetson on JetPack 4 (the ina3221x iio driver's rail_name_* / in_power*_input files)"
PRIORITY = 20


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    return {"rails": c.strings("rails")}


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    return JetsonIio(root, cfg.options.get("rails"))


def detect(root: str, vcgencmd: str) -> Availability:
    return detect_by_opening(lambda: JetsonIio(root))


class JetsonIio(Reader):
    source = NAME

    def __init__(self, root: str, rails: Optional[Sequence[str]] = None) -> None:
        dirs: List[str] = []
        seen = set()
        candidates = [sys_path(root, "bus", "iio", "devices")]
        drivers = sys_path(root, "bus", "i2c", "drivers", "ina3221x")
        candidates += [os.path.join(drivers, e) for e in list_dir(drivers)]
        for base in candidates:
            for _, entry in numbered(list_dir(base), "iio:device"):
                d = os.path.join(base, entry)
                real = os.path.realpath(d)
                if real not in seen:
                    seen.add(real)
                    dirs.append(d)
        channels: Dict[str, str] = {}
        for d in dirs:
            for entry in list_dir(d):
                m = re.match(r"^rail_name_(\d+)$", entry)
                power = os.path.join(d, "in_power%s_input" % m.group(1)) if m else ""
                if m and os.path.exists(power):
                    name = try_read_text(os.path.join(d, entry)) or entry
                    channels[name] = power
        if not channels:
            raise SensorError(
                "no iio device with rail_name_* / in_power*_input under %s" % candidates[0],
                "on JetPack 5 and 6 the INA3221 is read with --power-source ina3221",
                status=ABSENT,
            )
        self.rails = pick_rails(sorted(channels), rails, "the Jetson's ina3221x")
        self.available = sorted(channels)
        self.paths = [channels[r] for r in self.rails]
        self.check()

    def read(self) -> float:
        return sum(read_number(p) for p in self.paths)  # mW

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "name": "ina3221x", "rails": self.rails, "available": self.available}

    def summary(self) -> str:
        return "ina3221x rails %s (of %s) read %.1f mW" % (
            "+".join(self.rails),
            ", ".join(self.available),
            self.read(),
        )
