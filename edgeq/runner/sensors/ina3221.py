"""INA3221 through Linux's hwmon ``ina3221`` driver (Jetson Orin/Xavier on JetPack 5/6): three rails a chip.

Files: ``in[1-3]_input`` bus voltage mV, ``curr[1-3]_input`` mA, ``in[1-3]_label`` rail name,
``in[1-3]_enable``; ``update_interval`` ms. Rail power = mV·mA/1000 mW; the chosen rails are
summed. Power config key: ``rails`` (default: a whole-input rail such as VDD_IN alone, else every rail).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .common import (
    ABSENT,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    detect_by_opening,
    hwmon_dirs,
    hwmon_update_interval_s,
    pick_rails,
    read_number,
    sys_path,
    try_read_text,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "ina3221"
NEEDS = "a three-rail INA3221 bound to Linux's ina3221 hwmon driver (Jetson on JetPack 5 or 6)"
PRIORITY = 10


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    return {"rails": c.strings("rails")}


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    return Ina3221(root, cfg.options.get("rails"))


def detect(root: str, vcgencmd: str) -> Availability:
    return detect_by_opening(lambda: Ina3221(root))


class Ina3221(Reader):
    source = NAME

    def __init__(self, root: str, rails: Optional[Sequence[str]] = None) -> None:
        channels: Dict[str, Tuple[str, str]] = {}
        intervals = []
        chips = [d for d, n in hwmon_dirs(root) if n == "ina3221"]
        for d in chips:
            for ch in (1, 2, 3):
                volt = os.path.join(d, "in%d_input" % ch)
                curr = os.path.join(d, "curr%d_input" % ch)
                if not (os.path.exists(volt) and os.path.exists(curr)):
                    continue
                if try_read_text(os.path.join(d, "in%d_enable" % ch)) == "0":
                    continue
                label = try_read_text(os.path.join(d, "in%d_label" % ch))
                channels[label or "%s:in%d" % (os.path.basename(d), ch)] = (volt, curr)
            ui = hwmon_update_interval_s(d)
            if ui:
                intervals.append(ui)
        if not channels:
            raise SensorError(
                "no enabled ina3221 channel under %s" % sys_path(root, "class", "hwmon"),
                "on JetPack 4 the INA3221 is read with --power-source jetson-iio",
                status=ABSENT,
            )
        self.rails = pick_rails(list(channels), rails, "the ina3221")
        self.available = sorted(channels)
        self.paths = [channels[r] for r in self.rails]
        self.chips: List[str] = chips
        self.update_interval_s = max(intervals) if intervals else None
        self.check()

    def read(self) -> float:
        total = 0.0
        for volt, curr in self.paths:
            total += read_number(volt) * read_number(curr) / 1000.0  # mV·mA = µW → mW
        return total

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "name": "ina3221",
            "path": self.chips,
            "rails": self.rails,
            "available": self.available,
        }

    def summary(self) -> str:
        return "ina3221 rails %s (of %s) read %.1f mW" % (
            "+".join(self.rails),
            ", ".join(self.available),
            self.read(),
        )
