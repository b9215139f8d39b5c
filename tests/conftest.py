"""Shared test setup. Fixtures live in tests/support_*.py modules; test modules import what they use."""

from __future__ import annotations

import sys
from pathlib import Path

# Let test modules import the support modules next to them (support_sshd, support_models, ...).
sys.path.insert(0, str(Path(__file__).parent))

# Session fixtures shared by several modules live in these plugins, so each runs once per session.
pytest_plugins = ["support_cli", "support_farm", "support_models", "support_sshd"]
