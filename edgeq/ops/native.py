"""ctypes bindings to ``libedgeq_ops.so`` (the C kernels and the LiteRT runner).

The code lives in the device-side runner (:mod:`edgeq.runner.native`), which ships it to boards;
this module re-exports it for host code and adds :func:`default_library` (needs gcc).
"""

from __future__ import annotations

from pathlib import Path

from edgeq.runner.native import LiteRtSession, NativeError, TernaryKernels, litert_library_path

__all__ = ["LiteRtSession", "NativeError", "TernaryKernels", "default_library", "litert_library_path"]


def default_library() -> Path:
    """Host build of the kernel library (builds it on first use; host only, needs gcc)."""
    from edgeq.ops.build import build_library

    return build_library()
