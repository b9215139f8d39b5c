"""ctypes bindings to ``libedgeq_ops.so``: the C kernels and the LiteRT runner.

Part of the device-side runner (standard library, ctypes and NumPy only, Python 3.8 syntax): the
runner uses it with a library built for the board; the host imports it as ``edgeq.runner.native``.
``TernaryKernels`` calls the kernels directly; ``LiteRtSession`` runs a whole ``.tflite`` through
libLiteRt.so's C API with the ternary custom ops registered.

Example::

    kernels = TernaryKernels(edgeq.ops.build.build_library())
    y = kernels.run(x, packed, qparams)
    with LiteRtSession(kernels.path, "model_ternary.tflite") as s:
        (out,), elapsed_ns = s.run([x.tobytes()])
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from typing import Any

import numpy as np

_ERR_LEN = 512
_I32P = ctypes.POINTER(ctypes.c_int32)


class NativeError(RuntimeError):
    """A kernel or LiteRT call failed; the message is the library's own."""


def litert_library_path() -> str:
    """Path of ``libLiteRt.so`` inside the installed ai-edge-litert wheel."""
    import importlib.util

    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        raise NativeError("ai-edge-litert is not installed (pip install ai-edge-litert)")
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, "libLiteRt.so")
        if os.path.exists(p):
            return p
    raise NativeError("this ai-edge-litert wheel has no libLiteRt.so (needs ai-edge-litert >= 2.1)")


def _dims(shape: Any) -> Any:
    arr = (ctypes.c_int32 * max(len(shape), 1))(*[int(d) for d in shape])
    return arr


class TernaryKernels:
    """The C kernels of one built library."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        lib = ctypes.CDLL(self.path)
        lib.edgeq_ternary_eval.argtypes = [
            _I32P,
            ctypes.c_int64,
            ctypes.POINTER(ctypes.c_uint8),
            ctypes.c_int64,
            ctypes.POINTER(ctypes.c_int8),
            _I32P,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int8),
            ctypes.c_int64,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.edgeq_ternary_eval.restype = ctypes.c_int
        lib.edgeq_ternary_infer_shape.argtypes = [
            ctypes.c_int,
            _I32P,
            ctypes.c_int,
            _I32P,
            ctypes.c_int,
            _I32P,
            ctypes.c_int,
            _I32P,
            ctypes.POINTER(ctypes.c_int),
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.edgeq_ternary_infer_shape.restype = ctypes.c_int
        lib.edgeq_ternary_mbqm.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
        lib.edgeq_ternary_mbqm.restype = ctypes.c_int32
        lib.edgeq_ternary_set_isa.argtypes = [ctypes.c_int]
        lib.edgeq_ternary_set_isa.restype = ctypes.c_int
        lib.edgeq_ternary_isa_name.restype = ctypes.c_char_p
        self._lib = lib

    @property
    def lib(self) -> Any:
        return self._lib

    def set_isa(self, level: int) -> str:
        """Force an inner loop (-1 auto, 0 scalar, 1 NEON, 2 AVX2, 3 AVX-512); returns its name."""
        self._lib.edgeq_ternary_set_isa(int(level))
        return self.isa

    @property
    def isa(self) -> str:
        return self._lib.edgeq_ternary_isa_name().decode()

    def mbqm(self, acc: int, multiplier: int, shift: int) -> int:
        return int(self._lib.edgeq_ternary_mbqm(int(acc), int(multiplier), int(shift)))

    def infer_shape(self, kind: int, x_shape: Any, w_shape: Any, qp_shape: Any) -> tuple[int, ...]:
        out = (ctypes.c_int32 * 8)()
        rank = ctypes.c_int(0)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.edgeq_ternary_infer_shape(
            int(kind),
            _dims(x_shape),
            len(x_shape),
            _dims(w_shape),
            len(w_shape),
            _dims(qp_shape),
            len(qp_shape),
            out,
            ctypes.byref(rank),
            err,
            _ERR_LEN,
        )
        if rc:
            raise NativeError(err.value.decode(errors="replace"))
        return tuple(int(out[i]) for i in range(rank.value))

    def run(self, x: np.ndarray, packed: np.ndarray, qparams: np.ndarray) -> np.ndarray:
        """One op (kind from the qparams header) on int8 ``x``; returns the int8 output."""
        x = np.ascontiguousarray(x, dtype=np.int8)
        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        qparams = np.ascontiguousarray(qparams, dtype=np.int32)
        kind = int(qparams.reshape(-1)[2]) if qparams.size > 2 else -1
        shape = self.infer_shape(kind, x.shape, packed.shape, qparams.shape)
        y = np.zeros(shape, dtype=np.int8)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self._lib.edgeq_ternary_eval(
            qparams.ctypes.data_as(_I32P),
            qparams.size,
            packed.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)),
            packed.size,
            x.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
            _dims(x.shape),
            x.ndim,
            y.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
            y.size,
            err,
            _ERR_LEN,
        )
        if rc:
            raise NativeError(err.value.decode(errors="replace"))
        return y


class LiteRtSession:
    """One ``.tflite`` compiled by LiteRT for the CPU, with the ternary kernels registered.

    ``run`` copies the inputs in, calls LiteRtRunCompiledModel (timed alone, in ns) and copies the
    outputs out. A kernel error inside the run raises NativeError naming the op.
    """

    _loaded = False

    def __init__(
        self,
        library: str | os.PathLike[str],
        model_path: str | os.PathLike[str],
        *,
        register_ternary: bool = True,
        litert_library: str | None = None,
    ) -> None:
        lib = ctypes.CDLL(str(library))
        lib.edgeq_lrt_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.edgeq_lrt_create.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        lib.edgeq_lrt_create.restype = ctypes.c_void_p
        lib.edgeq_lrt_destroy.argtypes = [ctypes.c_void_p]
        lib.edgeq_lrt_num_io.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.edgeq_lrt_io_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.edgeq_lrt_io_bytes.restype = ctypes.c_int64
        lib.edgeq_lrt_copy.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.edgeq_lrt_invoke.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int64),
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.edgeq_lrt_kernel_runs.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.edgeq_lrt_kernel_runs.restype = ctypes.c_int64
        lib.edgeq_lrt_kernel_prepares.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.edgeq_lrt_kernel_prepares.restype = ctypes.c_int64
        self._lib = lib
        err = ctypes.create_string_buffer(_ERR_LEN)
        path = litert_library or litert_library_path()
        if lib.edgeq_lrt_load(path.encode(), err, _ERR_LEN):
            raise NativeError(err.value.decode(errors="replace"))
        handle = lib.edgeq_lrt_create(str(model_path).encode(), int(register_ternary), err, _ERR_LEN)
        if not handle:
            raise NativeError(err.value.decode(errors="replace"))
        self._h: int | None = handle
        self.input_bytes = [
            int(lib.edgeq_lrt_io_bytes(handle, 0, i)) for i in range(lib.edgeq_lrt_num_io(handle, 0))
        ]
        self.output_bytes = [
            int(lib.edgeq_lrt_io_bytes(handle, 1, i)) for i in range(lib.edgeq_lrt_num_io(handle, 1))
        ]

    def _handle(self) -> int:
        if self._h is None:
            raise NativeError("the session is closed")
        return self._h

    def set_input(self, index: int, data: bytes) -> None:
        """Copy one input in (exactly the tensor's size in bytes)."""
        h = self._handle()
        if not 0 <= index < len(self.input_bytes):
            raise NativeError("the model has %d inputs, no input %d" % (len(self.input_bytes), index))
        err = ctypes.create_string_buffer(_ERR_LEN)
        buf = ctypes.create_string_buffer(bytes(data), len(data))
        if self._lib.edgeq_lrt_copy(h, 0, index, buf, len(data), err, _ERR_LEN):
            raise NativeError(err.value.decode(errors="replace"))

    def output(self, index: int) -> bytes:
        """Copy one output out."""
        n = self.output_bytes[index]
        err = ctypes.create_string_buffer(_ERR_LEN)
        buf = ctypes.create_string_buffer(n)
        if self._lib.edgeq_lrt_copy(self._handle(), 1, index, buf, n, err, _ERR_LEN):
            raise NativeError(err.value.decode(errors="replace"))
        return buf.raw

    def set_inputs(self, inputs: list[bytes]) -> None:
        h = self._handle()
        if len(inputs) != len(self.input_bytes):
            raise NativeError(f"the model has {len(self.input_bytes)} inputs, got {len(inputs)}")
        err = ctypes.create_string_buffer(_ERR_LEN)
        for i, data in enumerate(inputs):
            buf = ctypes.create_string_buffer(bytes(data), len(data))
            if self._lib.edgeq_lrt_copy(h, 0, i, buf, len(data), err, _ERR_LEN):
                raise NativeError(err.value.decode(errors="replace"))

    def invoke(self) -> int:
        """Run once on the inputs already set; returns the run's wall time in ns."""
        elapsed = ctypes.c_int64(0)
        err = ctypes.create_string_buffer(_ERR_LEN)
        if self._lib.edgeq_lrt_invoke(self._handle(), ctypes.byref(elapsed), err, _ERR_LEN):
            raise NativeError(err.value.decode(errors="replace"))
        return int(elapsed.value)

    def outputs(self) -> list[bytes]:
        h = self._handle()
        err = ctypes.create_string_buffer(_ERR_LEN)
        out = []
        for i, n in enumerate(self.output_bytes):
            buf = ctypes.create_string_buffer(n)
            if self._lib.edgeq_lrt_copy(h, 1, i, buf, n, err, _ERR_LEN):
                raise NativeError(err.value.decode(errors="replace"))
            out.append(buf.raw)
        return out

    def run(self, inputs: list[bytes]) -> tuple[list[bytes], int]:
        """``(output bytes per output, elapsed ns of the run call)``."""
        self.set_inputs(inputs)
        elapsed = self.invoke()
        return self.outputs(), elapsed

    def kernel_runs(self, kind: int) -> int:
        """How often the ternary kernel of ``kind`` (0 FC, 1 conv) has run in this session."""
        return int(self._lib.edgeq_lrt_kernel_runs(self._handle(), int(kind)))

    def kernel_prepares(self, kind: int) -> int:
        """How many ops the ternary kernel of ``kind`` prepared in this session (once per node)."""
        return int(self._lib.edgeq_lrt_kernel_prepares(self._handle(), int(kind)))

    def close(self) -> None:
        if self._h is not None:
            self._lib.edgeq_lrt_destroy(self._h)
            self._h = None

    def __enter__(self) -> LiteRtSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
