"""Ternary custom ops inside real .tflite models: the rewrite, and running them through LiteRT's C
API (libLiteRt.so) with the kernels registered by the shim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.ops import reference, rewrite
from edgeq.ops import ternary_format as spec
from edgeq.ops.build import build_library
from edgeq.runner.native import LiteRtSession, NativeError


def _convert(build: Any, input_shape: tuple[int, ...], seed: int = 0) -> bytes:
    from edgeq import tfenv
    from edgeq.export.convert import to_int8_tflite

    k = tfenv.keras()
    tfenv.set_seed(seed)
    inp = k.Input(input_shape)
    model = k.Model(inp, build(k, inp))
    rng = np.random.default_rng(seed)
    return to_int8_tflite(model, rng.normal(size=(48, *input_shape)).astype(np.float32))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """int8 models and their ternary rewrites: conv → flatten → FC, a lone FC, a lone strided conv."""
    out = tmp_path_factory.mktemp("ternary_models")
    specs = {
        "chain": (
            lambda k, x: k.layers.Dense(10)(
                k.layers.Flatten()(k.layers.Conv2D(6, 3, padding="same", activation="relu")(x))
            ),
            (8, 8, 2),
        ),
        "fc": (lambda k, x: k.layers.Dense(24, activation="relu")(x), (70,)),
        # ten blocks of 32 channels (two passes of four and two single blocks), depth not a multiple of 3
        "fc_wide": (lambda k, x: k.layers.Dense(300)(x), (200,)),
        "conv": (
            lambda k, x: k.layers.Conv2D(5, (3, 2), strides=(2, 1), padding="valid", dilation_rate=1)(x),
            (9, 7, 3),
        ),
    }
    paths: dict[str, Path] = {}
    for name, (build, shape) in specs.items():
        data = _convert(build, shape)
        (out / f"{name}_int8.tflite").write_bytes(data)
        new, done = rewrite.to_ternary_ops(data)
        assert done
        (out / f"{name}.tflite").write_bytes(new)
        paths[name] = out / f"{name}.tflite"
        paths[f"{name}_int8"] = out / f"{name}_int8.tflite"
    return paths


@pytest.fixture(scope="module")
def library() -> Path:
    return build_library()


def _reference_chain(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """The model's ternary ops applied in order (the models here have only reshapes between)."""
    y = x
    for node in rewrite.read_ternary_ops(model_bytes):
        if node.op.kind == spec.KIND_FC:
            y = reference.fc(node.op, y.reshape(-1, node.op.in_depth))
        else:
            y = reference.conv2d(node.op, y)
    return y


def test_rewrite_replaces_ops_and_drops_int8_weights(models: dict[str, Path]) -> None:
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    data = models["chain"].read_bytes()
    before = models["chain_int8"].read_bytes()
    m = fbu.read_model_from_bytearray(bytearray(data))
    sg = m.subgraphs[0]
    names = []
    for op in sg.operators:
        code = m.operatorCodes[op.opcodeIndex]
        if code.builtinCode == schema.BuiltinOperator.CUSTOM:
            names.append(code.customCode.decode())
            assert len(op.inputs) == 3
            assert bytes(bytearray(op.customOptions))[:4] == b"EQT1"
            w, q = sg.tensors[op.inputs[1]], sg.tensors[op.inputs[2]]
            assert w.type == schema.TensorType.UINT8 and q.type == schema.TensorType.INT32
            assert w.quantization is None
    assert names == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    nodes = rewrite.read_ternary_ops(data)
    fc = nodes[1].op
    # The FC's int8 weights (O·K bytes) are gone: only their 2-bit planes remain.
    assert nodes[1].packed.size == fc.out_depth * spec.row_bytes(fc.in_depth) < fc.out_depth * fc.in_depth
    assert len(data) < len(before)
    # Tensor indices are preserved (an FC without bias gets its qparams tensor appended), so the
    # signature and the other ops still line up.
    m0 = fbu.read_model_from_bytearray(bytearray(before))
    assert len(sg.tensors) - len(m0.subgraphs[0].tensors) == sum(
        len(o.inputs) < 3 or o.inputs[2] < 0
        for o in m0.subgraphs[0].operators
        if len(o.inputs) >= 2 and o.opcodeIndex != sg.operators[1].opcodeIndex
    )
    for t0, t1 in zip(m0.subgraphs[0].tensors, sg.tensors, strict=False):
        assert t0.type != schema.TensorType.INT8 or t1.type in (
            schema.TensorType.INT8,
            schema.TensorType.UINT8,
        )
    assert list(m0.subgraphs[0].inputs) == list(sg.inputs) and list(m0.subgraphs[0].outputs) == list(
        sg.outputs
    )


def test_constant_inputs_are_64_byte_aligned(models: dict[str, Path]) -> None:
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    data = models["chain"].read_bytes()
    for node in rewrite.read_ternary_ops(data):
        for blob in (node.packed.tobytes(), node.qparams.astype("<i4").tobytes()):
            assert data.find(blob) % 64 == 0
    assert fbu.read_model_from_bytearray(bytearray(data)) is not None


@pytest.mark.parametrize("name", ["chain", "fc", "fc_wide", "conv"])
def test_litert_runs_custom_op_model_bit_exact(models: dict[str, Path], library: Path, name: str) -> None:
    data = models[name].read_bytes()
    nodes = rewrite.read_ternary_ops(data)
    rng = np.random.default_rng(11)
    with LiteRtSession(library, models[name]) as s:
        (in_bytes,) = s.input_bytes
        for _ in range(5):
            x = rng.integers(-128, 128, size=in_bytes).astype(np.int8)
            shape = (1, *_input_shape(data)[1:])
            (out,), elapsed_ns = s.run([x.tobytes()])
            want = _reference_chain(data, x.reshape(shape))
            np.testing.assert_array_equal(np.frombuffer(out, np.int8), want.reshape(-1))
            assert elapsed_ns > 0
        for kind in (spec.KIND_FC, spec.KIND_CONV2D):
            assert s.kernel_runs(kind) == 5 * sum(n.op.kind == kind for n in nodes)
            # each node's op is prepared on its first run and reused: its buffers stay put
            assert s.kernel_prepares(kind) == sum(n.op.kind == kind for n in nodes)


def _input_shape(data: bytes) -> tuple[int, ...]:
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    m = fbu.read_model_from_bytearray(bytearray(data))
    sg = m.subgraphs[0]
    return tuple(int(d) for d in sg.tensors[sg.inputs[0]].shape)


def test_builtin_model_runs_through_the_same_runner(models: dict[str, Path], library: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = models["fc_int8"]
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    x = np.random.default_rng(12).integers(-128, 128, size=inp["shape"]).astype(np.int8)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    with LiteRtSession(library, path) as s:
        (got,), _ = s.run([x.tobytes()])
        assert s.kernel_runs(spec.KIND_FC) == 0
    np.testing.assert_array_equal(np.frombuffer(got, np.int8), interp.get_tensor(out["index"]).reshape(-1))


def test_without_the_kernels_one_line_names_the_missing_op(models: dict[str, Path], library: Path) -> None:
    with pytest.raises(
        NativeError,
        match=r"^the model needs custom op EDGEQ_TERNARY_FC \(op 0\), and no kernel for it is loaded$",
    ):
        LiteRtSession(library, models["fc"], register_ternary=False)


def test_a_kernel_error_surfaces_with_the_op_name(
    models: dict[str, Path], library: Path, tmp_path: Path
) -> None:
    from edgeq import tflite

    m = tflite.read_model(models["fc"]).model
    sg = m.subgraphs[0]
    op = next(o for o in sg.operators if len(o.inputs) == 3)
    buf = m.buffers[sg.tensors[op.inputs[2]].buffer]
    words = np.frombuffer(bytes(bytearray(buf.data)), "<i4").copy()
    words[spec.H_ACT_MIN], words[spec.H_ACT_MAX] = 5, -5  # an invalid clamp, only in qparams
    buf.data = np.frombuffer(words.tobytes(), np.uint8)
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(
        rewrite._serialize_aligned(m, [sg.tensors[op.inputs[1]].buffer, sg.tensors[op.inputs[2]].buffer])
    )
    with (
        LiteRtSession(library, bad) as s,
        pytest.raises(NativeError, match=r"EDGEQ_TERNARY_FC: activation range"),
    ):
        s.run([bytes(s.input_bytes[0])])


def test_ternarize_int8_is_lossless_for_ternary_weights() -> None:
    q = np.array([[0, 127, -127, 0], [5, -5, 0, 0], [0, 0, 0, 0]], dtype=np.int8)
    t, alpha = rewrite.ternarize_int8(q)
    np.testing.assert_array_equal(t, np.sign(q))
    np.testing.assert_allclose(alpha, [127, 5, 0])
    t2, alpha2 = rewrite.ternarize_int8(np.array([[100, 10, -90, 1]], dtype=np.int8))
    # Δ = 0.7 · mean|q| = 35.35: keep 100 and −90, α = 95.
    np.testing.assert_array_equal(t2, [[1, 0, -1, 0]])
    np.testing.assert_allclose(alpha2, [95.0])
