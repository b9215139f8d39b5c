"""inspect / export / distill / qat commands, and their bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support_cli import assert_clean_error, edgeq

from edgeq.errors import EXIT_BAD_INPUT, EXIT_GATE, UserInputError


def test_inspect_json_and_require_int8(pipeline_dir: Path) -> None:
    run = edgeq("inspect", pipeline_dir / "model.tflite", "--json", "--require-int8")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["full_int8"] is True
    assert info["op_counts"]["CONV_2D"] == 2 and info["op_counts"]["FULLY_CONNECTED"] == 2
    w = next(t for t in info["tensors"] if t["role"] == "weight" and len(t["shape"]) == 4)
    assert w["quantization"]["per_channel"] is True and len(w["quantization"]["scale"]) == w["shape"][0]
    assert info["sidecar"]["labels"][0] == "0"

    human = edgeq("inspect", pipeline_dir / "model.tflite")
    assert human.code == 0 and "full int8" in human.stdout and "CONV_2D" in human.stdout


def test_require_int8_fails_a_float_model(pipeline_dir: Path) -> None:
    run = edgeq("inspect", pipeline_dir / "student_float.tflite", "--require-int8")
    assert_clean_error(run, EXIT_GATE, "not int8 end to end", "float32")
    assert "NOT full int8" in run.stdout
    # Without the flag the same model is only reported.
    assert edgeq("inspect", pipeline_dir / "student_float.tflite").code == 0


def test_inspect_bad_models(tmp_path: Path, pipeline_dir: Path) -> None:
    assert_clean_error(edgeq("inspect", tmp_path / "nope.tflite"), EXIT_BAD_INPUT, "model not found")
    rnd = tmp_path / "random.tflite"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    assert_clean_error(edgeq("inspect", rnd), EXIT_BAD_INPUT, "not a TFLite model")
    txt = tmp_path / "notes.tflite"
    txt.write_text("hello\n")
    assert_clean_error(edgeq("inspect", txt), EXIT_BAD_INPUT, "not a TFLite model")
    # A real model cut in half: right identifier, damaged body.
    data = (pipeline_dir / "model.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 2])
    assert_clean_error(edgeq("inspect", cut), EXIT_BAD_INPUT, "cut.tflite")
    assert_clean_error(edgeq("profile", cut), EXIT_BAD_INPUT, "cut.tflite")


def test_debug_quant_reports_per_layer_error(pipeline_dir: Path) -> None:
    run = edgeq("inspect", pipeline_dir / "model.tflite", "--debug-quant", "--json")
    assert run.code == 0, run.stderr
    rows = json.loads(run.stdout)["quant_debug"]
    assert len(rows) >= 4
    assert all(r["mean_squared_error"] >= 0 for r in rows)
    # Quantization error is of the order of the quantization step, not wildly off.
    assert all(0.0 <= r["rmse_per_scale"] < 5.0 for r in rows if "rmse_per_scale" in r)


def test_export_qat_and_float_models(tmp_path: Path, pipeline_dir: Path) -> None:
    out = tmp_path / "q.tflite"
    run = edgeq("export", pipeline_dir / "student_qat.h5", "--out", out, "--json")
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    assert res["int8"] > 0.5 and out.exists() and (tmp_path / "q.edgeq.json").exists()
    side = json.loads((tmp_path / "q.edgeq.json").read_text())
    assert side["recipe"]["quantization"] == "qat"
    assert edgeq("inspect", out, "--require-int8").code == 0

    ptq = tmp_path / "p.tflite"
    run = edgeq("export", pipeline_dir / "student.keras", "--out", ptq, "--json")
    assert run.code == 0, run.stderr
    assert json.loads((tmp_path / "p.edgeq.json").read_text())["recipe"]["quantization"] == "ptq"


def test_export_bad_inputs_leave_nothing(tmp_path: Path, pipeline_dir: Path) -> None:
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"definitely not a keras zip")
    out = tmp_path / "o.tflite"
    assert_clean_error(edgeq("export", junk, "--out", out), EXIT_BAD_INPUT, "cannot load junk.keras")
    assert_clean_error(
        edgeq("export", tmp_path / "missing.keras", "--out", out), EXIT_BAD_INPUT, "model not found"
    )
    assert_clean_error(
        edgeq("export", pipeline_dir / "student.keras", "--out", tmp_path / "o.bin"),
        EXIT_BAD_INPUT,
        "must end in",
    )
    assert list(tmp_path.iterdir()) == [junk]


def test_distill_from_a_user_teacher_and_shape_mismatch(tmp_path: Path, pipeline_dir: Path) -> None:
    out = tmp_path / "s.keras"
    run = edgeq("distill", pipeline_dir / "teacher.keras", "--out", out, "--epochs", "1", "--json")
    assert run.code == 0, run.stderr
    assert out.exists() and json.loads(run.stdout)["params"] > 0

    # The digits teacher does not fit 16×16 colour images.
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rgb.npz", x=rng.random((30, 16, 16, 3), dtype=np.float32), y=np.arange(30) % 3)
    run = edgeq(
        "distill",
        pipeline_dir / "teacher.keras",
        "--data",
        tmp_path / "rgb.npz",
        "--out",
        tmp_path / "x.keras",
    )
    assert_clean_error(run, EXIT_BAD_INPUT, "takes inputs of shape (8, 8, 1)")
    assert not (tmp_path / "x.keras").exists()


def test_qat_names_a_layer_tfmot_cannot_quantize() -> None:
    from edgeq import tfenv
    from edgeq.train.core import check_quantizable

    k = tfenv.keras()

    class Scale(k.layers.Layer):  # type: ignore[misc, name-defined]
        def call(self, x: object) -> object:
            return x * 2.0  # type: ignore[operator]

    inp = k.Input((8, 8, 1))
    x = k.layers.Conv2D(4, 3)(inp)
    x = Scale(name="my_scale")(x)
    model = k.Model(inp, k.layers.Dense(2)(k.layers.Flatten()(x)))
    with pytest.raises(UserInputError) as e:
        check_quantizable(model)
    assert "'my_scale'" in e.value.message and "QuantizeConfig" in e.value.hint


def test_accuracy_gate() -> None:
    from edgeq.pipeline import accuracy_gate

    assert accuracy_gate(0.99, 0.985, 1.0) == {
        "max_accuracy_drop_points": 1.0,
        "drop_points": 0.5,
        "passed": True,
    }
    assert accuracy_gate(0.99, 0.979, 1.0)["passed"] is False  # 1.1 points
    assert accuracy_gate(0.98, 0.97, 1.0)["passed"] is True  # exactly 1 point is allowed
    assert accuracy_gate(0.95, 0.96, 0.0)["passed"] is True  # int8 better than float
