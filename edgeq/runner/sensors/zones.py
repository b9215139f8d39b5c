"""Thermal zones and cpufreq policies under a sysfs root: where temperatures and clocks are read.

``class/thermal/thermal_zone<N>/{type,temp}`` (temp in m°C) and
``devices/system/cpu/cpufreq/policy<N>/`` (frequencies in kHz, ``scaling_governor``...).
Standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import os
from typing import List, Optional

from .common import list_dir, numbered, read_number, sys_path, try_read_number, try_read_text


class Zone:
    def __init__(self, name: str, kind: str, path: str) -> None:
        self.name = name
        self.type = kind
        self.temp_path = path


def list_zones(root: str) -> List[Zone]:
    base = sys_path(root, "class", "thermal")
    zones = []
    for _, entry in numbered(list_dir(base), "thermal_zone"):
        d = os.path.join(base, entry)
        zones.append(Zone(entry, try_read_text(os.path.join(d, "type")) or entry, os.path.join(d, "temp")))
    return zones


def read_temp_c(zone: Zone) -> float:
    return read_number(zone.temp_path) / 1000.0  # m°C → °C


class Policy:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.dir = path
        self.cpus = try_read_text(os.path.join(path, "affected_cpus")) or ""

    def attr(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def khz(self, name: str) -> Optional[float]:
        return try_read_number(self.attr(name))

    def governor(self) -> Optional[str]:
        return try_read_text(self.attr("scaling_governor"))

    def available_governors(self) -> List[str]:
        return (try_read_text(self.attr("scaling_available_governors")) or "").split()


def list_policies(root: str) -> List[Policy]:
    base = sys_path(root, "devices", "system", "cpu", "cpufreq")
    return [Policy(e, os.path.join(base, e)) for _, e in numbered(list_dir(base), "policy")]
