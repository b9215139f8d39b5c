"""Delegate ``xnnpack``: LiteRT's default CPU delegate (see README.md)."""

from __future__ import annotations

from pathlib import Path

from edgeq.coverage import Coverage
from edgeq.delegates.base import CompileResult


class XNNPACKDelegate:
    name = "xnnpack"
    description = "XNNPACK, LiteRT's CPU delegate (on by default); threads from the measurement spec"

    def coverage(self, model: Path) -> Coverage:
        from edgeq.delegates.xnnpack.coverage import litert_coverage

        return litert_coverage(Path(model), "xnnpack")

    def compile(self, model: Path, out_dir: Path, *, timeout_s: float = 600.0) -> CompileResult:
        """Nothing to compile: the interpreter applies XNNPACK when it loads the model."""
        from edgeq import tflite

        model = tflite.check_file(Path(model))
        return CompileResult(
            self.name,
            model,
            log="nothing to compile: XNNPACK takes the ops when the interpreter loads the model",
        )


DELEGATE = XNNPACKDelegate()
