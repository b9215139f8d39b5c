"""Delegate ``edgetpu``: a Coral Edge TPU (USB Accelerator, M.2/PCIe module, Dev Board).

``coverage`` is the offline analysis of a ``.tflite`` against the Edge TPU's documented
requirements (coverage.py); ``compile`` runs Coral's ``edgetpu_compiler`` where it is installed
(compile.py, its log read by compiler_log.py); the runner's half is edgeq/runner/delegates/edgetpu.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq.delegates.delegate import CheckLine, CompileResult
from edgeq.placement import Coverage

from .compile import compile_model
from .coverage import coverage as _coverage


@dataclass(frozen=True)
class EdgeTPU:
    name: str = "edgetpu"
    description: str = "Coral Edge TPU through libedgetpu (models compiled by edgetpu_compiler)"

    # delegate_options (e.g. device = "usb:0") choose the accelerator on the device; they do not
    # change what can run or how the model is compiled.
    def coverage(self, model: Path, *, delegate_options: Mapping[str, Any] | None = None) -> Coverage:
        return _coverage(model)

    def compile(
        self,
        model: Path,
        out_dir: Path,
        *,
        timeout_s: float = 600.0,
        delegate_options: Mapping[str, Any] | None = None,
    ) -> CompileResult:
        return compile_model(model, out_dir, timeout_s=timeout_s)

    def check_lines(
        self, facts: Mapping[str, Any], delegate_options: Mapping[str, Any], runtime_version: str
    ) -> list[CheckLine]:
        from .check import check_lines

        return check_lines(facts, str(delegate_options.get("device", "")))


DELEGATE = EdgeTPU()
