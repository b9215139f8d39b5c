"""Just enough of a ``.tflite`` flatbuffer to decide how to run it, without the schema.

A device has no TFLite schema package (tflite-runtime ships none), and the runner needs three things
before it picks a runtime path: which custom ops the model uses (EDGEQ_* ops need the kernel
library), and the dtype, shape and quantization of subgraph 0's inputs and outputs (the custom-op
path has no Interpreter to ask). This reads them with ``struct`` from the flatbuffer's tables, by the
field numbers of TFLite's ``schema.fbs`` (stable since schema version 3).
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

EDGEQ_PREFIX = "EDGEQ_"
BUILTIN_CUSTOM = 32  # BuiltinOperator.CUSTOM

# TensorType → NumPy dtype (the types a model's inputs and outputs can have).
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8"}


class ModelFileError(ValueError):
    """The bytes are not a flatbuffer this reader understands."""


class _Table:
    def __init__(self, buf: bytes, pos: int) -> None:
        if pos < 0 or pos + 4 > len(buf):
            raise ModelFileError("table offset %d outside the file" % pos)
        self.buf = buf
        self.pos = pos
        vt = pos - struct.unpack_from("<i", buf, pos)[0]
        if vt < 0 or vt + 4 > len(buf):
            raise ModelFileError("vtable offset %d outside the file" % vt)
        self.vt = vt
        self.vt_size = struct.unpack_from("<H", buf, vt)[0]

    def _field(self, i: int) -> int:
        off = 4 + 2 * i
        if off + 2 > self.vt_size:
            return 0
        rel = struct.unpack_from("<H", self.buf, self.vt + off)[0]
        return self.pos + rel if rel else 0

    def scalar(self, i: int, fmt: str, default: Any = 0) -> Any:
        p = self._field(i)
        return struct.unpack_from("<" + fmt, self.buf, p)[0] if p else default

    def _target(self, i: int) -> int:
        p = self._field(i)
        return p + struct.unpack_from("<I", self.buf, p)[0] if p else 0

    def table(self, i: int) -> Optional[_Table]:
        t = self._target(i)
        return _Table(self.buf, t) if t else None

    def string(self, i: int) -> Optional[str]:
        t = self._target(i)
        if not t:
            return None
        n = struct.unpack_from("<I", self.buf, t)[0]
        return self.buf[t + 4 : t + 4 + n].decode("utf-8", "replace")

    def vector(self, i: int, fmt: str) -> List[Any]:
        t = self._target(i)
        if not t:
            return []
        n = struct.unpack_from("<I", self.buf, t)[0]
        size = struct.calcsize("<" + fmt)
        if t + 4 + n * size > len(self.buf):
            raise ModelFileError("vector outside the file")
        return list(struct.unpack_from("<%d%s" % (n, fmt), self.buf, t + 4))

    def tables(self, i: int) -> List[_Table]:
        t = self._target(i)
        if not t:
            return []
        n = struct.unpack_from("<I", self.buf, t)[0]
        out = []
        for k in range(n):
            p = t + 4 + 4 * k
            out.append(_Table(self.buf, p + struct.unpack_from("<I", self.buf, p)[0]))
        return out


def _tensor(t: _Table, index: int) -> Dict[str, Any]:
    import numpy as np  # here, not at the top: custom_ops() must not need it (the host's quick commands)

    ttype = t.scalar(1, "b")
    shape = [int(d) for d in t.vector(0, "i")]
    sig = [int(d) for d in t.vector(7, "i")] or list(shape)
    scale, zero_point = 0.0, 0
    q = t.table(4)
    if q is not None:
        scales = q.vector(2, "f")
        zps = q.vector(3, "q")
        if scales:
            scale = float(scales[0])
            zero_point = int(zps[0]) if zps else 0
    if ttype not in _DTYPES:
        raise ModelFileError("tensor %d has a type (%d) the runner cannot feed" % (index, ttype))
    return {
        "index": index,
        "name": t.string(3) or "",
        "dtype": np.dtype(_DTYPES[ttype]),
        "shape": np.array(shape, dtype=np.int32),
        "shape_signature": np.array(sig, dtype=np.int32),
        "quantization": (scale, zero_point),
    }


def custom_ops(data: bytes) -> List[Tuple[int, str]]:
    """``[(op index, custom code), ...]`` of subgraph 0, without reading any tensor."""
    return _read(data, tensors=False)["custom_ops"]


def read_model(data: bytes) -> Dict[str, Any]:
    """``{"custom_ops": [(op index, code), ...], "inputs": [...], "outputs": [...]}`` of subgraph 0.

    Inputs and outputs are Interpreter-style details (dtype, shape, quantization) indexed 0, 1, ...
    in subgraph order.
    """
    return _read(data, tensors=True)


def _read(data: bytes, tensors: bool) -> Dict[str, Any]:
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes: List[Tuple[int, Optional[str]]] = []
        for c in model.tables(1):
            builtin = max(int(c.scalar(0, "b")), int(c.scalar(3, "i")))
            codes.append((builtin, c.string(1)))
        subgraphs = model.tables(2)
        if not subgraphs:
            raise ModelFileError("the model has no subgraph")
        sg = subgraphs[0]
        table = sg.tables(0)
        custom: List[Tuple[int, str]] = []
        for k, op in enumerate(sg.tables(3)):
            idx = int(op.scalar(0, "I"))
            if idx >= len(codes):
                raise ModelFileError("op %d has opcode index %d of %d" % (k, idx, len(codes)))
            builtin, name = codes[idx]
            if builtin == BUILTIN_CUSTOM:
                custom.append((k, name or ""))
        ins = [_tensor(table[int(i)], n) for n, i in enumerate(sg.vector(1, "i"))] if tensors else []
        outs = [_tensor(table[int(i)], n) for n, i in enumerate(sg.vector(2, "i"))] if tensors else []
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise ModelFileError("damaged flatbuffer: %s" % exc) from None
    return {"custom_ops": custom, "inputs": ins, "outputs": outs}


def edgeq_ops(custom_ops: List[Tuple[int, str]]) -> List[str]:
    """The distinct EDGEQ_* custom op names, in order of first use."""
    seen: List[str] = []
    for _, name in custom_ops:
        if name.startswith(EDGEQ_PREFIX) and name not in seen:
            seen.append(name)
    return seen
