"""Edge TPU offline coverage on models built here with edgeq's own converter (full int8)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support_delegate import models

from edgeq import tflite
from edgeq.delegates import get as get_delegate
from edgeq.delegates.edgetpu import coverage as cov
from edgeq.errors import EXIT_BAD_INPUT, UserInputError
from edgeq.placement import CPU, DELEGATE, Coverage, OpPlacement

BUILDERS: dict[str, Callable[[Path], Path]] = {
    "student": models.student,
    "leaky_start": models.leaky("start"),
    "leaky_middle": models.leaky("middle"),
    "leaky_end": models.leaky("end"),
    "float": models.float_model,
    "dynamic": models.dynamic,
    "rank5": models.rank5,
    "big_softmax": models.big_softmax,
    "while_loop": models.while_loop,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("edgetpu-models")
    return {name: build(root / f"{name}.tflite") for name, build in BUILDERS.items()}


def _check(c: Coverage) -> None:
    """What holds for every offline coverage: source, delegate name, known status texts."""
    assert c.delegate == "edgetpu" and c.source == "offline"
    assert [o.index for o in c.ops] == list(range(c.total))
    for o in c.ops:
        assert o.reason in (*cov.STATUSES, cov.DYNAMIC), o
        assert (o.placement == DELEGATE) == (o.reason == cov.MAPPED), o
    assert Coverage.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def _ops(c: Coverage) -> list[tuple[str, str, str]]:
    return [(o.op, o.placement, o.reason) for o in c.ops]


def test_the_pipelines_student_maps_entirely(built: dict[str, Path]) -> None:
    c = get_delegate("edgetpu").coverage(built["student"])
    _check(c)
    assert [o.op for o in c.ops] == [
        "CONV_2D", "CONV_2D", "MAX_POOL_2D", "CONV_2D", "MAX_POOL_2D", "RESHAPE",
        "FULLY_CONNECTED", "FULLY_CONNECTED",
    ]  # fmt: skip
    assert all(o.placement == DELEGATE and o.reason == "Mapped to Edge TPU" for o in c.ops)
    assert c.summary() == "8 of 8 ops on edgetpu, 0 on the CPU"
    assert c.meets("all")
    data = c.to_dict()
    assert data["source"] == "offline" and data["on_delegate"] == 8 and data["on_cpu"] == 0


def test_unsupported_op_at_the_start_leaves_everything_on_the_cpu(built: dict[str, Path]) -> None:
    c = cov.coverage(built["leaky_start"])
    _check(c)
    assert _ops(c)[0] == ("LEAKY_RELU", CPU, "Operation not supported")
    assert _ops(c)[1:] == [(op, CPU, "More than one subgraph is not supported") for op, _, _ in _ops(c)[1:]]
    assert c.on_delegate == 0 and c.summary() == "0 of 6 ops on edgetpu, 6 on the CPU"


def test_unsupported_op_in_the_middle_cuts_the_graph_there(built: dict[str, Path]) -> None:
    c = cov.coverage(built["leaky_middle"])
    _check(c)
    assert _ops(c) == [
        ("CONV_2D", DELEGATE, "Mapped to Edge TPU"),
        ("LEAKY_RELU", CPU, "Operation not supported"),
        ("CONV_2D", CPU, "More than one subgraph is not supported"),
        ("MAX_POOL_2D", CPU, "More than one subgraph is not supported"),
        ("RESHAPE", CPU, "More than one subgraph is not supported"),
        ("FULLY_CONNECTED", CPU, "More than one subgraph is not supported"),
    ]
    assert [o.op for o in c.fallen_back()] == [
        "LEAKY_RELU",
        "CONV_2D",
        "MAX_POOL_2D",
        "RESHAPE",
        "FULLY_CONNECTED",
    ]
    assert any("op 1 LEAKY_RELU and every op after it run on the CPU" in n for n in c.notes)
    assert not c.meets("all") and not c.meets(0.5) and c.meets(1 / 6)


def test_unsupported_op_at_the_end_only_that_op_falls_back(built: dict[str, Path]) -> None:
    c = cov.coverage(built["leaky_end"])
    _check(c)
    assert _ops(c)[-1] == ("LEAKY_RELU", CPU, "Operation not supported")
    assert all(p == DELEGATE for _, p, _ in _ops(c)[:-1])
    assert c.summary() == "5 of 6 ops on edgetpu, 1 on the CPU"


def test_a_float_model_is_refused_with_the_reason(built: dict[str, Path]) -> None:
    with pytest.raises(UserInputError) as err:
        cov.coverage(built["float"])
    e = err.value
    assert e.exit_code == EXIT_BAD_INPUT
    assert e.message.startswith("float.tflite is not quantized: its ops compute in float32")
    assert "Model not quantized" in e.message and "\n" not in e.message
    assert "edgeq export" in e.hint


def test_dynamic_sizes_are_refused_like_the_compiler_does(built: dict[str, Path]) -> None:
    c = cov.coverage(built["dynamic"])
    _check(c)
    assert c.total > 0 and c.on_delegate == 0
    assert {o.reason for o in c.ops} == {cov.DYNAMIC}
    (note,) = c.notes
    assert "-1 in shape_signature" in note and "[-1, -1, 8]" in note and "fixed shape" in note


def test_a_five_dimensional_tensor_has_unsupported_rank(built: dict[str, Path]) -> None:
    c = cov.coverage(built["rank5"])
    _check(c)
    ops = _ops(c)
    assert ops[0] == ("CONV_2D", DELEGATE, "Mapped to Edge TPU")
    assert ops[1] == ("RESHAPE", CPU, "Tensor has unsupported rank (up to 3 innermost dimensions mapped)")
    assert ops[2] == ("REDUCE_MAX", CPU, "Tensor has unsupported rank (up to 3 innermost dimensions mapped)")
    assert all(p == CPU for _, p, _ in ops[1:])
    assert any("[1, 2, 2, 4, 8]" in n for n in c.notes)


def test_softmax_over_more_than_16000_elements_is_not_mapped(built: dict[str, Path]) -> None:
    c = cov.coverage(built["big_softmax"])
    _check(c)
    assert _ops(c) == [
        ("FULLY_CONNECTED", DELEGATE, "Mapped to Edge TPU"),
        ("FULLY_CONNECTED", DELEGATE, "Mapped to Edge TPU"),
        (
            "SOFTMAX",
            CPU,
            "Operation is otherwise supported, but not mapped due to some unspecified limitation",
        ),
    ]
    assert any("at most 16,000 elements (got 16001)" in n for n in c.notes)


def test_a_model_with_control_flow_subgraphs(built: dict[str, Path]) -> None:
    f = tflite.read_model(built["while_loop"])
    assert len(f.model.subgraphs) > 1
    c = cov.coverage(built["while_loop"])
    _check(c)
    names = [o.op for o in c.ops]
    assert "WHILE" in names
    assert c.ops[names.index("WHILE")].reason == "Operation not supported"
    assert c.ops[0] == OpPlacement(0, "FULLY_CONNECTED", DELEGATE, "Mapped to Edge TPU")
    assert all(o.placement == CPU for o in c.ops[names.index("WHILE") :])
    assert any(f"the model has {len(f.model.subgraphs)} subgraphs" in n for n in c.notes)


def _edited(src: Path, dest: Path, edit: Callable[[tflite.TFLiteFile], None]) -> Path:
    f = tflite.read_model(src)
    edit(f)
    dest.write_bytes(tflite.serialize(f.model))
    return dest


def test_documented_limits_of_single_ops(built: dict[str, Path], tmp_path: Path) -> None:
    """The student with one op edited past a documented limit: a fused activation on a pool,
    unequal dilation on a conv."""

    def fused_relu_on_pool(f: tflite.TFLiteFile) -> None:
        f.subgraph.operators[
            2
        ].builtinOptions.fusedActivationFunction = tflite.schema().ActivationFunctionType.RELU

    c = cov.coverage(_edited(built["student"], tmp_path / "pool.tflite", fused_relu_on_pool))
    assert _ops(c)[2] == ("MAX_POOL_2D", CPU, cov.UNSPECIFIED)
    assert _ops(c)[:2] == [("CONV_2D", DELEGATE, cov.MAPPED)] * 2
    assert any("no fused activation function" in n for n in c.notes)

    def dilate(f: tflite.TFLiteFile) -> None:
        f.subgraph.operators[0].builtinOptions.dilationHFactor = 2

    c = cov.coverage(_edited(built["student"], tmp_path / "dilated.tflite", dilate))
    assert _ops(c)[0] == ("CONV_2D", CPU, cov.UNSPECIFIED)
    assert c.on_delegate == 0
    assert any("dilation must be equal (got 2 and 1)" in n for n in c.notes)


def test_not_a_model_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.tflite"
    bad.write_text("not a flatbuffer at all")
    with pytest.raises(UserInputError, match="is not a TFLite model"):
        cov.coverage(bad)


def test_the_op_table_is_the_documented_one() -> None:
    ops = cov.supported_ops()
    for name in (
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "STRIDED_SLICE",
        "TRANSPOSE_CONV",
    ):
        assert name in ops
    for name in ("LEAKY_RELU", "HARD_SWISH", "DEQUANTIZE", "WHILE", "GATHER"):
        assert name not in ops
