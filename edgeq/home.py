"""Where edgeq keeps its state on the host."""

from __future__ import annotations

import os
from pathlib import Path


def edgeq_home() -> Path:
    """``$EDGEQ_HOME``, by default ``~/.cache/edgeq``: caches, known hosts, the local device's workdir."""
    raw = os.environ.get("EDGEQ_HOME") or "~/.cache/edgeq"
    return Path(raw).expanduser().resolve()
