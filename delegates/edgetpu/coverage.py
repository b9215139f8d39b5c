"""Which ops of a ``.tflite`` the Edge TPU compiler can map, decided offline from the file.

From Coral's documented requirements ("TensorFlow models on the Edge TPU", coral.ai/docs/edgetpu/
models-intro): tensors 8-bit quantized, sizes fixed at compile time, at most 3 dimensions (more
only when the outer ones are 1), parameters constant at compile time, the supported-operations
table with each op's known limitations (for the runtime version ``compile.py`` pins), one subgraph.
And the compiler's partitioning: it cuts the graph once, so the first op that does not map and
every op after it (in execution order) run on the CPU.

Each op gets one of the compiler's own status texts, as ``edgetpu_compiler -s`` prints them, so
``edgeq inspect`` and ``edgeq compile`` read the same. Where a limit of the table was the reason, a
note says which one (the compiler itself only says "otherwise supported, but not mapped").

What this cannot know: the compiler's memory and precision decisions (large reshapes, resize
sizes, on-chip parameter memory), op versions newer than the compiler's TFLite, and its
internal errors; ``edgeq compile`` on an x86-64 host with ``edgetpu_compiler`` reports those.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import tflite
from edgeq.errors import UserInputError
from edgeq.placement import CPU, DELEGATE, Coverage, OpPlacement

NAME = "edgetpu"
# The Edge TPU runtime version compile.py passes as ``-m`` (the runtime of libedgetpu 16.0, the
# last release); the op table below is the one for this version.
MIN_RUNTIME_VERSION = 14

# The compiler's status texts (edgetpu_compiler -s, "Operator  Count  Status").
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
NOT_CONSTANT = "Filter, bias, or other param is not constant at compile-time"
VERSION_NOT_SUPPORTED = "Operation version not supported"
# What the compiler prints (and then stops) for a graph with dynamic-sized tensors.
DYNAMIC = (
    "Attempting to use a delegate that only supports static-sized tensors "
    "with a graph that has dynamic-sized tensors."
)
STATUSES = (
    MAPPED,
    NOT_SUPPORTED,
    MORE_THAN_ONE_SUBGRAPH,
    UNSUPPORTED_TYPE,
    UNSUPPORTED_RANK,
    UNSPECIFIED,
    NOT_CONSTANT,
    VERSION_NOT_SUPPORTED,
)

COMPILED_OP = "edgetpu-custom-op"
_EIGHT_BIT = ("int8", "uint8")
_FLOAT = ("float32", "float16", "float64", "bfloat16")
_CONTROL_FLOW = ("WHILE", "IF", "CALL_ONCE", "CALL", "STABLEHLO_WHILE", "STABLEHLO_CASE")


@dataclass(frozen=True)
class _Op:
    """One operator with what the checks need: names, tensors, constant values."""

    index: int
    name: str
    op: Any
    file: tflite.TFLiteFile

    @property
    def sg(self) -> Any:
        return self.file.subgraph

    def tensor(self, t: int) -> Any:
        return self.sg.tensors[t]

    def inputs(self) -> list[int]:
        return [int(t) for t in (self.op.inputs if self.op.inputs is not None else []) if int(t) >= 0]

    def outputs(self) -> list[int]:
        return [int(t) for t in (self.op.outputs if self.op.outputs is not None else []) if int(t) >= 0]

    def input(self, slot: int) -> int | None:
        ins = list(self.op.inputs if self.op.inputs is not None else [])
        return int(ins[slot]) if slot < len(ins) and int(ins[slot]) >= 0 else None

    def shape(self, t: int) -> list[int]:
        s = self.tensor(t).shape
        return [int(d) for d in s] if s is not None else []

    def dtype(self, t: int) -> str:
        return tflite.tensor_type_name(self.tensor(t).type)

    def is_const(self, t: int) -> bool:
        return _is_const(self.file.model, self.tensor(t))

    def value(self, t: int | None) -> np.ndarray | None:
        """A constant tensor's values (None when not constant or not readable)."""
        if t is None or not self.is_const(t):
            return None
        data = self.file.model.buffers[self.tensor(t).buffer].data
        if data is None:
            return None
        try:
            arr = np.frombuffer(bytes(np.asarray(data, dtype=np.uint8)), dtype=np.dtype(self.dtype(t)))
        except (TypeError, ValueError):
            return None
        return arr.reshape(self.shape(t)) if int(np.prod(self.shape(t))) == arr.size else arr

    def options(self) -> Any:
        return self.op.builtinOptions


def _is_const(model: Any, tensor: Any) -> bool:
    b = int(tensor.buffer or 0)
    if b <= 0 or b >= len(model.buffers or []):
        return False
    buf = model.buffers[b]
    return (buf.data is not None and len(buf.data) > 0) or int(getattr(buf, "size", 0) or 0) > 0


# --- the supported-operations table: op -> (runtime version needed, param input slots, limits) ---
# A limit returns None when the op is within it, else what is wrong (for the note).
Limit = Callable[[_Op], "str | None"]


def _no_fused_activation(op: _Op) -> str | None:
    opts = op.options()
    act = int(getattr(opts, "fusedActivationFunction", 0) or 0) if opts is not None else 0
    return None if act == 0 else "no fused activation function is supported on this op"


def _same_dilation(op: _Op) -> str | None:
    opts = op.options()
    if opts is None:
        return None
    h, w = int(opts.dilationHFactor or 1), int(opts.dilationWFactor or 1)
    return None if h == w else f"x and y dilation must be equal (got {h} and {w})"


def _fully_connected(op: _Op) -> str | None:
    opts = op.options()
    if opts is not None and int(opts.weightsFormat or 0) != 0:
        return "only the default format is supported for fully-connected weights"
    out = op.outputs()
    if out and any(d != 1 for d in op.shape(out[0])[:-1]):
        return f"the output tensor must be one-dimensional (got shape {op.shape(out[0])})"
    return None


def _concatenation(op: _Op) -> str | None:
    problem = _no_fused_activation(op)
    if problem:
        return problem
    consts = [t for t in op.inputs() if op.is_const(t)]
    if not consts:
        return None
    if len(op.inputs()) != 2:
        return "with a constant input there must be exactly 2 inputs (a zero-padding concatenation)"
    values = op.value(consts[0])
    if values is None:
        return None
    zero = op.tensor(consts[0]).quantization
    zp = (
        int(zero.zeroPoint[0])
        if zero is not None and zero.zeroPoint is not None and len(zero.zeroPoint)
        else 0
    )
    return None if np.all(values.astype(np.int64) == zp) else "its constant input must be all zeroes"


def _axes(op: _Op, slot: int) -> list[int] | None:
    """The op's axes from a constant input, made non-negative (None when not known)."""
    values = op.value(op.input(slot))
    first = op.input(0)
    if values is None or first is None:
        return None
    rank = len(op.shape(first))
    return sorted({int(a) % rank if rank else int(a) for a in np.atleast_1d(values).tolist()})


def _no_batch_axis(what: str, slot: int) -> Limit:
    def check(op: _Op) -> str | None:
        axes = _axes(op, slot)
        return f"no {what} in the batch dimension" if axes is not None and 0 in axes else None

    return check


def _mean(op: _Op) -> str | None:
    axes = _axes(op, 1)
    first = op.input(0)
    if axes is None or first is None:
        return None
    shape = op.shape(first)
    if 0 in axes and len(shape) > 1:
        return "no reduction in the batch dimension"
    if shape and len(shape) - 1 in axes and shape[-1] % 4:
        return f"a reduction over z needs z to be a multiple of 4 (got {shape[-1]})"
    return None


def _pack(op: _Op) -> str | None:
    opts = op.options()
    return "no packing in the batch dimension" if opts is not None and int(opts.axis or 0) == 0 else None


def _pad(op: _Op) -> str | None:
    values = op.value(op.input(1))
    if values is None or values.size < 2:
        return None
    return "no padding in the batch dimension" if np.any(values.reshape(-1, 2)[0] != 0) else None


def _prelu(op: _Op) -> str | None:
    alpha = op.input(1)
    if alpha is None:
        return None
    shape = op.shape(alpha)
    if any(d != 1 for d in shape[:-1]):
        return f"alpha must be 1-dimensional (only the innermost dimension > 1; got {shape})"
    return None


def _softmax(op: _Op) -> str | None:
    first = op.input(0)
    if first is None:
        return None
    shape = op.shape(first)
    if any(d != 1 for d in shape[:-1]):
        return f"Softmax supports only a 1-D input (got shape {shape})"
    n = shape[-1] if shape else 1
    return f"Softmax supports at most 16,000 elements (got {n})" if n > 16000 else None


def _strided_slice(op: _Op) -> str | None:
    strides = op.value(op.input(3))
    if strides is not None and np.any(strides != 1):
        return f"all strides must be 1 (got {strides.tolist()})"
    opts = op.options()
    if opts is not None and (int(opts.ellipsisMask or 0) or int(opts.newAxisMask or 0)):
        return "ellipsis-axis-mask and new-axis-mask must be 0"
    return None


# name: (runtime version needed, input slots that are weights/params (must be constant), limits)
_TABLE: dict[str, tuple[int, Sequence[int], Sequence[Limit]]] = {
    "ADD": (1, (), ()),
    "AVERAGE_POOL_2D": (1, (), (_no_fused_activation,)),
    "CONCATENATION": (1, (), (_concatenation,)),
    "CONV_2D": (1, (1, 2), (_same_dilation,)),
    "DEPTHWISE_CONV_2D": (1, (1, 2), (_same_dilation,)),
    "EXPAND_DIMS": (13, (1,), ()),
    "FULLY_CONNECTED": (1, (1, 2), (_fully_connected,)),
    "L2_NORMALIZATION": (1, (), ()),
    "LOGISTIC": (1, (), ()),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (14, tuple(range(1, 24)), ()),
    "MAXIMUM": (1, (), ()),
    "MAX_POOL_2D": (1, (), (_no_fused_activation,)),
    "MEAN": (13, (1,), (_mean,)),
    "MINIMUM": (1, (), ()),
    "MUL": (1, (), ()),
    "PACK": (13, (), (_pack,)),
    "PAD": (13, (1,), (_pad,)),
    "PRELU": (13, (1,), (_prelu,)),
    "QUANTIZE": (13, (), ()),
    "REDUCE_MAX": (14, (1,), (_no_batch_axis("reduction", 1),)),
    "REDUCE_MIN": (14, (1,), (_no_batch_axis("reduction", 1),)),
    "RELU": (1, (), ()),
    "RELU6": (1, (), ()),
    "RELU_N1_TO_1": (1, (), ()),
    "RESHAPE": (1, (1,), ()),
    "RESIZE_BILINEAR": (1, (1,), ()),
    "RESIZE_NEAREST_NEIGHBOR": (1, (1,), ()),
    "RSQRT": (14, (), ()),
    "SLICE": (1, (1, 2), ()),
    "SOFTMAX": (1, (), (_softmax,)),
    "SPACE_TO_DEPTH": (1, (), ()),
    "SPLIT": (1, (0,), (_no_batch_axis("splitting", 0),)),
    "SQUARED_DIFFERENCE": (14, (), ()),
    "SQUEEZE": (13, (), ()),
    "STRIDED_SLICE": (1, (1, 2, 3), (_strided_slice,)),
    "SUB": (1, (), ()),
    "SUM": (13, (1,), (_no_batch_axis("reduction", 1),)),
    "TANH": (1, (), ()),
    "TRANSPOSE": (14, (1,), ()),
    "TRANSPOSE_CONV": (13, (0, 1, 3), ()),
}
# Bias inputs are int32 by the quantization spec; every other param slot holds integers too.
_INT_PARAM_TYPES = ("int32", "int64", "int16", "int8", "uint8")


def supported_ops() -> tuple[str, ...]:
    """The builtin ops of the table (for the runtime version compile.py pins)."""
    return tuple(sorted(k for k, (v, _, _) in _TABLE.items() if v <= MIN_RUNTIME_VERSION))


@dataclass(frozen=True)
class _Verdict:
    status: str
    detail: str = ""


def _check_op(op: _Op) -> _Verdict:
    """The op on its own, before partitioning (which the caller applies)."""
    if op.name == COMPILED_OP:
        return _Verdict(MAPPED, "already compiled for the Edge TPU")
    if op.name in _CONTROL_FLOW:
        return _Verdict(NOT_SUPPORTED, "control flow (its body is another subgraph) is not in the op table")
    entry = _TABLE.get(op.name)
    params: Sequence[int] = entry[1] if entry else ()
    param_tensors = {t for t in (op.input(s) for s in params) if t is not None}
    for t in sorted(param_tensors):
        if not op.is_const(t):
            return _Verdict(NOT_CONSTANT, f"input {_tname(op, t)} is computed at run time")
    for t in [*op.inputs(), *op.outputs()]:
        dtype = op.dtype(t)
        allowed = _EIGHT_BIT + _INT_PARAM_TYPES if t in param_tensors else _EIGHT_BIT
        if dtype not in allowed:
            return _Verdict(UNSUPPORTED_TYPE, f"tensor {_tname(op, t)} is {dtype}, not 8-bit quantized")
    if entry is None or entry[0] > MIN_RUNTIME_VERSION:
        return _Verdict(NOT_SUPPORTED, "not in the Edge TPU's supported-operations table")
    for t in [*op.inputs(), *op.outputs()]:
        if t in param_tensors or op.is_const(t):
            continue
        shape = op.shape(t)
        if len(shape) > 3 and any(d != 1 for d in shape[:-3]):
            return _Verdict(UNSUPPORTED_RANK, f"tensor {_tname(op, t)} has shape {shape}")
    for limit in entry[2]:
        problem = limit(op)
        if problem:
            return _Verdict(UNSPECIFIED, f"documented limit: {problem}")
    return _Verdict(MAPPED)


def _tname(op: _Op, t: int) -> str:
    name = op.tensor(t).name
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name or t)
    return repr(text.split(";")[0])


def _activation_types(f: tflite.TFLiteFile) -> set[str]:
    sg = f.subgraph
    out = set()
    for op in sg.operators or []:
        for t in [
            *(op.inputs if op.inputs is not None else []),
            *(op.outputs if op.outputs is not None else []),
        ]:
            if int(t) >= 0 and not _is_const(f.model, sg.tensors[int(t)]):
                out.add(f.tensor_type(sg.tensors[int(t)]))
    return out


def _check_quantized(f: tflite.TFLiteFile) -> None:
    """A float model is refused outright, as the compiler does ("Model not quantized")."""
    sg = f.subgraph
    for op in sg.operators or []:
        name = f.op_name(op)
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        ts = [int(t) for t in [*(op.inputs or []), *(op.outputs or [])] if int(t) >= 0]
        acts = [f.tensor_type(sg.tensors[t]) for t in ts if not _is_const(f.model, sg.tensors[t])]
        if acts and all(a in _EIGHT_BIT for a in acts):
            return
    kinds = ", ".join(sorted(_activation_types(f) & set(_FLOAT))) or "no 8-bit type"
    raise UserInputError(
        f"{f.name} is not quantized: its ops compute in {kinds}, and the Edge TPU runs only "
        "8-bit quantized models (edgetpu_compiler refuses it: 'Model not quantized')",
        "quantize it to full int8 with 'edgeq export' (or the TFLite converter with a representative "
        "dataset and TFLITE_BUILTINS_INT8), then run 'edgeq inspect --delegate edgetpu' on the .tflite",
    )


def _dynamic_tensors(f: tflite.TFLiteFile) -> list[str]:
    """Tensors whose size is not fixed at compile time: a -1 in ``shape_signature`` beyond the batch
    dimension. A -1 batch alone is what every Keras model has; the compiler compiles the stored
    size (1), as Coral's own TF2 examples rely on."""
    dynamic = []
    for t in f.subgraph.tensors or []:
        sig = list(t.shapeSignature) if t.shapeSignature is not None else []
        if not sig or _is_const(f.model, t):
            continue
        if any(int(d) < 0 for d in sig[1:]):
            name = t.name.decode(errors="replace") if isinstance(t.name, bytes) else str(t.name)
            dynamic.append(f"{name.split(';')[0]!r} {[int(d) for d in sig]}")
    return dynamic


def analyze(f: tflite.TFLiteFile) -> Coverage:
    """The offline coverage of a parsed model (see :func:`coverage`)."""
    _check_quantized(f)
    ops = [_Op(i, f.op_name(op), op, f) for i, op in enumerate(f.subgraph.operators or [])]
    notes: list[str] = []
    dynamic = _dynamic_tensors(f)
    if dynamic:
        shown = "; ".join(dynamic[:3]) + (f"; and {len(dynamic) - 3} more" if len(dynamic) > 3 else "")
        notes.append(
            f"sizes not fixed at compile time (-1 in shape_signature): {shown}; the compiler refuses "
            "dynamic-sized tensors and nothing maps; give every input a fixed shape before converting"
        )
        refused = tuple(OpPlacement(o.index, o.name, CPU, DYNAMIC) for o in ops)
        return Coverage(NAME, "offline", refused, tuple(notes))
    if len(f.model.subgraphs) > 1:
        extra = sum(len(sg.operators or []) for sg in f.model.subgraphs[1:])
        notes.append(
            f"the model has {len(f.model.subgraphs)} subgraphs (control flow); the Edge TPU maps only "
            f"the main one, and the {extra} ops of the others run on the CPU (not listed)"
        )
    placed: list[OpPlacement] = []
    cut: int | None = None
    for o in ops:
        verdict = _check_op(o)
        if cut is None and verdict.status != MAPPED:
            cut = o.index
            if verdict.detail:
                notes.append(f"op {o.index} {o.name}: {verdict.detail}")
            notes.append(
                f"the compiler cuts the graph once: op {o.index} {o.name} and every op after it run on the CPU"
            )
            placed.append(OpPlacement(o.index, o.name, CPU, verdict.status))
        elif cut is None:
            placed.append(OpPlacement(o.index, o.name, DELEGATE, verdict.status))
        else:
            status = MORE_THAN_ONE_SUBGRAPH if verdict.status == MAPPED else verdict.status
            if verdict.status != MAPPED and verdict.detail:
                notes.append(f"op {o.index} {o.name}: {verdict.detail}")
            placed.append(OpPlacement(o.index, o.name, CPU, status))
    if any(o.name == COMPILED_OP for o in ops):
        notes.append(
            "the model is already compiled for the Edge TPU: each edgetpu-custom-op stands for the ops "
            "the compiler mapped"
        )
    return Coverage(NAME, "offline", tuple(placed), tuple(notes))


def coverage(model: Path) -> Coverage:
    """Offline Edge TPU coverage of ``model`` (a ``.tflite``); a float model is one UserInputError.

    >>> coverage(Path("student_int8.tflite")).summary()
    '8 of 8 ops on edgetpu, 0 on the CPU'
    """
    return analyze(tflite.read_model(Path(model)))
