"""Models with edgeq's custom ops (EDGEQ_TERNARY_*): run through libLiteRt.so's C API.

No TFLite Python runtime can register a custom kernel on a board (their wheels do not export the
resolver symbols), so such a model runs in ai-edge-litert's ``libLiteRt.so`` with the kernels of
``libedgeq_ops.so`` registered by its shim (see :mod:`.native`). :class:`CustomOpInterpreter` puts
that behind the subset of the Interpreter interface the runner uses; tensor details come from the
model file itself (:mod:`.modelfile`).
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .compiled import FixedShapeInterpreter
from .protocol import RunnerError, one_line

INSTALL_HINT = 'pip install ai-edge-litert (or: edgeq devices setup with runtime = "ai-edge-litert")'


class CustomOpInterpreter(FixedShapeInterpreter):
    """``LiteRtSession`` with Interpreter-style details; ``invoke`` is the run call alone."""

    def __init__(self, model_path: str, library: str, info: Dict[str, Any], litert_library: str) -> None:
        from .native import LiteRtSession

        self._session = LiteRtSession(library, model_path, litert_library=litert_library)
        self._inputs = info["inputs"]
        self._outputs = info["outputs"]
        for what, details, sizes in (
            ("input", self._inputs, self._session.input_bytes),
            ("output", self._outputs, self._session.output_bytes),
        ):
            if len(details) != len(sizes):
                raise ValueError("the model file lists %d %ss, LiteRT %d" % (len(details), what, len(sizes)))
            for d, n in [(details[k], sizes[k]) for k in range(len(sizes))]:
                want = int(np.prod(d["shape"])) * d["dtype"].itemsize
                if want != n:
                    raise ValueError(
                        "%s %d is %d bytes in LiteRT, %d in the file" % (what, d["index"], n, want)
                    )

    _resize_error = "inputs of a custom-op model cannot be resized (LiteRT compiled it for its shape)"

    def _write_input(self, index: int, value: np.ndarray) -> None:
        self._session.set_input(index, value.tobytes())

    def invoke(self) -> None:
        self._session.invoke()

    def get_tensor(self, index: int) -> np.ndarray:
        d = self._outputs[index]
        shape = tuple(int(n) for n in d["shape"])
        return np.frombuffer(self._session.output(index), dtype=d["dtype"]).reshape(shape).copy()

    def close(self) -> None:
        self._session.close()


def _litert_library() -> Tuple[Optional[str], str]:
    """(path of libLiteRt.so or None, the ai-edge-litert version or why it is unusable)."""
    from .native import NativeError, litert_library_path

    try:
        path = litert_library_path()
    except NativeError as exc:
        return None, str(exc)
    try:
        from importlib import metadata

        version = metadata.version("ai-edge-litert")
    except Exception:
        version = "unknown"
    return path, version


def other_runtime(requested: str) -> Optional[str]:
    """What the device would have used for a plain model, to name it in the error (best effort)."""
    from .runtimes import load_runtime

    try:
        rt = load_runtime(requested)
    except RunnerError:
        return None
    return "%s %s" % (rt.name, rt.version)


def open_custom(
    model_path: str, info: Dict[str, Any], ops: List[str], library: Optional[str], requested: str
) -> Tuple[CustomOpInterpreter, float, str]:
    """Check what a custom-op model needs, then compile it: ``(interpreter, init_ms, ai-edge-litert version)``.

    Every missing piece is one RunnerError line naming the first op that needs it.
    """
    first = ops[0]
    index = next(k for k, name in info["custom_ops"] if name == first)
    needs = "the model needs custom op %s (op %d)" % (first, index)
    if library is None or not os.path.isfile(library):
        where = "" if library is None else " (%s is missing)" % library
        raise RunnerError(
            "runtime_missing",
            "%s, and this device has no kernel library for it%s" % (needs, where),
            "let edgeq deploy libedgeq_ops.so with the model (edgeq profile/deploy do), "
            "or pass --custom-ops-lib PATH to a build for this architecture",
        )
    if requested not in ("auto", "ai-edge-litert", "ai-edge-litert-compiled"):
        # Typically a board profile pinned to tflite-runtime: its wheel cannot register kernels.
        raise RunnerError(
            "runtime_missing",
            "%s, which runs only through ai-edge-litert's libLiteRt.so, not %s" % (needs, requested),
            INSTALL_HINT + ", then profile with runtime ai-edge-litert",
        )
    litert, version = _litert_library()
    if litert is None:
        have = other_runtime("auto")
        raise RunnerError(
            "runtime_missing",
            "%s, which runs only through ai-edge-litert's libLiteRt.so; this device has %s (%s)"
            % (needs, have or "no TFLite runtime", version),
            INSTALL_HINT,
        )
    t0 = time.perf_counter_ns()
    try:
        interp = CustomOpInterpreter(model_path, library, info, litert)
    except Exception as exc:
        message = one_line(exc)
        missing = "no kernel for it" in message
        raise RunnerError(
            "runtime_missing" if missing else "runtime_failure",
            "ai-edge-litert %s (libLiteRt.so) cannot run %s: %s"
            % (version, os.path.basename(model_path), message),
            "rebuild and redeploy libedgeq_ops.so for this device (edgeq does it on profile)"
            if missing
            else "check that libedgeq_ops.so was built for this architecture and ai-edge-litert >= 2.3",
        ) from None
    return interp, (time.perf_counter_ns() - t0) / 1e6, version
