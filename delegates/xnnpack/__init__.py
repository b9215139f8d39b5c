"""Delegate ``xnnpack``: LiteRT's default CPU delegate (see README.md).

``delegate_options`` is accepted (and unused) so callers can pass a profile's options to every
delegate alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq.delegates.delegate import CheckLine, CompileResult
from edgeq.placement import Coverage


class XNNPACKDelegate:
    name = "xnnpack"
    description = "XNNPACK, LiteRT's CPU delegate (on by default); threads from the measurement spec"

    def coverage(self, model: Path, *, delegate_options: Mapping[str, Any] | None = None) -> Coverage:
        from edgeq.delegates.xnnpack.coverage import litert_coverage

        return litert_coverage(Path(model), "xnnpack")

    def compile(
        self,
        model: Path,
        out_dir: Path,
        *,
        timeout_s: float = 600.0,
        delegate_options: Mapping[str, Any] | None = None,
    ) -> CompileResult:
        """Nothing to compile: the interpreter applies XNNPACK when it loads the model."""
        from edgeq import tflite

        model = tflite.check_file(Path(model))
        return CompileResult(
            self.name,
            model,
            log="nothing to compile: XNNPACK takes the ops when the interpreter loads the model",
        )

    def check_lines(
        self, facts: Mapping[str, Any], delegate_options: Mapping[str, Any], runtime_version: str
    ) -> list[CheckLine]:
        return [("OK", "xnnpack (built into the runtime)", "")]


DELEGATE = XNNPACKDelegate()
