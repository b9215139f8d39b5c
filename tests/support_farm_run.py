"""Helpers for `edgeq farm run` tests: FARM.toml files, boards on loopback sshds, the events of a run."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from support_sshd import SshServer, loopback_profile


def board_profile(server: SshServer, root: Path, name: str, port: int | None = None, **extra: str) -> Path:
    """A profile for the loopback ``server`` (through ``port`` when a proxy stands in front of it)
    in ``root/name/``; the runner runs with this venv's Python, as a board's venv would."""
    p = loopback_profile(server, root / name, sys.executable, **extra)
    if port is not None:
        text = p.read_text().replace(f"port = {server.port}", f"port = {port}")
        p.write_text(text)
    return p


def farm_toml(
    path: Path,
    models: Iterable[dict[str, Any]],
    devices: Iterable[dict[str, Any]],
    *,
    extra: str = "",
    **top: Any,
) -> Path:
    """Write a FARM.toml: top-level keys, [[models]], [[devices]], then ``extra`` TOML text.
    One round per pair unless ``rounds`` is given (the product's default is 3; tests count rounds)."""
    top.setdefault("rounds", 1)
    lines = [f"{k} = {json.dumps(v)}" for k, v in top.items()]
    for m in models:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml(v)}" for k, v in m.items()]
    for d in devices:
        lines.append("[[devices]]")
        lines += [f"{k} = {_toml(v)}" for k, v in d.items()]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Path):
        return json.dumps(str(v))
    return json.dumps(v)


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def intervals(events: Iterable[dict[str, Any]], board: str | None = None) -> list[tuple[float, float]]:
    """[t_start, t_end] of every measurement attempt that reached the board."""
    return [
        (e["t_start"], e["t_end"])
        for e in events
        if e.get("event") == "result"
        and e.get("t_start") is not None
        and (board is None or e["board"] == board)
    ]


def overlaps(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[Any, Any]]:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


def npz_data(path: Path, n: int = 40, classes: int = 3, seed: int = 0) -> Path:
    """Random 8x8x1 inputs and labels for the tiny model (its top-1 on them is near chance)."""
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.uniform(0, 1, (n, 8, 8, 1)).astype(np.float32), y=rng.integers(0, classes, n))
    return path


def build_wide_int8(dest: Path, width: int = 48) -> Path:
    """The tiny model's shape (8x8x1 in, 3 out) with far more compute: two wide convolutions."""
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential(
        [
            k.layers.Input((8, 8, 1)),
            k.layers.Conv2D(width, 3, padding="same", activation="relu"),
            k.layers.Conv2D(width, 3, padding="same", activation="relu"),
            k.layers.Conv2D(width, 3, padding="same", activation="relu"),
            k.layers.GlobalAveragePooling2D(),
            k.layers.Dense(3),
        ]
    )
    calib = np.random.default_rng(0).uniform(0.0, 1.0, (8, 8, 8, 1)).astype(np.float32)
    dest.write_bytes(to_int8_tflite(model, calib))
    return dest
