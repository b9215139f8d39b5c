"""Ternary custom ops without TensorFlow: format, NumPy reference, C kernels (every SIMD path), and
the aarch64 build under qemu-user."""

from __future__ import annotations

import dataclasses
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_prerequisite

from edgeq.ops import reference
from edgeq.ops import ternary_format as spec
from edgeq.ops.build import build_cli, build_library, compiler_for, host_arch
from edgeq.runner.native import NativeError, TernaryKernels

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def kernels() -> Iterator[TernaryKernels]:
    k = TernaryKernels(build_library())
    yield k
    k.set_isa(-1)


def _isa_levels(k: TernaryKernels) -> list[int]:
    """Every inner loop this CPU can run (scalar first)."""
    levels = []
    for level in (0, 1, 2, 3):
        name = k.set_isa(level)
        if {0: "scalar", 1: "neon", 2: "avx2", 3: "avx512bw"}[level] == name:
            levels.append(level)
    k.set_isa(-1)
    return levels


# --- random ops -------------------------------------------------------------------------------


def random_op(rng: np.random.Generator, kind: int, *, extreme: bool = False) -> spec.TernaryOp:
    out_depth = int(rng.integers(1, 48))
    in_depth = int(rng.choice([1, 3, 7, 8, 9, 15, 16, 31, 32, 33, 63, 64, 65, 127, 130, 200]))
    if kind == spec.KIND_FC:
        shape: tuple[int, ...] = (out_depth, in_depth)
    else:
        shape = (out_depth, int(rng.integers(1, 4)), int(rng.integers(1, 4)), in_depth)
    p_zero = float(rng.uniform(0.0, 0.9))
    weights = rng.choice([-1, 0, 1], size=shape, p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2]).astype(
        np.int8
    )
    if extreme:
        multiplier = rng.choice([0, 1, 2**30, 2**31 - 1], size=out_depth).astype(np.int64)
        multiplier = np.where(rng.random(out_depth) < 0.5, rng.integers(0, 2**31, size=out_depth), multiplier)
        shift = rng.integers(-31, 31, size=out_depth)
        bias = rng.integers(INT32_MIN, INT32_MAX, size=out_depth, endpoint=True)
        zps = [int(rng.choice([-128, 127])), int(rng.choice([-128, 127]))]
    else:
        multiplier = rng.integers(2**30, 2**31, size=out_depth)
        shift = rng.integers(-14, 1, size=out_depth)
        bias = rng.integers(-20000, 20000, size=out_depth)
        zps = [int(rng.integers(-128, 128)), int(rng.integers(-128, 128))]
    act = int(rng.choice([spec.ACT_NONE, spec.ACT_RELU, spec.ACT_RELU6]))
    act_min, act_max = spec.activation_range(act, float(rng.uniform(0.01, 0.2)), zps[1])
    fields = {}
    if kind == spec.KIND_CONV2D:
        fields = {
            "stride_h": int(rng.integers(1, 4)),
            "stride_w": int(rng.integers(1, 4)),
            "dilation_h": int(rng.integers(1, 3)),
            "dilation_w": int(rng.integers(1, 3)),
            "padding": int(rng.integers(0, 2)),
        }
    return spec.TernaryOp(
        kind=kind,
        weights=weights,
        bias=bias.astype(np.int32),
        multiplier=multiplier.astype(np.int32),
        shift=shift.astype(np.int32),
        in_zp=zps[0],
        out_zp=zps[1],
        act_min=act_min,
        act_max=act_max,
        activation=act,
        **fields,
    )


def random_input(rng: np.random.Generator, op: spec.TernaryOp) -> np.ndarray:
    if op.kind == spec.KIND_FC:
        lead = tuple(int(d) for d in rng.integers(1, 4, size=int(rng.integers(1, 3))))
        return rng.integers(-128, 128, size=(*lead, op.in_depth)).astype(np.int8)
    kh, kw = op.kernel_hw
    h = int(rng.integers((kh - 1) * op.dilation_h + 1, 11))
    w = int(rng.integers((kw - 1) * op.dilation_w + 1, 11))
    return rng.integers(-128, 128, size=(int(rng.integers(1, 3)), h, w, op.in_depth)).astype(np.int8)


CASES = [
    (seed, kind, extreme)
    for seed in range(60)
    for kind in (spec.KIND_FC, spec.KIND_CONV2D)
    for extreme in (False, True)
]


# --- format -----------------------------------------------------------------------------------


def test_pack_unpack_round_trip() -> None:
    rng = np.random.default_rng(1)
    for depth in (1, 5, 8, 9, 16, 17, 64, 100):
        t = rng.integers(-1, 2, size=(3, 2, 2, depth)).astype(np.int8)
        packed = spec.pack_weights(t)
        assert packed.shape == (3, 2, 2, spec.row_bytes(depth)) and packed.dtype == np.uint8
        np.testing.assert_array_equal(spec.unpack_weights(packed, depth), t)


def test_packed_layout_is_as_documented() -> None:
    t = np.array([[1, -1, 0, 1, 0, 0, 0, 0, -1]], dtype=np.int8)  # 9 weights → 2 bytes per plane
    packed = spec.pack_weights(t)
    # +1 plane: bits 0 and 3 of byte 0; −1 plane: bit 1 of byte 0 and bit 0 of byte 1.
    assert packed.tolist() == [[0b00001001, 0, 0b00000010, 0b00000001]]
    # The unused code (both bits) reads as 0, and bits past the depth are ignored.
    odd = np.array([[0b11111111, 0b11111110, 0b00000001, 0]], dtype=np.uint8)
    assert spec.unpack_weights(odd, 9).tolist() == [[0, 1, 1, 1, 1, 1, 1, 1, 0]]


def test_fc_layout_interleaves_blocks_of_channels_as_documented() -> None:
    rng = np.random.default_rng(3)
    for o, k in ((1, 1), (5, 9), (32, 16), (33, 17), (70, 100), (64, 1024)):
        t = rng.integers(-1, 2, size=(o, k)).astype(np.int8)
        rows = spec.pack_weights(t)
        fc = spec.interleave_fc(rows)
        assert fc.shape == rows.shape == (o, spec.row_bytes(k))
        np.testing.assert_array_equal(spec.deinterleave_fc(fc), rows)
        words = rows.view("<u2").reshape(o, 2, -1)  # [channel, plane, word]
        flat = fc.reshape(-1)
        for ch in {0, o - 1, o // 2}:
            b, lane = divmod(ch, spec.FC_BLOCK)
            n = min(spec.FC_BLOCK, o - b * spec.FC_BLOCK)
            for plane in (0, 1):
                for w in {0, words.shape[2] - 1}:
                    at = b * spec.FC_BLOCK * rows.shape[1] + 2 * ((2 * w + plane) * n + lane)
                    assert int(flat[at]) | int(flat[at + 1]) << 8 == int(words[ch, plane, w])
        packed, _, _ = spec.encode(
            spec.TernaryOp(
                kind=spec.KIND_FC,
                weights=t,
                bias=np.zeros(o, np.int32),
                multiplier=np.full(o, 1 << 30, np.int32),
                shift=np.zeros(o, np.int32),
                in_zp=0,
                out_zp=0,
            )
        )
        np.testing.assert_array_equal(packed, fc)


def test_options_layout_round_trip() -> None:
    rng = np.random.default_rng(2)
    for kind in (spec.KIND_FC, spec.KIND_CONV2D):
        op = random_op(rng, kind)
        packed, qparams, options = spec.encode(op)
        assert len(options) == spec.HEADER_BYTES == 80
        assert options[:4] == b"EQT1"
        words = struct.unpack("<20i", options)
        assert words[spec.H_OUT_DEPTH] == op.out_depth and words[spec.H_IN_DEPTH] == op.in_depth
        assert spec.decode_header(options) == spec.decode_header(qparams.reshape(-1)[:20])
        back = spec.decode(packed, qparams)
        for field in (
            "kind",
            "in_zp",
            "out_zp",
            "act_min",
            "act_max",
            "activation",
            "stride_h",
            "stride_w",
            "dilation_h",
            "dilation_w",
            "padding",
        ):
            assert getattr(back, field) == getattr(op, field), field
        for field in ("weights", "bias", "multiplier", "shift"):
            np.testing.assert_array_equal(getattr(back, field), getattr(op, field))
        if kind == spec.KIND_CONV2D:
            lead = (op.stride_h, op.stride_w, op.dilation_h, op.dilation_w, op.padding + 1)
            assert qparams.shape[:5] == lead
        else:
            assert qparams.shape == (20 + 3 * op.out_depth,)


def test_format_errors_are_caught() -> None:
    rng = np.random.default_rng(3)
    op = random_op(rng, spec.KIND_CONV2D)
    packed, qparams, options = spec.encode(op)
    bad = qparams.copy().reshape(-1)
    bad[0] = 0
    with pytest.raises(spec.FormatError, match="magic"):
        spec.decode(packed, bad.reshape(qparams.shape))
    with pytest.raises(spec.FormatError, match="shape"):
        spec.decode(packed, qparams.reshape(-1))  # conv geometry must be in the shape
    with pytest.raises(spec.FormatError, match="packed weights"):
        spec.decode(packed[:-1], qparams)
    with pytest.raises(spec.FormatError, match="shift"):
        spec.encode(spec.TernaryOp(**{**op.__dict__, "shift": np.full(op.out_depth, 31, np.int32)}))


def test_quantize_multiplier_matches_tflite_rule() -> None:
    for real in (1e-9, 0.001, 0.25, 0.5, 0.75, 0.999999, 1.0, 3.3, 1000.0):
        m, s = spec.quantize_multiplier(real)
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    assert spec.quantize_multiplier(0.0) == (0, 0)


# --- reference --------------------------------------------------------------------------------


def _mbqm_python(acc: int, m: int, shift: int) -> int:
    """TFLite's MultiplyByQuantizedMultiplier with Python integers, written independently."""
    left, right = max(shift, 0), max(-shift, 0)
    a = ((acc << left) + 2**31) % 2**32 - 2**31
    if a == m == INT32_MIN:
        high = INT32_MAX
    else:
        ab = a * m
        nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
        v = ab + nudge
        high = v // (1 << 31) if v >= 0 else -((-v) // (1 << 31))
    mask = (1 << right) - 1
    rem = high & mask
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if rem > threshold else 0)


def test_requantization_bit_exact(kernels: TernaryKernels) -> None:
    rng = np.random.default_rng(4)
    acc = np.concatenate(
        [rng.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True), [INT32_MIN, INT32_MAX, 0, -1, 1]]
    )
    mult = np.concatenate([rng.integers(0, 2**31, 3000), [0, 2**31 - 1, 2**30, 1, 2**31 - 1]])
    shift = np.concatenate([rng.integers(-31, 31, 3000), [-31, 30, 0, -1, 30]])
    ref = reference.multiply_by_quantized_multiplier(acc, mult, shift)
    for a, m, s, r in zip(acc.tolist(), mult.tolist(), shift.tolist(), ref.tolist(), strict=True):
        want = _mbqm_python(a, m, s)
        assert r == want, (a, m, s)
        assert kernels.mbqm(a, m, s) == want, (a, m, s)
    # The two roundings, as documented: the doubling high multiply rounds a tie up (1.5 → 2,
    # −1.5 → −1); the rounding right shift rounds a tie away from zero (1.5 → 2, −1.5 → −2).
    assert _mbqm_python(3, 2**30, 0) == 2 and _mbqm_python(-3, 2**30, 0) == -1
    assert reference.rounding_divide_by_pot(np.array([3, -3]), np.array(1)).tolist() == [2, -2]
    assert kernels.mbqm(6, 2**30, -1) == 2 and kernels.mbqm(-6, 2**30, -1) == -2


def test_vector_requantization_bit_exact_in_every_isa(kernels: TernaryKernels) -> None:
    """The FC kernels requantize many channels at once: with zero weights the accumulator is the
    bias, so 3005 channels carry the extreme accumulators, multipliers and shifts above."""
    rng = np.random.default_rng(8)
    n = 3005
    bias = np.concatenate(
        [rng.integers(INT32_MIN, INT32_MAX, n - 5, endpoint=True), [INT32_MIN, INT32_MAX, 0, -1, 1]]
    )
    mult = np.concatenate([rng.integers(0, 2**31, n - 5), [0, 2**31 - 1, 2**30, 1, 2**31 - 1]])
    shift = np.concatenate([rng.integers(-31, 31, n - 5), [-31, 30, 0, -1, 30]])
    for out_zp, (act_min, act_max) in ((-128, (-128, 127)), (127, (-128, 127)), (5, (-20, 40))):
        op = spec.TernaryOp(
            kind=spec.KIND_FC,
            weights=np.zeros((n, 16), np.int8),
            bias=bias.astype(np.int32),
            multiplier=mult.astype(np.int32),
            shift=shift.astype(np.int32),
            in_zp=3,
            out_zp=out_zp,
            act_min=act_min,
            act_max=act_max,
        )
        packed, qparams, _ = spec.encode(op)
        x = rng.integers(-128, 128, size=(2, 16)).astype(np.int8)
        want = reference.run(x, packed, qparams)
        for level in _isa_levels(kernels):
            kernels.set_isa(level)
            np.testing.assert_array_equal(kernels.run(x, packed, qparams), want, err_msg=kernels.isa)
    kernels.set_isa(-1)


def _naive_conv(op: spec.TernaryOp, x: np.ndarray) -> np.ndarray:
    kh, kw = op.kernel_hw
    n, h, w, _ = x.shape
    oh, pt = spec.conv_output_size(h, kh, op.stride_h, op.dilation_h, op.padding)
    ow, pl = spec.conv_output_size(w, kw, op.stride_w, op.dilation_w, op.padding)
    acc = np.zeros((n, oh, ow, op.out_depth), dtype=np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for o in range(op.out_depth):
                    s = int(op.bias[o])
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = (
                                oy * op.stride_h - pt + ky * op.dilation_h,
                                ox * op.stride_w - pl + kx * op.dilation_w,
                            )
                            if 0 <= iy < h and 0 <= ix < w:
                                s += int(
                                    np.dot(
                                        op.weights[o, ky, kx].astype(np.int64),
                                        x[b, iy, ix].astype(np.int64) - op.in_zp,
                                    )
                                )
                    acc[b, oy, ox, o] = s
    return reference.requantize(reference.wrap32(acc), op)


def test_reference_conv_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(5)
    for _ in range(6):
        op = random_op(rng, spec.KIND_CONV2D)
        op = spec.TernaryOp(
            **{
                **op.__dict__,
                "weights": op.weights[:4],
                "bias": op.bias[:4],
                "multiplier": op.multiplier[:4],
                "shift": op.shift[:4],
            }
        )
        x = random_input(rng, op)[:1, :6, :6]
        if (
            x.shape[1] < (op.kernel_hw[0] - 1) * op.dilation_h + 1
            or x.shape[2] < (op.kernel_hw[1] - 1) * op.dilation_w + 1
        ):
            continue
        packed, qparams, _ = spec.encode(op)
        np.testing.assert_array_equal(reference.ternary_conv2d(x, packed, qparams), _naive_conv(op, x))


def test_same_padding_follows_tflite() -> None:
    # 5 wide, kernel 3, stride 2: out 3, total padding 2 → 1 before; kernel 4: total 3 → 1 before.
    assert spec.conv_output_size(5, 3, 2, 1, spec.PADDING_SAME) == (3, 1)
    assert spec.conv_output_size(5, 4, 2, 1, spec.PADDING_SAME) == (3, 1)
    assert spec.conv_output_size(6, 3, 1, 2, spec.PADDING_VALID) == (2, 0)


# --- C kernel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,kind,extreme", CASES)
def test_c_kernel_bit_exact(kernels: TernaryKernels, seed: int, kind: int, extreme: bool) -> None:
    """240 random shapes and values, each through every inner loop the CPU has."""
    rng = np.random.default_rng(1000 + seed * 4 + kind * 2 + extreme)
    op = random_op(rng, kind, extreme=extreme)
    x = random_input(rng, op)
    packed, qparams, _ = spec.encode(op)
    want = reference.run(x, packed, qparams)
    assert want.shape == spec.output_shape(op, x.shape)
    for level in _isa_levels(kernels):
        kernels.set_isa(level)
        got = kernels.run(x, packed, qparams)
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want, err_msg=f"isa {kernels.isa}")
    kernels.set_isa(-1)


def test_c_kernel_shape_inference_matches_spec(kernels: TernaryKernels) -> None:
    rng = np.random.default_rng(6)
    for i in range(40):
        op = random_op(rng, i % 2)
        x = random_input(rng, op)
        packed, qparams, _ = spec.encode(op)
        assert kernels.infer_shape(op.kind, x.shape, packed.shape, qparams.shape) == spec.output_shape(
            op, x.shape
        )


def test_c_kernel_rejects_bad_input(kernels: TernaryKernels) -> None:
    rng = np.random.default_rng(7)
    op = random_op(rng, spec.KIND_FC)
    packed, qparams, _ = spec.encode(op)
    x = rng.integers(-128, 128, size=(2, op.in_depth + 1)).astype(np.int8)
    with pytest.raises(NativeError, match="depth"):
        kernels.run(x, packed, qparams)
    bad = qparams.copy()
    bad[1] = spec.FORMAT_VERSION + 1  # a format version this library does not read
    with pytest.raises(NativeError, match="version"):
        kernels.run(x[:, :-1], packed, bad)


@pytest.mark.parametrize("out_depth", [128, 131, 200, 257])
def test_wide_fc_bit_exact(kernels: TernaryKernels, out_depth: int) -> None:
    """FC ops of several 32-channel blocks (the AVX-512 path takes four blocks per pass, then single
    ones), depths that are and are not multiples of 3 and 6, batches of rows."""
    rng = np.random.default_rng(out_depth)
    for in_depth in (5, 96, 301, 1000):
        op = random_op(rng, spec.KIND_FC)
        op = dataclasses.replace(
            op,
            weights=rng.integers(-1, 2, size=(out_depth, in_depth)).astype(np.int8),
            bias=rng.integers(-20000, 20000, size=out_depth).astype(np.int32),
            multiplier=rng.integers(2**30, 2**31, size=out_depth).astype(np.int32),
            shift=rng.integers(-14, 1, size=out_depth).astype(np.int32),
        )
        x = rng.integers(-128, 128, size=(3, in_depth)).astype(np.int8)
        packed, qparams, _ = spec.encode(op)
        want = reference.run(x, packed, qparams)
        for level in _isa_levels(kernels):
            kernels.set_isa(level)
            np.testing.assert_array_equal(kernels.run(x, packed, qparams), want, err_msg=kernels.isa)
    kernels.set_isa(-1)


def test_long_rows_do_not_overflow(kernels: TernaryKernels) -> None:
    """Depth 4096, every weight +1 or every weight −1, and |x − in_zp| = 255 everywhere: exercises
    the widening of the narrow accumulators in every SIMD path (35 channels: a full FC block and a
    partial one)."""
    o, k = 35, 4096
    weights = np.where((np.arange(o) % 2 == 0)[:, None], 1, -1) * np.ones((o, k), dtype=np.int8)
    for x_value, in_zp in ((127, -128), (-128, 127)):
        op = spec.TernaryOp(
            kind=spec.KIND_FC,
            weights=weights.astype(np.int8),
            bias=np.zeros(o, np.int32),
            multiplier=np.full(o, 2**30, np.int32),
            shift=np.resize(np.array([-12, -13, -20], np.int32), o),
            in_zp=in_zp,
            out_zp=0,
        )
        packed, qparams, _ = spec.encode(op)
        x = np.full((1, k), x_value, dtype=np.int8)
        want = reference.run(x, packed, qparams)
        assert np.abs(want).max() > 60  # the sums are large, not clamped to nothing
        for level in _isa_levels(kernels):
            kernels.set_isa(level)
            np.testing.assert_array_equal(kernels.run(x, packed, qparams), want, err_msg=kernels.isa)
    kernels.set_isa(-1)


# --- aarch64 ----------------------------------------------------------------------------------


def _qemu() -> str | None:
    return shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")


def _write_cases(path: Path, cases: list[tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]]) -> None:
    with open(path, "wb") as f:
        for x, packed, qparams, out_shape in cases:
            f.write(struct.pack("<i", qparams.size) + qparams.astype("<i4").tobytes())
            f.write(struct.pack("<q", packed.size) + packed.tobytes())
            f.write(struct.pack("<i", x.ndim) + np.asarray(x.shape, "<i4").tobytes() + x.tobytes())
            f.write(struct.pack("<q", int(np.prod(out_shape))))


def _read_results(path: Path, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    data = path.read_bytes()
    out, pos = [], 0
    for shape in shapes:
        (rc,) = struct.unpack_from("<i", data, pos)
        assert rc == 0
        n = int(np.prod(shape))
        out.append(np.frombuffer(data, np.int8, n, pos + 4).reshape(shape))
        pos += 4 + n
    return out


def test_host_cli_driver_bit_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    cases, wants = [], []
    for i in range(20):
        op = random_op(rng, i % 2, extreme=i % 3 == 0)
        x = random_input(rng, op)
        packed, qparams, _ = spec.encode(op)
        wants.append(reference.run(x, packed, qparams))
        cases.append((x, packed, qparams, wants[-1].shape))
    _write_cases(tmp_path / "cases.bin", cases)
    subprocess.run(
        [str(build_cli()), str(tmp_path / "cases.bin"), str(tmp_path / "out.bin")],
        check=True,
        capture_output=True,
    )
    for got, want in zip(_read_results(tmp_path / "out.bin", [w.shape for w in wants]), wants, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(host_arch() != "x86_64", reason="cross-build check runs on an x86_64 host")
def test_aarch64_build_bit_exact_under_qemu(tmp_path: Path) -> None:
    """The aarch64 build (NEON and scalar loops) gives the reference's bytes, run with qemu-user."""
    try:
        compiler_for("aarch64")
    except Exception:
        missing_prerequisite("aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu)")
    qemu = _qemu()
    if qemu is None:
        missing_prerequisite("qemu-user not installed (apt-get install qemu-user-static)")
        return
    lib = build_library("aarch64", out_dir=tmp_path / "lib")
    assert (
        b"AArch64" in subprocess.run(["file", str(lib)], capture_output=True, check=False).stdout
        or lib.read_bytes()[18] == 0xB7
    )
    cli = build_cli("aarch64", static=True)
    rng = np.random.default_rng(9)
    cases, wants = [], []
    for i in range(24):
        op = random_op(rng, i % 2, extreme=i % 3 == 0)
        x = random_input(rng, op)
        packed, qparams, _ = spec.encode(op)
        wants.append(reference.run(x, packed, qparams))
        cases.append((x, packed, qparams, wants[-1].shape))
    _write_cases(tmp_path / "cases.bin", cases)
    for isa, name in ((-1, "neon"), (0, "scalar")):
        res = subprocess.run(
            [qemu, str(cli), str(tmp_path / "cases.bin"), str(tmp_path / "out.bin"), str(isa)],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        assert res.stdout.strip() == name
        for got, want in zip(
            _read_results(tmp_path / "out.bin", [w.shape for w in wants]), wants, strict=True
        ):
            np.testing.assert_array_equal(got, want)


def test_conv_common_shapes_bit_exact() -> None:
    """120 more convs with the channel counts of small CNNs (multiples of 8), padded taps, strides
    and row dilation: the best inner loop (on AVX-512, the per-pixel table path) and scalar give
    the reference's bytes."""
    kernels = TernaryKernels(build_library())
    rng = np.random.default_rng(42)
    for _ in range(120):
        c = int(rng.choice([8, 16, 24, 32, 64]))
        kw = int(rng.integers(1, 64 // c + 1))
        kh, o = int(rng.integers(1, 5)), int(rng.integers(1, 40))
        sh, sw, dh = (int(v) for v in rng.integers(1, 3, size=3))
        h, wd = int(rng.integers(kh * dh, 12)), int(rng.integers(kw, 12))
        op = spec.TernaryOp(
            kind=spec.KIND_CONV2D,
            weights=rng.integers(-1, 2, size=(o, kh, kw, c)).astype(np.int8),
            bias=rng.integers(-(2**20), 2**20, o).astype(np.int32),
            multiplier=rng.integers(1 << 29, (1 << 31) - 1, o).astype(np.int32),
            shift=rng.integers(-12, 3, o).astype(np.int32),
            in_zp=int(rng.integers(-128, 128)),
            out_zp=int(rng.integers(-128, 128)),
            stride_h=sh,
            stride_w=sw,
            dilation_h=dh,
            padding=int(rng.integers(0, 2)),
        )
        packed, qparams, _ = spec.encode(op)
        x = rng.integers(-128, 128, size=(int(rng.integers(1, 3)), h, wd, c)).astype(np.int8)
        want = reference.conv2d(op, x)
        for level in (-1, 0):  # the best inner loop this CPU has, and scalar
            kernels.set_isa(level)
            np.testing.assert_array_equal(kernels.run(x, packed, qparams), want)
    kernels.set_isa(-1)
