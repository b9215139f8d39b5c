"""INA219/220/226/230/231… through Linux's hwmon ``ina2xx`` driver: the board's input as its shunt sees it.

Files (``class/hwmon/hwmonN``; N changes across boots, so the chip is found by its ``name``):
``power1_input`` µW; ``in1_input`` bus voltage mV (``in0_input`` is the shunt voltage); ``curr1_input``
mA; ``update_interval`` ms (INA226 family only). Power config keys: ``sensor`` (the chip's hwmon
name, which is the profile's ``power_sensor``), ``match`` (part of its sysfs path, to pick one of
several chips).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, Optional

from .common import (
    ABSENT,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    detect_by_opening,
    hwmon_dirs,
    hwmon_update_interval_s,
    read_number,
    sys_path,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "ina2xx"
NEEDS = "an INA219/INA226-family current sensor bound to Linux's ina2xx hwmon driver"
PRIORITY = 30

# hwmon ``name`` values of the chips the ina2xx driver family serves (ina238 has its own driver with
# the same attributes and units).
CHIPS = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina209", "ina238", "ina237")


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    return {"sensor": c.string("sensor", None), "match": c.string("match", None)}


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    return Ina2xx(root, cfg.options.get("sensor"), cfg.options.get("match"))


def detect(root: str, vcgencmd: str) -> Availability:
    return detect_by_opening(lambda: Ina2xx(root))


class Ina2xx(Reader):
    source = NAME

    def __init__(self, root: str, sensor: Optional[str] = None, match: Optional[str] = None) -> None:
        names = (sensor,) if sensor else CHIPS
        every = hwmon_dirs(root)
        found = [(d, n) for d, n in every if n in names]
        if match:
            found = [(d, n) for d, n in found if match in os.path.realpath(d)]
        if not found:
            seen = ", ".join(sorted({n for _, n in every})) or "none"
            raise SensorError(
                "no hwmon device named %s under %s (hwmon devices: %s)"
                % ("/".join(names), sys_path(root, "class", "hwmon"), seen),
                "bind the ina2xx driver to the chip (a device-tree overlay), or set power_sensor in the "
                "device profile to its hwmon name",
                status=ABSENT,
            )
        self.dir, self.name = found[0]
        self.power_path = os.path.join(self.dir, "power1_input")
        self.volt_path = os.path.join(self.dir, "in1_input")
        self.curr_path = os.path.join(self.dir, "curr1_input")
        self.has_power = os.path.exists(self.power_path)
        if not self.has_power and not (os.path.exists(self.volt_path) and os.path.exists(self.curr_path)):
            raise SensorError(
                "%s (%s) has neither power1_input nor in1_input + curr1_input" % (self.name, self.dir),
                "set power_sensor in the device profile to the hwmon name of a power sensor",
            )
        self.update_interval_s = hwmon_update_interval_s(self.dir)
        self.check()

    def read(self) -> float:
        if self.has_power:
            return read_number(self.power_path) / 1000.0  # µW → mW
        return read_number(self.volt_path) * read_number(self.curr_path) / 1000.0  # mV·mA = µW → mW

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.dir,
            "attribute": "power1_input" if self.has_power else "in1_input*curr1_input",
            "scope": "what flows through the sensor's shunt (usually the board's input)",
        }

    def summary(self) -> str:
        return "%s at %s reads %.1f mW" % (self.name, self.dir, self.read())
