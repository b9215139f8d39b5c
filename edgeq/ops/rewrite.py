"""Rewrite an int8 ``.tflite``: FULLY_CONNECTED / CONV_2D → EDGEQ_TERNARY_FC / EDGEQ_TERNARY_CONV2D.

Works on the schema's object API (``ai_edge_litert.tools.flatbuffer_utils``). Tensor indices are
kept: the int8 weight tensor becomes the packed uint8 weight tensor (its buffer now holds the
2-bit planes, the int8 bytes are gone) and the int32 bias tensor becomes the qparams tensor, so
signatures and every other op stay valid. Other ops are left as they are.

Weights are ternarized from the int8 values per output channel (Δ = 0.7·mean|q|, α = mean|q| over
|q| > Δ). For weights that are already ternary per channel ({−a, 0, +a}, as exported from
``TernaryDense``/``TernaryConv2D``), this is lossless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import tflite
from edgeq.errors import UserInputError
from edgeq.files import atomic_write
from edgeq.ops import ternary_format as spec
from edgeq.tflite import read_bytes

THRESHOLD_FACTOR = 0.7
ALIGNMENT = 64  # LiteRT rejects host-memory tensor buffers that are not 64-byte aligned
_REWRITABLE = {"FULLY_CONNECTED": spec.KIND_FC, "CONV_2D": spec.KIND_CONV2D}


@dataclass(frozen=True)
class RewrittenOp:
    index: int
    op: str  # EDGEQ_TERNARY_FC / EDGEQ_TERNARY_CONV2D
    original: str  # FULLY_CONNECTED / CONV_2D
    weight_shape: tuple[int, ...]
    int8_weight_bytes: int
    packed_weight_bytes: int
    qparams_bytes: int
    lossless: bool  # the int8 weights were already ternary per channel
    nonzero_fraction: float


@dataclass(frozen=True)
class TernaryNode:
    """A ternary custom op read back from a model."""

    index: int
    op: spec.TernaryOp
    packed: np.ndarray
    qparams: np.ndarray
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def ternarize_int8(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (axis 0): ``(t in {-1,0,1} int8, alpha in int8 units float64[O])``."""
    q = np.asarray(q, dtype=np.int64)
    flat = np.abs(q.reshape(q.shape[0], -1)).astype(np.float64)
    delta = THRESHOLD_FACTOR * flat.mean(axis=1, keepdims=True)
    keep = flat > delta
    count = keep.sum(axis=1)
    alpha = np.where(count > 0, (flat * keep).sum(axis=1) / np.maximum(count, 1), 0.0)
    t = (np.sign(q.reshape(q.shape[0], -1)) * keep).astype(np.int8).reshape(q.shape)
    return t, alpha


def _quant(t: Any) -> tuple[np.ndarray, np.ndarray]:
    q = t.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        raise UserInputError(
            f"tensor {(t.name or b'').decode(errors='replace')!r} is not quantized",
            "rewrite a full-int8 model (edgeq export)",
        )
    return np.asarray(q.scale, dtype=np.float64), np.asarray(q.zeroPoint, dtype=np.int64)


def _buffer_data(model: Any, t: Any) -> np.ndarray:
    data = model.buffers[t.buffer].data
    if data is None:
        raise UserInputError("a weight tensor has no constant data", "rewrite a converted int8 model")
    return np.frombuffer(bytes(bytearray(data)), dtype=np.uint8)


def _custom_opcode(model: Any, schema: Any, name: str) -> int:
    for i, code in enumerate(model.operatorCodes):
        if code.builtinCode == schema.BuiltinOperator.CUSTOM and (code.customCode or b"") in (
            name,
            name.encode(),
        ):
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = schema.BuiltinOperator.CUSTOM
    code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = name
    code.version = spec.OP_VERSION
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _own_buffer(model: Any, sg: Any, tensor_index: int, schema: Any) -> Any:
    """The buffer of ``tensor_index``, split off if another tensor shares it."""
    t = sg.tensors[tensor_index]
    users = [i for i, other in enumerate(sg.tensors) if other.buffer == t.buffer]
    if t.buffer == 0 or len(users) > 1:
        model.buffers.append(schema.BufferT())
        t.buffer = len(model.buffers) - 1
    return model.buffers[t.buffer]


def _set_const(
    model: Any, sg: Any, index: int, schema: Any, array: np.ndarray, type_code: int, name: str
) -> None:
    t = sg.tensors[index]
    buf = _own_buffer(model, sg, index, schema)
    buf.data = np.frombuffer(
        np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes(), dtype=np.uint8
    )
    buf.offset = 0
    buf.size = 0
    t.type = type_code
    t.shape = [int(d) for d in array.shape]
    t.shapeSignature = None
    t.quantization = None
    t.sparsity = None
    t.name = name


def to_ternary_ops(
    model_bytes: bytes, *, only: Iterable[int] | None = None
) -> tuple[bytes, list[RewrittenOp]]:
    """Rewrite every FC / CONV_2D of subgraph 0 (or the op indices in ``only``) into ternary custom
    ops. Returns the new model bytes and what was rewritten."""
    schema = tflite.schema()
    model = tflite.parse(model_bytes).model
    sg = model.subgraphs[0]
    wanted = set(only) if only is not None else None
    done: list[RewrittenOp] = []
    for idx, op in enumerate(sg.operators):
        name = tflite.op_name(model, op)
        if name not in _REWRITABLE or (wanted is not None and idx not in wanted):
            continue
        done.append(_rewrite_op(model, sg, idx, op, name, schema))
    if wanted is not None and wanted - {d.index for d in done}:
        raise UserInputError(
            f"ops {sorted(wanted - {d.index for d in done})} are not FULLY_CONNECTED or CONV_2D",
            "pass the indices shown by 'edgeq inspect'",
        )
    const = sorted({sg.tensors[i].buffer for d in done for i in sg.operators[d.index].inputs[1:]})
    return _serialize_aligned(model, const), done


def to_ternary_ops_lossless(
    model_bytes: bytes, *, expected: int | None = None
) -> tuple[bytes, list[RewrittenOp]]:
    """Rewrite exactly the FC / CONV_2D ops whose int8 weights are already ternary per channel — the
    ternary layers of a QAT export — and leave every other op a builtin int8 op.

    ``expected`` is how many ternary layers the Keras model had: a different count means a ternary
    layer did not export losslessly (or a plain layer looked ternary), a UserInputError.
    """
    _, trial = to_ternary_ops(model_bytes)
    keep = [d.index for d in trial if d.lossless]
    if expected is not None and len(keep) != expected:
        raise UserInputError(
            f"{len(keep)} of the model's FULLY_CONNECTED/CONV_2D ops have ternary int8 weights, expected {expected}",
            "export the QAT model of a ternary student (TernaryDense/TernaryConv2D) with edgeq",
        )
    if not keep:
        raise UserInputError(
            "no FULLY_CONNECTED/CONV_2D op of the model has ternary weights",
            "train the model with TernaryDense/TernaryConv2D layers (edgeq pipeline --weights ternary)",
        )
    return to_ternary_ops(model_bytes, only=keep)


def _serialize_aligned(model: Any, buffers: list[int]) -> bytes:
    """Serialize with ``buffers`` stored after the flatbuffer at 64-byte aligned file offsets.

    LiteRT hands a custom op its constant inputs as host-memory tensor buffers, which must be
    64-byte aligned; data inside the flatbuffer is only 16-byte aligned. The schema's
    ``Buffer.offset``/``size`` (relative to the file start) place the data where we choose; the
    model file is mmap'ed or read into aligned memory by the runtime.
    """
    blobs = {b: bytes(bytearray(model.buffers[b].data)) for b in buffers}
    for b in buffers:
        model.buffers[b].data = None
        model.buffers[b].offset = 1 << 40  # placeholder of the same encoded size as the real one
        model.buffers[b].size = max(len(blobs[b]), 1)
    size = len(tflite.serialize(model))
    tail = bytearray()
    for b in buffers:
        pos = -(-(size + len(tail)) // ALIGNMENT) * ALIGNMENT
        tail += bytes(pos - size - len(tail))
        model.buffers[b].offset = pos
        model.buffers[b].size = len(blobs[b])
        tail += blobs[b]
    head = bytes(tflite.serialize(model))
    if len(head) != size:  # field presence and widths did not change, so neither may the size
        raise RuntimeError("flatbuffer size changed while placing aligned buffers")
    return head + bytes(tail)


def _rewrite_op(model: Any, sg: Any, idx: int, op: Any, name: str, schema: Any) -> RewrittenOp:
    kind = _REWRITABLE[name]
    ins = list(op.inputs)
    x_t, w_t, out_t = sg.tensors[ins[0]], sg.tensors[ins[1]], sg.tensors[op.outputs[0]]
    where = f"op {idx} ({name})"
    if (
        x_t.type != schema.TensorType.INT8
        or w_t.type != schema.TensorType.INT8
        or out_t.type != schema.TensorType.INT8
    ):
        raise UserInputError(f"{where} is not int8", "rewrite a full-int8 model (edgeq export)")
    in_scale, in_zp = _quant(x_t)
    out_scale, out_zp = _quant(out_t)
    w_scale, _ = _quant(w_t)
    q = _buffer_data(model, w_t).view(np.int8).reshape([int(d) for d in w_t.shape])
    o = q.shape[0]
    if w_scale.size == 1:
        w_scale = np.full(o, w_scale[0])
    bias_q = np.zeros(o, dtype=np.int64)
    has_bias = len(ins) > 2 and ins[2] >= 0
    if has_bias:
        bias_q = _buffer_data(model, sg.tensors[ins[2]]).view("<i4").astype(np.int64)
    opts = op.builtinOptions
    fields: dict[str, int] = {}
    if kind == spec.KIND_FC:
        if opts is not None and getattr(opts, "keepNumDims", False) is False and len(x_t.shape) != 2:
            raise UserInputError(
                f"{where} flattens a rank-{len(x_t.shape)} input", "reshape to [batch, depth] first"
            )
        if q.ndim != 2:
            raise UserInputError(f"{where} has weights of rank {q.ndim}", "expected [out, in] weights")
    else:
        fields = {
            "stride_h": int(opts.strideH),
            "stride_w": int(opts.strideW),
            "dilation_h": int(opts.dilationHFactor or 1),
            "dilation_w": int(opts.dilationWFactor or 1),
            "padding": spec.PADDING_SAME if opts.padding == schema.Padding.SAME else spec.PADDING_VALID,
        }
    activation = int(getattr(opts, "fusedActivationFunction", 0) or 0)
    t, alpha_q = ternarize_int8(q)
    lossless = bool(
        np.array_equal(t.astype(np.int64) * np.round(alpha_q).reshape((-1,) + (1,) * (q.ndim - 1)), q)
    )
    alpha = alpha_q * w_scale  # real-valued per-channel scale
    mults, shifts = zip(
        *(spec.quantize_multiplier(float(in_scale[0] * a / out_scale[0])) for a in alpha), strict=False
    )
    # The bias was quantized at in_scale·w_scale; the ternary accumulator counts in_scale·alpha.
    bias = np.where(alpha_q > 0, np.round(bias_q / np.where(alpha_q > 0, alpha_q, 1.0)), 0).astype(np.int64)
    if np.abs(bias).max(initial=0) > spec.INT32_MAX:
        raise UserInputError(f"{where}: bias out of int32 range after rescaling", "check the model's bias")
    act_min, act_max = spec.activation_range(activation, float(out_scale[0]), int(out_zp[0]))
    top = spec.TernaryOp(
        kind=kind,
        weights=t,
        bias=bias.astype(np.int32),
        multiplier=np.array(mults, dtype=np.int32),
        shift=np.array(shifts, dtype=np.int32),
        in_zp=int(in_zp[0]),
        out_zp=int(out_zp[0]),
        act_min=act_min,
        act_max=act_max,
        activation=activation,
        **fields,
    )
    packed, qparams, custom_options = spec.encode(top)
    base = (w_t.name or b"").decode(errors="replace") if isinstance(w_t.name, bytes) else str(w_t.name or "")
    _set_const(model, sg, ins[1], schema, packed, schema.TensorType.UINT8, f"{base}/ternary_packed")
    if has_bias:
        qp_index = ins[2]
    else:
        sg.tensors.append(schema.TensorT())
        sg.tensors[-1].buffer = 0
        qp_index = len(sg.tensors) - 1
    _set_const(model, sg, qp_index, schema, qparams, schema.TensorType.INT32, f"{base}/ternary_qparams")
    op.opcodeIndex = _custom_opcode(model, schema, top.name)
    op.inputs = [ins[0], ins[1], qp_index]
    op.builtinOptionsType = 0
    op.builtinOptions = None
    op.customOptions = list(custom_options)
    op.customOptionsFormat = 0
    return RewrittenOp(
        index=idx,
        op=top.name,
        original=name,
        weight_shape=tuple(int(d) for d in q.shape),
        int8_weight_bytes=int(q.size),
        packed_weight_bytes=int(packed.size),
        qparams_bytes=int(qparams.size * 4),
        lossless=lossless,
        nonzero_fraction=float(np.count_nonzero(t) / max(t.size, 1)),
    )


def read_ternary_ops(model_bytes: bytes) -> list[TernaryNode]:
    """The ternary custom ops of subgraph 0, decoded and checked: the header in the custom options and
    in the qparams agree and are valid, and the packed weights are exactly what the format writes
    (a flipped bit that yields the unused code or sets a padding bit is found here, not on a device).

    A damaged op is one UserInputError naming the op, its index and its node (output tensor).
    """
    model = tflite.parse(model_bytes).model
    sg = model.subgraphs[0]
    nodes: list[TernaryNode] = []
    for idx, op in enumerate(sg.operators):
        code = model.operatorCodes[op.opcodeIndex]
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        if custom not in spec.OP_KINDS:
            continue
        outs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
        node = (sg.tensors[outs[0]].name or b"?").decode(errors="replace") if outs else "?"
        try:
            nodes.append(_read_node(model, sg, idx, op, custom))
        except (spec.FormatError, ValueError, IndexError, TypeError) as exc:
            raise UserInputError(
                f"{custom} op {idx} (node {node!r}) is damaged: {str(exc).splitlines()[0] if str(exc) else exc!r}",
                "export the model again (edgeq pipeline --weights ternary); edgeq inspect names the same op",
            ) from None
    return nodes


def _read_node(model: Any, sg: Any, idx: int, op: Any, custom: str) -> TernaryNode:
    ins = list(op.inputs)
    if len(ins) != 3:
        raise ValueError(f"it has {len(ins)} inputs, expected 3 (input, packed weights, qparams)")
    w_t, q_t = sg.tensors[ins[1]], sg.tensors[ins[2]]
    packed = _buffer_data(model, w_t).reshape([int(d) for d in w_t.shape])
    raw_qp = _buffer_data(model, q_t)
    if raw_qp.size % 4:
        raise ValueError(f"qparams hold {raw_qp.size} bytes, not whole int32 words")
    qparams = raw_qp.view("<i4").astype(np.int32).reshape([int(d) for d in q_t.shape])
    top = spec.decode(packed, qparams)
    opts = op.customOptions if op.customOptions is not None else []
    header = spec.decode_header(bytes(bytearray(opts)))
    if header != spec.decode_header(qparams.reshape(-1)[: spec.HEADER_WORDS]):
        raise ValueError("its custom options and qparams disagree")
    if spec.OP_KINDS[custom] != top.kind:
        raise ValueError(f"its qparams describe op kind {top.kind}, not {custom}")
    canonical = spec.encode(top)[0]
    if canonical.shape != packed.shape or not np.array_equal(canonical, packed):
        bad = (
            int(np.argmax(canonical.reshape(-1) != packed.reshape(-1)))
            if canonical.size == packed.size
            else 0
        )
        raise ValueError(f"its packed weights are not valid 2-bit codes (first bad byte at offset {bad})")
    return TernaryNode(idx, top, packed, qparams, tuple(ins), tuple(int(t) for t in op.outputs))


def rewrite_file(src: Path, dst: Path, *, only: Iterable[int] | None = None) -> list[RewrittenOp]:
    """Rewrite ``src`` into ``dst`` (written atomically)."""
    data, done = to_ternary_ops(read_bytes(src), only=only)
    if not done:
        raise UserInputError(
            f"{src.name} has no FULLY_CONNECTED or CONV_2D op to rewrite",
            "export a model with Dense/Conv2D layers",
        )
    atomic_write(dst, data)
    return done
