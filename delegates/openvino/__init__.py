"""Delegate ``openvino``: Intel's OpenVINO runtime on CPU, GPU, NPU or a Movidius NCS2 (see README.md).

The device comes from the profile's ``[delegate_options] device`` (CPU when unset); pass the same
mapping as ``delegate_options`` to :meth:`OpenVINODelegate.coverage` and :meth:`compile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq.delegates.delegate import CheckLine, CompileResult
from edgeq.placement import Coverage


def device_of(delegate_options: Mapping[str, Any] | None) -> str:
    return str((delegate_options or {}).get("device", "CPU")).strip().upper() or "CPU"


class OpenVINODelegate:
    name = "openvino"
    description = "OpenVINO on CPU, GPU, NPU or a Movidius NCS2 (MYRIAD, OpenVINO 2022.3 with IR)"

    def coverage(self, model: Path, *, delegate_options: Mapping[str, Any] | None = None) -> Coverage:
        from edgeq.delegates.openvino.coverage import analyse

        return analyse(Path(model), device_of(delegate_options))

    def compile(
        self,
        model: Path,
        out_dir: Path,
        *,
        timeout_s: float = 600.0,
        delegate_options: Mapping[str, Any] | None = None,
    ) -> CompileResult:
        from edgeq.delegates.openvino.compile import compile_model

        return compile_model(
            Path(model), Path(out_dir), device=device_of(delegate_options), timeout_s=timeout_s
        )

    def check_lines(
        self, facts: Mapping[str, Any], delegate_options: Mapping[str, Any], runtime_version: str
    ) -> list[CheckLine]:
        from edgeq.delegates.openvino.check import check_lines

        return check_lines(facts, device_of(delegate_options), runtime_version)


DELEGATE = OpenVINODelegate()
