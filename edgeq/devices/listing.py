"""``edgeq devices list``: every visible profile, one row each."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgeq.devices.profile import ProfileEntry, list_profiles


@dataclass(frozen=True)
class DeviceRow:
    """One line of ``devices list``."""

    name: str
    arch: str
    runtime: str
    delegate: str
    host: str
    source: str
    description: str = ""
    error: str = ""
    shadows: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shadows"] = list(self.shadows)
        return d


def list_devices(search_dirs: Sequence[Path | str] = ()) -> list[DeviceRow]:
    """Every visible profile (user dirs first, then built-ins); broken files come with their error."""
    rows = []
    for e in list_profiles(search_dirs):
        rows.append(_row(e))
    return rows


def _row(e: ProfileEntry) -> DeviceRow:
    p = e.profile
    if p is None:
        return DeviceRow(e.name, "", "", "", "", e.source, "", e.error, e.shadows)
    host = p.address if not p.is_template else "(set host)"
    return DeviceRow(
        p.name,
        p.board.arch,
        f"{p.board.runtime} {p.board.runtime_version}",
        p.board.delegate,
        host,
        e.source,
        p.description,
        "",
        e.shadows,
    )
