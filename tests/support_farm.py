"""The `farm` tier: three hosts in network namespaces (plain, degraded, an emulated aarch64 board).

The fixture brings the farm up with scripts/farm/up.sh and takes it down afterwards only if it was not
already up (it tears down only what it made). The farm keeps its state (keys, each host's home, so a
board's venv from ``devices setup``) in /var/lib/edgeq-farm between runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FARM = REPO / "scripts" / "farm"


def state_dir() -> Path:
    return Path(os.environ.get("EDGEQ_FARM_STATE", "/var/lib/edgeq-farm"))


def farm_is_up() -> bool:
    r = subprocess.run([str(FARM / "farm.py"), "status"], stdin=subprocess.DEVNULL, capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="session")
def farm() -> Iterator[dict[str, Any]]:
    if os.geteuid() != 0:
        pytest.fail("the farm tier needs root (network namespaces, qemu binfmt); run it as root")
    was_up = farm_is_up()
    up = subprocess.run([str(FARM / "up.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert up.returncode == 0, up.stderr[-3000:]
    data = json.loads((state_dir() / "farm.json").read_text())
    try:
        yield data
    finally:
        if not was_up:
            subprocess.run([str(FARM / "down.sh")], stdin=subprocess.DEVNULL, capture_output=True)


def host(farm: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in farm["hosts"] if h["name"] == name)


def farm_profile(
    farm: dict[str, Any], name: str, d: Path, extends: str, workdir: str = "~/edgeq", **extra: str | int
) -> Path:
    """A device profile for farm host ``name`` (written to ``d/<name>.toml``)."""
    h = host(farm, name)
    d.mkdir(parents=True, exist_ok=True)
    lines = [
        f'extends = "{extends}"',
        f'host = "{h["address"]}"',
        f"port = {h['port']}",
        f'user = "{h["user"]}"',
        f'identity_file = "{h["identity_file"]}"',
        f'workdir = "{workdir}"',
        *(f"{k} = {json.dumps(v)}" for k, v in extra.items()),
    ]
    p = d / f"{name}.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def pin_farm_keys(farm: dict[str, Any], edgeq_home: Path) -> None:
    """Trust the farm hosts' keys the way a user would: lines in edgeq's known_hosts."""
    edgeq_home.mkdir(parents=True, exist_ok=True)
    with open(edgeq_home / "known_hosts", "a") as f:
        for h in farm["hosts"]:
            f.write(h["known_hosts_line"].strip() + "\n")
