"""Emulated power/thermal sensors (edgeq.testing.emulated_sensors) for tests that profile with --power."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq.testing.emulated_sensors import MODULE


@contextlib.contextmanager
def emulated_sensors(d: Path) -> Iterator[dict[str, Any]]:
    """Start the emulator under ``d`` (sysfs tree + writer following CPU load); yields
    ``{"sysfs_root", "vcgencmd", "pid"}``; stops it afterwards, leaving nothing running."""
    r = subprocess.run(
        [sys.executable, "-m", MODULE, "start", "--dir", str(d)], capture_output=True, text=True, check=True
    )
    info = json.loads(r.stdout.strip().splitlines()[-1])
    try:
        yield info
    finally:
        subprocess.run([sys.executable, "-m", MODULE, "stop", "--dir", str(d)], capture_output=True)
