"""What every delegate offers the host (see ``delegates/__init__.py`` for the folder shape)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgeq.placement import Coverage


@dataclass(frozen=True)
class CompileResult:
    """What ``edgeq compile`` produced: the model to deploy, the compiler's own coverage, its log."""

    delegate: str
    model: Path  # the file to deploy (the input itself when there is nothing to compile)
    coverage: Coverage | None = None  # as the compiler reports it; None when it reports nothing
    log: str = ""
    compiler: str = ""  # the compiler and its version, e.g. "edgetpu_compiler 16.0.384591198"
    disagreements: tuple[str, ...] = field(default=())  # offline analysis vs the compiler, per op

    def to_dict(self) -> dict[str, Any]:
        return {
            "delegate": self.delegate,
            "model": str(self.model),
            "compiler": self.compiler,
            "coverage": self.coverage.to_dict() if self.coverage is not None else None,
            "disagreements": list(self.disagreements),
        }


CheckLine = tuple[str, str, str]  # (OK / WARN / FAIL, detail, hint) for `edgeq devices check`


class Delegate(Protocol):
    """A delegate's host side. ``name`` is what profiles and ``--delegate`` say."""

    name: str
    description: str

    def coverage(self, model: Path, *, delegate_options: Mapping[str, Any] | None = None) -> Coverage:
        """Which ops of ``model`` can run on the delegate and why the others cannot (offline).
        ``delegate_options`` are the profile's (e.g. OpenVINO's ``device``)."""
        ...

    def compile(
        self,
        model: Path,
        out_dir: Path,
        *,
        timeout_s: float = 600.0,
        delegate_options: Mapping[str, Any] | None = None,
    ) -> CompileResult:
        """Compile ``model`` for the delegate into ``out_dir`` (the model itself when there is nothing
        to compile); raises UserInputError when the compiler is missing or refuses the model (one
        line, with what to install or change)."""
        ...

    def check_lines(
        self, facts: Mapping[str, Any], delegate_options: Mapping[str, Any], runtime_version: str
    ) -> list[CheckLine]:
        """``devices check`` lines from the device's facts (the runner's ``delegate-facts``)."""
        ...
