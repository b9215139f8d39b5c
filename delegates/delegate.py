"""What every delegate offers the host (see ``delegates/__init__.py`` for the folder shape)."""

from __future__ import annotations

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


class Delegate(Protocol):
    """A delegate's host side. ``name`` is what profiles and ``--delegate`` say."""

    name: str
    description: str

    def coverage(self, model: Path) -> Coverage:
        """Which ops of ``model`` can run on the delegate and why the others cannot (offline)."""
        ...

    def compile(self, model: Path, out_dir: Path, *, timeout_s: float = 600.0) -> CompileResult:
        """Compile ``model`` for the delegate into ``out_dir``; raises UserInputError when the
        compiler is missing or refuses the model (one line, with what to install or change)."""
        ...
