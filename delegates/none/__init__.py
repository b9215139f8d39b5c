"""Delegate ``none``: the runtime's builtin kernels, no delegate (see README.md).

``delegate_options`` is accepted (and unused) so callers can pass a profile's options to every
delegate alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq.delegates.delegate import CheckLine, CompileResult
from edgeq.placement import Coverage


class NoDelegate:
    name = "none"
    description = "no delegate: the runtime's builtin CPU kernels (XNNPACK off)"

    def coverage(self, model: Path, *, delegate_options: Mapping[str, Any] | None = None) -> Coverage:
        from edgeq.delegates.none.coverage import coverage

        return coverage(Path(model))

    def compile(
        self,
        model: Path,
        out_dir: Path,
        *,
        timeout_s: float = 600.0,
        delegate_options: Mapping[str, Any] | None = None,
    ) -> CompileResult:
        """Nothing to compile: the builtin kernels run the .tflite as it is."""
        from edgeq import tflite

        model = tflite.check_file(Path(model))
        return CompileResult(
            self.name, model, log="nothing to compile: the builtin kernels run the model as it is"
        )

    def check_lines(
        self, facts: Mapping[str, Any], delegate_options: Mapping[str, Any], runtime_version: str
    ) -> list[CheckLine]:
        return [("OK", "none: the runtime's builtin kernels", "")]


DELEGATE = NoDelegate()
