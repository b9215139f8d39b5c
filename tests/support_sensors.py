"""Emulated power/thermal sensors (scripts/emulate_sensors.py) for tests that profile with --power."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EMULATOR = Path(__file__).resolve().parent.parent / "scripts" / "emulate_sensors.py"


@contextlib.contextmanager
def emulated_sensors(d: Path) -> Iterator[dict[str, Any]]:
    """Start the emulator under ``d`` (sysfs tree + writer following CPU load); yields
    ``{"sysfs_root", "vcgencmd", "pid"}``; stops it afterwards, leaving nothing running."""
    r = subprocess.run(
        [sys.executable, str(EMULATOR), "start", "--dir", str(d)], capture_output=True, text=True, check=True
    )
    info = json.loads(r.stdout.strip().splitlines()[-1])
    try:
        yield info
    finally:
        subprocess.run([sys.executable, str(EMULATOR), "stop", "--dir", str(d)], capture_output=True)
