"""The bit-exact definition of EDGEQ_TERNARY_FC and EDGEQ_TERNARY_CONV2D, in NumPy.

NumPy only, Python 3.8 syntax (the device side may run it). Every kernel (C, any SIMD path) must give
exactly these int8 outputs for every valid input; ``docs/custom_ops.md`` states the same in prose.

    acc[o]  = wrap32(bias[o] + Σ_k t[o, k] · (x[k] − in_zp))          t ∈ {−1, 0, +1}
    y[o]    = clamp(MultiplyByQuantizedMultiplier(acc[o], multiplier[o], shift[o]) + out_zp,
                    act_min, act_max)

For conv the sum runs over the kernel window; taps outside the input contribute nothing (as if the
input there were ``in_zp``). ``MultiplyByQuantizedMultiplier`` is TFLite's reference (gemmlowp's
double rounding), spelled out in :func:`multiply_by_quantized_multiplier`.
"""

from __future__ import annotations

import numpy as np

from edgeq.ops.ternary_format import (
    INT32_MAX,
    INT32_MIN,
    KIND_CONV2D,
    KIND_FC,
    FormatError,
    TernaryOp,
    conv_output_size,
    decode,
)


def wrap32(v: np.ndarray) -> np.ndarray:
    """Two's complement wrap of int64 values to the int32 range (kept as int64)."""
    v = np.asarray(v, dtype=np.int64)
    return ((v + 2**31) & 0xFFFFFFFF) - 2**31


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's SaturatingRoundingDoublingHighMul on int32 values (held in int64)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    v = ab + nudge
    # C's integer division truncates toward zero; >> floors, so negate around it.
    q = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """gemmlowp's RoundingDivideByPOT: x / 2^exponent, rounding half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0).astype(np.int64)
    return (x >> e) + (remainder > threshold).astype(np.int64)


def multiply_by_quantized_multiplier(
    acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier: ``acc · multiplier · 2^(shift − 31)``, rounded.

    A positive ``shift`` is a left shift applied (with int32 wrap-around) before the high multiply,
    a negative one a rounding right shift after it.
    """
    s = np.asarray(shift, dtype=np.int64)
    left = np.maximum(s, 0)
    right = np.maximum(-s, 0)
    shifted = wrap32(np.asarray(acc, dtype=np.int64) << left)
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def requantize(acc: np.ndarray, op: TernaryOp) -> np.ndarray:
    """int32 accumulators (last axis = output channel) → int8 outputs."""
    scaled = multiply_by_quantized_multiplier(acc, op.multiplier, op.shift)
    return np.clip(scaled + op.out_zp, op.act_min, op.act_max).astype(np.int8)


def ternary_fc(x: np.ndarray, packed: np.ndarray, qparams: np.ndarray) -> np.ndarray:
    """EDGEQ_TERNARY_FC: int8 ``[..., K]`` → int8 ``[..., O]``."""
    op = decode(packed, qparams)
    if op.kind != KIND_FC:
        raise FormatError("qparams describe a conv op, not an FC op")
    return fc(op, x)


def ternary_conv2d(x: np.ndarray, packed: np.ndarray, qparams: np.ndarray) -> np.ndarray:
    """EDGEQ_TERNARY_CONV2D: int8 NHWC ``[N, H, W, C]`` → int8 ``[N, OH, OW, O]``."""
    op = decode(packed, qparams)
    if op.kind != KIND_CONV2D:
        raise FormatError("qparams describe an FC op, not a conv op")
    return conv2d(op, x)


def run(x: np.ndarray, packed: np.ndarray, qparams: np.ndarray) -> np.ndarray:
    """Either op, chosen by the header's kind."""
    op = decode(packed, qparams)
    return fc(op, x) if op.kind == KIND_FC else conv2d(op, x)


def fc(op: TernaryOp, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise FormatError(f"input must be int8, got {x.dtype}")
    if x.shape[-1] != op.in_depth:
        raise FormatError(f"input depth {x.shape[-1]} != op in_depth {op.in_depth}")
    rows = x.reshape(-1, op.in_depth).astype(np.int64) - op.in_zp
    acc = wrap32(rows @ op.weights.astype(np.int64).T + np.asarray(op.bias, dtype=np.int64))
    return requantize(acc, op).reshape((*x.shape[:-1], op.out_depth))


def conv2d(op: TernaryOp, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8 or x.ndim != 4:
        raise FormatError(f"input must be int8 NHWC, got {x.dtype} {x.shape}")
    n, h, w, c = x.shape
    if c != op.in_depth:
        raise FormatError(f"input depth {c} != op in_depth {op.in_depth}")
    kh, kw = op.kernel_hw
    oh, pad_top = conv_output_size(h, kh, op.stride_h, op.dilation_h, op.padding)
    ow, pad_left = conv_output_size(w, kw, op.stride_w, op.dilation_w, op.padding)
    span_h = (oh - 1) * op.stride_h + (kh - 1) * op.dilation_h + 1
    span_w = (ow - 1) * op.stride_w + (kw - 1) * op.dilation_w + 1
    pad_bottom = max(span_h - pad_top - h, 0)
    pad_right = max(span_w - pad_left - w, 0)
    # Padding with 0 after subtracting in_zp: a tap outside the input contributes nothing.
    xs = np.pad(x.astype(np.int64) - op.in_zp, ((0, 0), (pad_top, pad_bottom), (pad_left, pad_right), (0, 0)))
    wt = op.weights.astype(np.int64)
    acc = np.zeros((n, oh, ow, op.out_depth), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            y0 = ky * op.dilation_h
            x0 = kx * op.dilation_w
            patch = xs[
                :,
                y0 : y0 + (oh - 1) * op.stride_h + 1 : op.stride_h,
                x0 : x0 + (ow - 1) * op.stride_w + 1 : op.stride_w,
                :,
            ]
            acc += patch @ wt[:, ky, kx, :].T
    acc = wrap32(acc + np.asarray(op.bias, dtype=np.int64))
    return requantize(acc, op)
