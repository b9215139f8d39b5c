"""The package's shape: every package ships in the wheel, names explain themselves, layers hold."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _packages_on_disk() -> set[str]:
    found = set()
    for init in (REPO / "edgeq").rglob("__init__.py"):
        if "__pycache__" in init.parts:
            continue
        found.add(".".join(init.parent.relative_to(REPO).parts))
    found |= {"edgeq.device_profiles"}
    return found


def test_every_package_is_in_the_wheel() -> None:
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    assert _packages_on_disk() == declared


def test_no_two_modules_share_a_basename() -> None:
    names = Counter(
        p.name
        for p in (REPO / "edgeq").rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "__pycache__" not in p.parts
    )
    assert [n for n, c in names.items() if c > 1] == []


def test_layers_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    res = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "2 kept, 0 broken" in res.stdout
