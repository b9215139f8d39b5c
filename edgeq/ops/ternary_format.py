"""The data format of edgeq's ternary custom ops: header, per-channel parameters, packed weights.

NumPy only, Python 3.8 syntax: the device side may import it. ``docs/custom_ops.md`` is the prose
version of this module; the two must agree.

An op node in a ``.tflite`` model is ``CUSTOM`` with custom code ``EDGEQ_TERNARY_FC`` or
``EDGEQ_TERNARY_CONV2D`` and three inputs, everything a kernel needs being in the inputs (LiteRT's
custom-op API gives a kernel no per-node state, only the node's input tensors):

- input 0: the int8 activation (``[..., K]`` for FC, ``[N, H, W, C]`` NHWC for conv);
- input 1: the packed ternary weights, uint8 ``[O, RB]`` (FC) or ``[O, KH, KW, RB]`` (conv),
  ``RB = row_bytes(in_depth)``; conv rows are contiguous, FC rows are interleaved in blocks of
  ``FC_BLOCK`` output channels (:func:`interleave_fc`);
- input 2: ``qparams``, int32: the 20-word header, then ``bias[O]``, ``multiplier[O]``, ``shift[O]``,
  zero-filled to the tensor's size. Its shape is ``[L]`` (FC) or
  ``[stride_h, stride_w, dilation_h, dilation_w, padding + 1, L]`` (conv) so that a runtime can infer
  the output shape from input shapes alone.

The node's custom options hold a copy of the 80-byte header (for inspection tools and runtimes that
do keep per-node options); the kernels read the header from input 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = 0x31545145  # b"EQT1" little-endian
FORMAT_VERSION = 2
HEADER_WORDS = 20
HEADER_BYTES = 4 * HEADER_WORDS

KIND_FC = 0
KIND_CONV2D = 1
OP_NAMES = {KIND_FC: "EDGEQ_TERNARY_FC", KIND_CONV2D: "EDGEQ_TERNARY_CONV2D"}
OP_KINDS = {name: kind for kind, name in OP_NAMES.items()}
OP_VERSION = 1  # the OperatorCode version the kernels register

PADDING_VALID = 0
PADDING_SAME = 1

# TFLite's ActivationFunctionType codes; informational only, the clamp is act_min/act_max.
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 3

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# Word index of every header field.
H_MAGIC, H_VERSION, H_KIND, H_HEADER_WORDS = 0, 1, 2, 3
H_IN_ZP, H_OUT_ZP, H_ACT_MIN, H_ACT_MAX, H_ACTIVATION = 4, 5, 6, 7, 8
H_IN_DEPTH, H_OUT_DEPTH, H_KERNEL_H, H_KERNEL_W = 9, 10, 11, 12
H_STRIDE_H, H_STRIDE_W, H_DILATION_H, H_DILATION_W, H_PADDING = 13, 14, 15, 16, 17
H_ROW_BYTES, H_RESERVED = 18, 19


_BYTE_TYPES = (bytes, bytearray, memoryview)


class FormatError(ValueError):
    """The bytes do not follow the ternary op format (wrong magic, sizes, ranges)."""


FC_BLOCK = 32  # output channels whose FC weight rows are interleaved word by word


def row_bytes(in_depth: int) -> int:
    """Bytes of one packed weight row: a +1 bit plane then a −1 bit plane, each ceil(C/16)
    little-endian 16-bit words."""
    return 4 * ((int(in_depth) + 15) // 16)


@dataclass(frozen=True)
class TernaryOp:
    """One ternary op, unpacked. ``weights`` holds −1/0/+1 as int8, ``[O, K]`` or ``[O, KH, KW, C]``.

    Real-valued meaning: ``w_real[o] = alpha[o] * weights[o]``; the per-channel ``alpha`` is folded
    into ``multiplier``/``shift`` (``in_scale * alpha[o] / out_scale``) and into ``bias``
    (quantized with scale ``in_scale * alpha[o]``).
    """

    kind: int
    weights: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    in_zp: int
    out_zp: int
    act_min: int = -128
    act_max: int = 127
    activation: int = ACT_NONE
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    padding: int = PADDING_VALID

    @property
    def name(self) -> str:
        return OP_NAMES[self.kind]

    @property
    def out_depth(self) -> int:
        return int(self.weights.shape[0])

    @property
    def in_depth(self) -> int:
        return int(self.weights.shape[-1])

    @property
    def kernel_hw(self) -> tuple[int, int]:
        if self.kind == KIND_FC:
            return 1, 1
        return int(self.weights.shape[1]), int(self.weights.shape[2])

    def header(self) -> np.ndarray:
        """The 20 header words (int32)."""
        kh, kw = self.kernel_hw
        words = [0] * HEADER_WORDS
        words[H_MAGIC] = MAGIC - 2**32 if MAGIC > INT32_MAX else MAGIC
        words[H_VERSION] = FORMAT_VERSION
        words[H_KIND] = self.kind
        words[H_HEADER_WORDS] = HEADER_WORDS
        words[H_IN_ZP] = int(self.in_zp)
        words[H_OUT_ZP] = int(self.out_zp)
        words[H_ACT_MIN] = int(self.act_min)
        words[H_ACT_MAX] = int(self.act_max)
        words[H_ACTIVATION] = int(self.activation)
        words[H_IN_DEPTH] = self.in_depth
        words[H_OUT_DEPTH] = self.out_depth
        words[H_KERNEL_H] = kh
        words[H_KERNEL_W] = kw
        words[H_STRIDE_H] = int(self.stride_h)
        words[H_STRIDE_W] = int(self.stride_w)
        words[H_DILATION_H] = int(self.dilation_h)
        words[H_DILATION_W] = int(self.dilation_w)
        words[H_PADDING] = int(self.padding)
        words[H_ROW_BYTES] = row_bytes(self.in_depth)
        return np.array(words, dtype=np.int32)

    def validate(self) -> None:
        """Raise FormatError if any field is out of its documented range."""
        _validate_header(self.header())
        w = np.asarray(self.weights)
        if w.dtype != np.int8 or w.ndim != (2 if self.kind == KIND_FC else 4):
            raise FormatError(f"weights must be int8 of rank {2 if self.kind == KIND_FC else 4}")
        if w.size and (w.min() < -1 or w.max() > 1):
            raise FormatError("weights must be in {-1, 0, +1}")
        for name in ("bias", "multiplier", "shift"):
            a = np.asarray(getattr(self, name))
            if a.shape != (self.out_depth,):
                raise FormatError(f"{name} must have shape ({self.out_depth},), got {a.shape}")
        _validate_channels(np.asarray(self.multiplier), np.asarray(self.shift))


def _validate_header(h: np.ndarray) -> None:
    if h.shape[0] < HEADER_WORDS:
        raise FormatError(f"header has {h.shape[0]} words, expected {HEADER_WORDS}")
    if int(h[H_MAGIC]) & 0xFFFFFFFF != MAGIC:
        raise FormatError("bad magic: not an edgeq ternary op")
    if int(h[H_VERSION]) != FORMAT_VERSION:
        raise FormatError(f"format version {int(h[H_VERSION])}, this code reads {FORMAT_VERSION}")
    if int(h[H_KIND]) not in OP_NAMES:
        raise FormatError(f"unknown op kind {int(h[H_KIND])}")
    if int(h[H_HEADER_WORDS]) != HEADER_WORDS:
        raise FormatError(f"header_words {int(h[H_HEADER_WORDS])}, expected {HEADER_WORDS}")
    for idx, name in (
        (H_IN_ZP, "in_zp"),
        (H_OUT_ZP, "out_zp"),
        (H_ACT_MIN, "act_min"),
        (H_ACT_MAX, "act_max"),
    ):
        if not -128 <= int(h[idx]) <= 127:
            raise FormatError(f"{name} {int(h[idx])} outside [-128, 127]")
    if int(h[H_ACT_MIN]) > int(h[H_ACT_MAX]):
        raise FormatError("act_min > act_max")
    for idx, name in (
        (H_IN_DEPTH, "in_depth"),
        (H_OUT_DEPTH, "out_depth"),
        (H_KERNEL_H, "kernel_h"),
        (H_KERNEL_W, "kernel_w"),
        (H_STRIDE_H, "stride_h"),
        (H_STRIDE_W, "stride_w"),
        (H_DILATION_H, "dilation_h"),
        (H_DILATION_W, "dilation_w"),
    ):
        if int(h[idx]) < 1:
            raise FormatError(f"{name} must be >= 1, got {int(h[idx])}")
    if int(h[H_PADDING]) not in (PADDING_VALID, PADDING_SAME):
        raise FormatError(f"padding {int(h[H_PADDING])} is neither VALID (0) nor SAME (1)")
    if int(h[H_ROW_BYTES]) != row_bytes(int(h[H_IN_DEPTH])):
        raise FormatError("row_bytes does not match in_depth")
    depth = int(h[H_IN_DEPTH]) * int(h[H_KERNEL_H]) * int(h[H_KERNEL_W])
    if depth > 2**22:
        raise FormatError(f"reduction depth {depth} exceeds 2^22")
    if int(h[H_KIND]) == KIND_FC:
        for idx in (H_KERNEL_H, H_KERNEL_W, H_STRIDE_H, H_STRIDE_W, H_DILATION_H, H_DILATION_W):
            if int(h[idx]) != 1:
                raise FormatError("an FC op has kernel, stride and dilation 1")
        if int(h[H_PADDING]) != PADDING_VALID:
            raise FormatError("an FC op has padding VALID (0)")


def _validate_channels(multiplier: np.ndarray, shift: np.ndarray) -> None:
    if multiplier.size and (int(multiplier.min()) < 0):
        raise FormatError("multiplier must be in [0, 2^31 - 1]")
    if shift.size and (int(shift.min()) < -31 or int(shift.max()) > 30):
        raise FormatError("shift must be in [-31, 30]")


# ---------------------------------------------------------------------------------------------
# Packed weights


def pack_weights(weights: np.ndarray) -> np.ndarray:
    """−1/0/+1 int8 ``[O, ..., C]`` → uint8 ``[O, ..., row_bytes(C)]``, one row after the other.

    Each row (one output channel, one kernel tap) is a +1 plane then a −1 plane of ceil(C/16)
    little-endian 16-bit words; input channel ``c`` is bit ``c % 16`` of word ``c // 16`` (so bit
    ``c % 8`` of byte ``c // 8``, LSB first) of each plane. Bits past ``C`` are zero.
    """
    w = np.asarray(weights)
    if w.size and (w.min() < -1 or w.max() > 1):
        raise FormatError("weights must be in {-1, 0, +1}")
    nb = row_bytes(w.shape[-1]) // 2
    pad = [(0, 0)] * (w.ndim - 1) + [(0, 8 * nb - w.shape[-1])]
    plus = np.packbits(np.pad((w == 1).astype(np.uint8), pad), axis=-1, bitorder="little")
    minus = np.packbits(np.pad((w == -1).astype(np.uint8), pad), axis=-1, bitorder="little")
    return np.ascontiguousarray(np.concatenate([plus, minus], axis=-1), dtype=np.uint8)


def unpack_weights(packed: np.ndarray, in_depth: int) -> np.ndarray:
    """Inverse of :func:`pack_weights`. A weight is ``plus_bit - minus_bit``: the unused code (both
    bits set) reads as 0, and bits past ``in_depth`` are ignored."""
    p = np.asarray(packed, dtype=np.uint8)
    rb = row_bytes(in_depth)
    if p.shape[-1] != rb:
        raise FormatError(f"packed rows have {p.shape[-1]} bytes, expected {rb} for depth {in_depth}")
    nb = rb // 2
    plus = np.unpackbits(p[..., :nb], axis=-1, bitorder="little")[..., :in_depth]
    minus = np.unpackbits(p[..., nb:], axis=-1, bitorder="little")[..., :in_depth]
    return (plus.astype(np.int8) - minus.astype(np.int8)).astype(np.int8)


def _fc_words(rows: np.ndarray) -> np.ndarray:
    """``[O, RB]`` bytes → ``[O, 2, W]`` 16-bit words (plane, word)."""
    o, rb = rows.shape
    return rows.reshape(o, rb).view("<u2").reshape(o, 2, rb // 4)


def interleave_fc(rows: np.ndarray) -> np.ndarray:
    """FC rows as :func:`pack_weights` writes them → the FC weight layout, same shape ``[O, RB]``.

    Output channels go in blocks of ``FC_BLOCK`` (the last block holds the remaining ``n``). A block
    stores, for each word ``w`` and plane ``p`` (+1 then −1), that word of each of its ``n``
    channels in turn: word ``w`` of plane ``p`` of channel ``o`` (block lane ``l``) is at byte
    ``2·((2·w + p)·n + l)`` from the block's start, ``block·FC_BLOCK·RB``. A vector kernel then
    reads one word of 32 channels with one load.
    """
    r = np.ascontiguousarray(rows, dtype=np.uint8)
    words = _fc_words(r)
    out = np.empty_like(r)
    for b0 in range(0, r.shape[0], FC_BLOCK):
        blk = words[b0 : b0 + FC_BLOCK]  # [n, 2, W]
        n = blk.shape[0]
        out[b0 : b0 + n] = np.ascontiguousarray(blk.transpose(2, 1, 0)).view(np.uint8).reshape(n, -1)
    return out


def deinterleave_fc(data: np.ndarray) -> np.ndarray:
    """Inverse of :func:`interleave_fc`."""
    d = np.ascontiguousarray(data, dtype=np.uint8)
    o, rb = d.shape
    out = np.empty_like(d)
    for b0 in range(0, o, FC_BLOCK):
        n = min(FC_BLOCK, o - b0)
        blk = d[b0 : b0 + n].reshape(-1).view("<u2").reshape(rb // 4, 2, n)
        out[b0 : b0 + n] = np.ascontiguousarray(blk.transpose(2, 1, 0)).view(np.uint8).reshape(n, rb)
    return out


# ---------------------------------------------------------------------------------------------
# qparams tensor


def qparams_shape(op: TernaryOp) -> tuple[int, ...]:
    n = HEADER_WORDS + 3 * op.out_depth
    if op.kind == KIND_FC:
        return (n,)
    lead = (op.stride_h, op.stride_w, op.dilation_h, op.dilation_w, op.padding + 1)
    return (*lead, -(-n // int(np.prod(lead))))


def encode_qparams(op: TernaryOp) -> np.ndarray:
    """The int32 qparams tensor (header, bias, multiplier, shift, zero fill), shaped as documented."""
    op.validate()
    shape = qparams_shape(op)
    flat = np.zeros(int(np.prod(shape)), dtype=np.int32)
    o = op.out_depth
    flat[:HEADER_WORDS] = op.header()
    flat[HEADER_WORDS : HEADER_WORDS + o] = np.asarray(op.bias, dtype=np.int64).astype(np.int32)
    flat[HEADER_WORDS + o : HEADER_WORDS + 2 * o] = np.asarray(op.multiplier, dtype=np.int64).astype(np.int32)
    flat[HEADER_WORDS + 2 * o : HEADER_WORDS + 3 * o] = np.asarray(op.shift, dtype=np.int64).astype(np.int32)
    return flat.reshape(shape)


def decode_header(data: Any) -> dict[str, int]:
    """Header words (an int32 array) or the 80 custom-option bytes → named fields (validated)."""
    if type(data) in _BYTE_TYPES:
        if len(data) < HEADER_BYTES:
            raise FormatError(f"custom options have {len(data)} bytes, expected {HEADER_BYTES}")
        h = np.frombuffer(bytes(data[:HEADER_BYTES]), dtype="<i4")
    else:
        h = np.asarray(data, dtype=np.int64).reshape(-1).astype(np.int32)
    _validate_header(h)
    names = (
        "magic version kind header_words in_zp out_zp act_min act_max activation in_depth out_depth "
        "kernel_h kernel_w stride_h stride_w dilation_h dilation_w padding row_bytes reserved"
    ).split()
    return {name: int(h[i]) for i, name in enumerate(names)}


def decode(packed: np.ndarray, qparams: np.ndarray) -> TernaryOp:
    """The op from its two constant inputs, checking that shapes and header agree."""
    qp = np.asarray(qparams)
    if qp.dtype != np.int32:
        raise FormatError(f"qparams must be int32, got {qp.dtype}")
    flat = qp.reshape(-1)
    h = decode_header(flat[:HEADER_WORDS]) if flat.size >= HEADER_WORDS else decode_header(flat)
    o = h["out_depth"]
    if flat.size < HEADER_WORDS + 3 * o:
        raise FormatError(f"qparams has {flat.size} words, expected >= {HEADER_WORDS + 3 * o}")
    if h["kind"] == KIND_CONV2D:
        lead = (h["stride_h"], h["stride_w"], h["dilation_h"], h["dilation_w"], h["padding"] + 1)
        if qp.ndim != 6 or tuple(int(d) for d in qp.shape[:5]) != lead:
            raise FormatError(f"conv qparams shape {qp.shape} does not start with {lead}")
        wshape: tuple[int, ...] = (o, h["kernel_h"], h["kernel_w"], h["row_bytes"])
    else:
        if qp.ndim != 1:
            raise FormatError(f"FC qparams must be 1-D, got shape {qp.shape}")
        wshape = (o, h["row_bytes"])
    p = np.asarray(packed)
    if p.dtype != np.uint8 or tuple(p.shape) != wshape:
        raise FormatError(f"packed weights must be uint8 {wshape}, got {p.dtype} {p.shape}")
    if h["kind"] == KIND_FC:
        p = deinterleave_fc(p)
    bias = flat[HEADER_WORDS : HEADER_WORDS + o].copy()
    mult = flat[HEADER_WORDS + o : HEADER_WORDS + 2 * o].copy()
    shift = flat[HEADER_WORDS + 2 * o : HEADER_WORDS + 3 * o].copy()
    _validate_channels(mult, shift)
    return TernaryOp(
        kind=h["kind"],
        weights=unpack_weights(p, h["in_depth"]),
        bias=bias,
        multiplier=mult,
        shift=shift,
        in_zp=h["in_zp"],
        out_zp=h["out_zp"],
        act_min=h["act_min"],
        act_max=h["act_max"],
        activation=h["activation"],
        stride_h=h["stride_h"],
        stride_w=h["stride_w"],
        dilation_h=h["dilation_h"],
        dilation_w=h["dilation_w"],
        padding=h["padding"],
    )


def encode(op: TernaryOp) -> tuple[np.ndarray, np.ndarray, bytes]:
    """``(packed weights, qparams, custom options)`` for one op node."""
    qp = encode_qparams(op)
    packed = pack_weights(op.weights)
    if op.kind == KIND_FC:
        packed = interleave_fc(packed)
    return packed, qp, op.header().astype("<i4").tobytes()


# ---------------------------------------------------------------------------------------------
# Shapes and quantization helpers


def conv_output_size(in_size: int, kernel: int, stride: int, dilation: int, padding: int) -> tuple[int, int]:
    """``(output size, padding before)`` along one spatial axis, TFLite's rule."""
    eff = (kernel - 1) * dilation + 1
    out = (in_size + stride - 1) // stride if padding == PADDING_SAME else (in_size - eff + stride) // stride
    if out < 1:
        raise FormatError(f"input size {in_size} too small for kernel {kernel} (dilation {dilation})")
    total = max((out - 1) * stride + eff - in_size, 0)
    return out, (total // 2 if padding == PADDING_SAME else 0)


def output_shape(op: TernaryOp, x_shape: Sequence[int]) -> tuple[int, ...]:
    x_shape = tuple(int(d) for d in x_shape)
    if x_shape[-1] != op.in_depth:
        raise FormatError(f"input depth {x_shape[-1]} != op in_depth {op.in_depth}")
    if op.kind == KIND_FC:
        return (*x_shape[:-1], op.out_depth)
    if len(x_shape) != 4:
        raise FormatError(f"conv input must be NHWC, got shape {x_shape}")
    kh, kw = op.kernel_hw
    oh, _ = conv_output_size(x_shape[1], kh, op.stride_h, op.dilation_h, op.padding)
    ow, _ = conv_output_size(x_shape[2], kw, op.stride_w, op.dilation_w, op.padding)
    return (x_shape[0], oh, ow, op.out_depth)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: ``real ≈ m * 2^(shift - 31)``, ``m`` in [2^30, 2^31) or 0."""
    if real < 0:
        raise FormatError(f"multiplier must be >= 0, got {real}")
    if real == 0.0:
        return 0, 0
    q, exp = math.frexp(real)
    m = int(math.floor(abs(q) * (1 << 31) + 0.5))  # round half away from zero, like std::round
    if m == 1 << 31:
        m //= 2
        exp += 1
    if exp < -31:
        return 0, 0
    if exp > 30:
        raise FormatError(f"multiplier {real} too large (needs shift {exp} > 30)")
    return m, exp


def activation_range(activation: int, out_scale: float, out_zp: int) -> tuple[int, int]:
    """``(act_min, act_max)`` for a fused activation, TFLite's CalculateActivationRangeQuantized."""
    lo, hi = -128, 127
    if activation == ACT_RELU:
        lo = max(lo, out_zp)
    elif activation == ACT_RELU6:
        lo = max(lo, out_zp)
        hi = min(hi, out_zp + int(math.floor(6.0 / out_scale + 0.5)))
    elif activation != ACT_NONE:
        raise FormatError(f"unsupported fused activation {activation}")
    return lo, hi
