"""Delegate ``none``: every op on the runtime's builtin CPU kernels, read back from the host's
interpreter built without its default delegate (see ``delegates/xnnpack/coverage.py``)."""

from __future__ import annotations

from pathlib import Path

from edgeq.delegates.xnnpack.coverage import litert_coverage
from edgeq.placement import Coverage


def coverage(model: Path) -> Coverage:
    return litert_coverage(Path(model), "none")
