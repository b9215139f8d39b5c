"""Intel RAPL (and recent AMD) through powercap: ``intel-rapl:<N>/energy_uj``, cumulative µJ.

The counter wraps at ``max_energy_range_uj`` (µJ) — every ~60 s at full load on some parts — so
readings are differenced with wrap handling. Default domains: the top-level packages
(``intel-rapl:0``, ``intel-rapl:1``…), not their subzones (core, uncore, dram), which the package
already contains; power config key ``domains`` picks others. Readable by root only since Linux 5.10.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from .common import (
    ABSENT,
    UNREADABLE,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    detect_by_opening,
    list_dir,
    os_error_text,
    read_number,
    sys_path,
    try_read_number,
    try_read_text,
)

if TYPE_CHECKING:
    from ..power import PowerConfig

NAME = "rapl"
NEEDS = "an Intel (or recent AMD) x86 CPU with powercap RAPL, readable by the runner's user"
PRIORITY = 90  # the CPU package only: any board sensor sees more

HINT = (
    "since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only: run the runner as root, or "
    "grant read access with 'sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj' (until reboot; "
    "a systemd-tmpfiles line 'z /sys/class/powercap/intel-rapl:0/energy_uj 0444 - - -' makes it stick)"
)


def options(c: ConfigReader, chosen: bool) -> Dict[str, Any]:
    return {"domains": c.strings("domains")}


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Reader:
    return Rapl(root, cfg.options.get("domains"))


def detect(root: str, vcgencmd: str) -> Availability:
    return detect_by_opening(lambda: Rapl(root))


class Rapl(Reader):
    kind = "energy"
    source = NAME

    def __init__(self, root: str, domains: Optional[Sequence[str]] = None) -> None:
        base = sys_path(root, "class", "powercap")
        entries = list_dir(base)
        if domains:
            chosen = list(domains)
            missing = [d for d in chosen if d not in entries]
            if missing:
                raise SensorError(
                    "no RAPL domain %s under %s" % (", ".join(missing), base),
                    'set "domains" in --power-config to some of: %s'
                    % (", ".join(e for e in entries if e.startswith("intel-rapl:")) or "none"),
                    status=ABSENT,
                )
        else:
            chosen = [e for e in entries if re.match(r"^intel-rapl:\d+$", e)]
        if not chosen:
            raise SensorError(
                "no RAPL domain under %s" % base,
                "RAPL needs an Intel (or recent AMD) x86 CPU and the intel_rapl_msr module; most VMs hide it",
                status=ABSENT,
            )
        self.domains: List[str] = chosen
        self.paths = [os.path.join(base, d, "energy_uj") for d in chosen]
        self.names = [try_read_text(os.path.join(base, d, "name")) or d for d in chosen]
        ranges = [try_read_number(os.path.join(base, d, "max_energy_range_uj")) for d in chosen]
        self.max_range_uj: Tuple[Optional[float], ...] = tuple(ranges)
        try:
            self.read()
        except PermissionError as exc:
            raise SensorError(
                "cannot read %s: %s" % (exc.filename, exc.strerror), HINT, status=UNREADABLE
            ) from None
        except OSError as exc:
            raise SensorError(
                "cannot read RAPL energy: %s" % os_error_text(exc), HINT, status=UNREADABLE
            ) from None

    def read(self) -> Tuple[float, ...]:
        return tuple(read_number(p) for p in self.paths)  # µJ, cumulative

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "domains": self.domains,
            "names": self.names,
            "max_energy_range_uj": list(self.max_range_uj),
            "scope": "CPU package(s) only: not memory, storage or the rest of the board",
        }

    def summary(self) -> str:
        return "RAPL %s readable (%s)" % (
            ", ".join(self.domains),
            ", ".join(self.names),
        )
