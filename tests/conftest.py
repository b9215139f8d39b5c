"""Shared test setup. Fixtures live in tests/support_*.py modules; test modules import what they use."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

# Let test modules import the support modules next to them (support_sshd, support_models, ...).
sys.path.insert(0, str(Path(__file__).parent))

# No SSH connection is handed on to a keeper process unless a test asks for it (tests/test_keeper.py):
# keepers would outlive the tests' sshds by their persist time. EDGEQ_SSH_PERSIST_S=60 in the
# environment runs the whole suite through keepers instead.
os.environ.setdefault("EDGEQ_SSH_PERSIST_S", "0")

# Session fixtures shared by several modules live in these plugins, so each runs once per session.
pytest_plugins = [
    "support_cli",
    "support_farm",
    "support_farmstore",
    "support_models",
    "support_postgres",
    "support_sshd",
]


def missing_prerequisite(message: str) -> None:
    """Skip a test whose system prerequisite is missing on a developer machine; fail it under CI=true,
    where scripts/setup.sh --test must have installed it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def require_module(name: str) -> Any:
    """``import name``, or missing_prerequisite (a skip here, a failure under CI=true)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing_prerequisite(f"{name} is not installed ({exc}); scripts/setup.sh --test installs it")
