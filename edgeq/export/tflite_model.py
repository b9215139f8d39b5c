"""Read a ``.tflite`` flatbuffer (through LiteRT's schema object API) and describe what is in it.

The full-int8 rule: every tensor computed at run time (inputs, outputs, intermediate activations) is
int8; constants are int8 (weights) or int32 (biases, and integer shape/axis parameters). Any float
tensor, or an int32 activation, breaks the rule. edgeq's own custom ops (EDGEQ_TERNARY_*, see
docs/custom_ops.md) are int8 ops whose constants are packed 2-bit weights (uint8) and int32
qparams: those two dtypes are accepted for exactly those inputs of exactly those ops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import tflite
from edgeq.errors import UserInputError

# Ops whose input 1 is the weight tensor and input 2 the bias.
_WEIGHTED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
# edgeq's custom int8 ops: input 1 packed ternary weights (uint8), input 2 qparams (int32).
_TERNARY_OPS = {"EDGEQ_TERNARY_FC", "EDGEQ_TERNARY_CONV2D"}
_CONST_ROLES = ("weight", "bias", "constant", "ternary_weight", "ternary_qparams")


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    role: str  # input, output, activation, weight, bias, constant
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def constant(self) -> bool:
        return self.role in _CONST_ROLES

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "role": self.role,
        }
        if self.scale:
            d["quantization"] = {
                "scale": list(self.scale),
                "zero_point": list(self.zero_point),
                "quantized_dimension": self.quantized_dimension,
                "per_channel": len(self.scale) > 1,
            }
        return d


@dataclass(frozen=True)
class OpInfo:
    index: int
    op: str
    custom: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    custom_options_bytes: int = 0


@dataclass(frozen=True)
class ModelInfo:
    path: str
    size_bytes: int
    sha256: str
    ops: tuple[OpInfo, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    violations: tuple[str, ...] = field(default=())
    custom_ops: tuple[dict[str, Any], ...] = field(default=())

    @property
    def full_int8(self) -> bool:
        return not self.violations

    @property
    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.op for op in self.ops))

    def tensor(self, index: int) -> TensorInfo:
        return self.tensors[index]

    def io(self, which: str) -> list[dict[str, Any]]:
        return [self.tensors[i].to_dict() for i in (self.inputs if which == "inputs" else self.outputs)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "full_int8": self.full_int8,
            "violations": list(self.violations),
            "op_counts": self.op_counts,
            "inputs": self.io("inputs"),
            "outputs": self.io("outputs"),
            "ops": [
                {
                    "index": o.index,
                    "op": o.op,
                    "custom": o.custom,
                    "inputs": list(o.inputs),
                    "outputs": list(o.outputs),
                    **({"custom_options_bytes": o.custom_options_bytes} if o.custom else {}),
                }
                for o in self.ops
            ],
            "tensors": [t.to_dict() for t in self.tensors],
            "custom_ops": list(self.custom_ops),
        }


def describe(path: Path) -> ModelInfo:
    """Parse ``path`` and return its ops, tensors, quantization parameters and int8 verdict."""
    data = tflite.read_bytes(path)
    _validate_with_interpreter(path, data)
    tf_file = tflite.parse(data, path.name)
    model = tf_file.model
    sg = tf_file.subgraph

    ops: list[OpInfo] = []
    roles: dict[int, str] = {}
    for i, op in enumerate(sg.operators or []):
        custom = tflite.builtin_code(model, op) == tflite.schema().BuiltinOperator.CUSTOM
        name = tflite.op_name(model, op)
        inputs = tuple(int(t) for t in (op.inputs if op.inputs is not None else []))
        outputs = tuple(int(t) for t in (op.outputs if op.outputs is not None else []))
        opts = len(op.customOptions) if custom and op.customOptions is not None else 0
        ops.append(OpInfo(i, name, custom, inputs, outputs, opts))
        if name in _WEIGHTED_OPS:
            if len(inputs) > 1 and inputs[1] >= 0:
                roles.setdefault(inputs[1], "weight")
            if len(inputs) > 2 and inputs[2] >= 0:
                roles.setdefault(inputs[2], "bias")
        elif custom and name in _TERNARY_OPS and len(inputs) == 3:
            roles.setdefault(inputs[1], "ternary_weight")
            roles.setdefault(inputs[2], "ternary_qparams")

    sg_inputs = tuple(int(t) for t in sg.inputs)
    sg_outputs = tuple(int(t) for t in sg.outputs)
    tensors: list[TensorInfo] = []
    violations: list[str] = []
    for idx, t in enumerate(sg.tensors or []):
        buf = model.buffers[t.buffer] if t.buffer < len(model.buffers) else None
        # Constant data is in the flatbuffer, or after it at Buffer.offset (the custom ops' aligned data).
        has_data = buf is not None and (
            (buf.data is not None and len(buf.data) > 0) or (bool(buf.offset) and bool(buf.size))
        )
        if idx in sg_inputs:
            role = "input"
        elif idx in sg_outputs:
            role = "output"
        elif has_data:
            role = roles.get(idx, "constant")
        else:
            role = "activation"
        q = t.quantization
        scale = tuple(float(s) for s in (q.scale if q is not None and q.scale is not None else []))
        zp = tuple(int(z) for z in (q.zeroPoint if q is not None and q.zeroPoint is not None else []))
        info = TensorInfo(
            index=idx,
            name=(t.name or b"").decode(errors="replace"),
            dtype=tflite.tensor_type_name(t.type),
            shape=tuple(int(s) for s in (t.shape if t.shape is not None else [])),
            role=role,
            scale=scale,
            zero_point=zp,
            quantized_dimension=int(q.quantizedDimension) if q is not None else 0,
        )
        tensors.append(info)
        violations.extend(_int8_violation(info))
    return ModelInfo(
        path=str(path),
        size_bytes=len(data),
        sha256=tf_file.sha256,
        ops=tuple(ops),
        tensors=tuple(tensors),
        inputs=sg_inputs,
        outputs=sg_outputs,
        violations=tuple(violations),
        custom_ops=tuple(_ternary_ops(data, ops)),
    )


def _ternary_ops(data: bytes, ops: list[OpInfo]) -> list[dict[str, Any]]:
    """Each EDGEQ_TERNARY_* op: packed weight size (bytes, bits per weight) and its decoded options."""
    if not any(o.op in _TERNARY_OPS for o in ops):
        return []
    from edgeq.ops import rewrite
    from edgeq.ops import ternary_format as spec

    nodes = rewrite.read_ternary_ops(data)  # a damaged op is one line naming it
    out = []
    for n in nodes:
        header = spec.decode_header(n.qparams.reshape(-1)[: spec.HEADER_WORDS])
        weights = int(n.op.weights.size)
        nonzero = int(np.count_nonzero(n.op.weights))
        out.append(
            {
                "index": n.index,
                "op": n.op.name,
                "weight_shape": [int(d) for d in n.op.weights.shape],
                "weights": weights,
                "packed_weight_bytes": int(n.packed.size),
                "bits_per_weight": round(8.0 * n.packed.size / max(weights, 1), 3),
                "int8_weight_bytes": weights,
                "qparams_bytes": int(n.qparams.size * 4),
                "nonzero_fraction": round(nonzero / max(weights, 1), 4),
                "options": {
                    k: v for k, v in header.items() if k not in ("magic", "header_words", "reserved")
                },
            }
        )
    return out


def _int8_violation(t: TensorInfo) -> list[str]:
    if t.constant:
        if t.role == "ternary_weight":
            return [] if t.dtype == "uint8" else [f"packed ternary weight tensor {t.index} is {t.dtype}"]
        if t.role == "ternary_qparams":
            return [] if t.dtype == "int32" else [f"ternary qparams tensor {t.index} is {t.dtype}"]
        if t.dtype == "int8" or (t.dtype == "int32" and t.role in ("bias", "constant")):
            return []
        return [f"{t.role} tensor {t.index} {t.name!r} is {t.dtype}"]
    if t.dtype != "int8":
        return [f"{t.role} tensor {t.index} {t.name!r} is {t.dtype}, expected int8"]
    return []


def _validate_with_interpreter(path: Path, data: bytes) -> None:
    """Let the runtime's flatbuffer verifier judge the file: it catches truncation and corruption."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "custom op" in first.lower() or "Encountered unresolved custom op" in str(exc):
            return  # custom ops are verified by the runner with their kernels
        raise UserInputError(
            f"{path.name} is not a valid TFLite model: {first}", "re-export it with 'edgeq export'"
        ) from exc


def run_int8(path_or_bytes: Path | bytes, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Run a model over float inputs ``x`` (quantized as the model expects); returns raw outputs."""
    from ai_edge_litert.interpreter import Interpreter

    from edgeq.runner.measure import quantize  # the device's own rule, so host and device agree
    from edgeq.tfenv import quiet_native

    content = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    with quiet_native():
        interp = Interpreter(model_content=content, num_threads=num_threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    dtype = inp["dtype"]
    scale, zp = inp["quantization"]
    batch = x if dtype == np.float32 else quantize(x, scale, zp, dtype)
    interp.resize_tensor_input(inp["index"], [len(batch), *batch.shape[1:]])
    with quiet_native():
        interp.allocate_tensors()
    interp.set_tensor(inp["index"], batch.astype(dtype))
    interp.invoke()
    return np.array(interp.get_tensor(out["index"]))


def interpreter_accuracy(path_or_bytes: Path | bytes, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a TFLite model measured with the LiteRT interpreter (fraction)."""
    out = run_int8(path_or_bytes, x)
    return float(np.mean(np.argmax(out, axis=-1) == y))


def custom_op_outputs(path: Path, x: np.ndarray, library: Path | None = None) -> np.ndarray:
    """Raw outputs of a model with EDGEQ_* custom ops over float inputs ``x``, one sample per run.

    Runs the device-side runner's custom-op path in this process (libLiteRt.so's C API with the host
    build of libedgeq_ops.so), so host figures and a board's come from the same code.
    """
    from edgeq.ops.build import build_library
    from edgeq.runner.custom import open_custom
    from edgeq.runner.measure import evaluate
    from edgeq.runner.modelfile import edgeq_ops, read_model
    from edgeq.runner.protocol import RunnerError
    from edgeq.tfenv import quiet_native

    info = read_model(Path(path).read_bytes())
    lib = str(library or build_library())
    try:
        with quiet_native():
            interp, _, _ = open_custom(str(path), info, edgeq_ops(info["custom_ops"]), lib, "auto")
        try:
            _, outputs = evaluate(interp, x, np.zeros(len(x), dtype=np.int64))
        finally:
            interp.close()
    except RunnerError as exc:
        raise UserInputError(exc.message, exc.hint) from None
    return outputs


def custom_op_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a custom-op model (see :func:`custom_op_outputs`), as a fraction."""
    out = custom_op_outputs(path, x)
    return float(np.mean(out.reshape(len(x), -1).argmax(axis=1) == y))
