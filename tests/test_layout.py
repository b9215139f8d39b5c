"""The package's shape: every package ships in the wheel, names explain themselves, layers hold."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _python_files() -> list[Path]:
    """Every .py under edgeq/, following the edgeq/delegates link to the top-level delegates/ folder."""
    out = []
    for root, dirs, files in os.walk(REPO / "edgeq", followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [Path(root) / f for f in files if f.endswith(".py")]
    return out


def _packages_on_disk() -> set[str]:
    found = {".".join(p.parent.relative_to(REPO).parts) for p in _python_files() if p.name == "__init__.py"}
    return found | {"edgeq.device_profiles", "edgeq.ops.kernels"}  # folders of data files (TOML, C)


def test_every_package_is_in_the_wheel() -> None:
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert _packages_on_disk() == declared


def test_no_two_modules_share_a_basename() -> None:
    # A delegate folder's files have the same names in every delegate: that is its shape.
    names = Counter(
        p.name
        for p in _python_files()
        if p.name not in ("__init__.py", "__main__.py") and p.parent.parent.name != "delegates"
    )
    assert [n for n, c in names.items() if c > 1] == []


def test_layers_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "2 kept, 0 broken" in res.stdout
