"""Delegates xnnpack and none, host side: coverage from the host's real LiteRT execution plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeq import delegates, tflite
from edgeq.errors import UserInputError
from edgeq.placement import CPU, DELEGATE


@pytest.fixture(scope="module")
def softmax_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A classifier ending in an int8 SOFTMAX, which XNNPACK does not take in int8."""
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential(
        [
            k.layers.Input((8, 8, 1)),
            k.layers.Conv2D(4, 3, activation="relu"),
            k.layers.Flatten(),
            k.layers.Dense(3),
            k.layers.Softmax(),
        ]
    )
    calib = np.random.default_rng(0).uniform(0.0, 1.0, (8, 8, 8, 1)).astype(np.float32)
    path = tmp_path_factory.mktemp("softmax") / "softmax.tflite"
    path.write_bytes(to_int8_tflite(model, calib))
    return path


def test_tiny_model_all_on_xnnpack(tiny_model: Path) -> None:
    cov = delegates.get("xnnpack").coverage(tiny_model)
    assert cov.source == "offline" and cov.delegate == "xnnpack"
    assert cov.summary() == "3 of 3 ops on xnnpack, 0 on the CPU"
    assert [o.op for o in cov.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert any("host's ai-edge-litert" in n and "tflite-runtime 2.14" in n for n in cov.notes)


def test_softmax_stays_on_the_builtin_kernel(softmax_model: Path) -> None:
    cov = delegates.get("xnnpack").coverage(softmax_model)
    assert [(o.op, o.placement) for o in cov.ops] == [
        ("CONV_2D", DELEGATE),
        ("RESHAPE", DELEGATE),
        ("FULLY_CONNECTED", DELEGATE),
        ("SOFTMAX", CPU),
    ]
    assert cov.summary() == "3 of 4 ops on xnnpack, 1 on the CPU"
    assert cov.fallen_back()[0].reason.startswith("not taken by XNNPACK")
    assert not cov.meets("all") and cov.meets(0.75)
    assert cov.shortfall(0.75) is None and cov.shortfall(None) is None
    short = cov.shortfall("all")
    assert short is not None and short.startswith("3 of 4 ops on xnnpack, 1 on the CPU; ")
    assert "asks for all ops on xnnpack. On the CPU: SOFTMAX (op 3: not taken by XNNPACK" in short
    assert "asks for 90% on xnnpack" in (cov.shortfall(0.9) or "")


def test_none_puts_every_op_on_the_builtin_kernels(tiny_model: Path, softmax_model: Path) -> None:
    for model, count in ((tiny_model, 3), (softmax_model, 4)):
        cov = delegates.get("none").coverage(model)
        assert cov.summary() == f"0 of {count} ops on none, {count} on the CPU"
        assert all(o.reason == "builtin kernel (no delegate asked for)" for o in cov.ops)


def test_no_compile_step(tiny_model: Path, tmp_path: Path) -> None:
    for name in ("xnnpack", "none"):
        result = delegates.get(name).compile(tiny_model, tmp_path)
        assert result.model == tiny_model and result.delegate == name and "nothing to compile" in result.log
    assert list(tmp_path.iterdir()) == []


def test_custom_op_model_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    s = tflite.schema()
    m = tflite.read_model(tiny_model).model
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode = b"EDGEQ_STANDIN"
    m.operatorCodes.append(code)
    m.subgraphs[0].operators[1].opcodeIndex = len(m.operatorCodes) - 1
    m.subgraphs[0].operators[1].builtinOptionsType = 0
    m.subgraphs[0].operators[1].builtinOptions = None
    path = tmp_path / "custom.tflite"
    path.write_bytes(tflite.serialize(m))
    with pytest.raises(UserInputError) as exc:
        delegates.get("xnnpack").coverage(path)
    assert "cannot load custom.tflite" in exc.value.message and "\n" not in exc.value.message
    assert "EDGEQ_STANDIN" in exc.value.hint


def test_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"hello")
    with pytest.raises(UserInputError, match="not a TFLite model"):
        delegates.get("none").coverage(junk)
