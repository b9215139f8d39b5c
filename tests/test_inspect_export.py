"""inspect / export / distill / qat commands, and their bad inputs (the per-layer quantization error of
inspect --debug-quant is in test_debug_quant.py)."""

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


@pytest.mark.slow
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
    assert_clean_error(run, EXIT_BAD_INPUT, "takes 8x8x1 images", "gives 16x16x3")
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


# ------------------------------------------------------------------------------------------------
# Issue 13 item 14: a model exported with data that is not its own says so


def _student(shape: tuple[int, int, int], classes: int, dest: Path, qat: bool = False) -> Path:
    """The built-in student for ``shape`` (untrained: these tests are about shapes and labels), saved
    as a float .keras or, with ``qat``, wrapped by tfmot and saved as edgeq qat saves it (.h5)."""
    from edgeq import tfenv
    from edgeq.models import build_model, save_model

    model = build_model("student", shape, classes)
    if qat:
        model = tfenv.tfmot().quantization.keras.quantize_model(model)
    save_model(model, dest)
    return dest


def test_export_without_data_names_the_shape_the_model_takes(tmp_path: Path) -> None:
    from PIL import Image

    from edgeq import api

    for cls in ("cat", "dog", "eel"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (30 + i, 28), (40 * i, 80, 200)).save(tmp_path / "pets" / cls / f"{i}.png")
    out = tmp_path / "m.tflite"
    qat = _student((24, 24, 3), 3, tmp_path / "qat.h5", qat=True)
    run = edgeq("export", qat, "--out", out)  # a QAT model used to reach the converter
    assert_clean_error(run, EXIT_BAD_INPUT, "qat.h5 takes 24x24x3 images", "'digits' gives 8x8x1")
    assert "--data" in run.stderr and "--image-size 24x24" in run.stderr
    assert "int8 builtins" not in run.stderr

    with pytest.raises(UserInputError) as e:
        api.export(_student((24, 24, 3), 3, tmp_path / "float.keras"), out)
    assert "float.keras takes 24x24x3 images, but the dataset 'digits' gives 8x8x1" in e.value.message
    assert "--image-size 24x24" in e.value.hint
    assert not out.exists()

    api.export(qat, out, data=api.DataOptions(str(tmp_path / "pets"), image_size=(24, 24)))
    assert json.loads((tmp_path / "m.edgeq.json").read_text())["labels"] == ["cat", "dog", "eel"]


def test_npz_labels_reach_the_sidecar(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from edgeq import api
    from edgeq.data import load_dataset
    from edgeq.models import build_model, save_model

    d = load_digits()
    keep = d.target < 3
    x = (d.images[keep] * 16).clip(0, 255).astype(np.uint8)
    np.savez(tmp_path / "pets.npz", x=x, y=d.target[keep] + 5, labels=np.array(["cat", "dog", "eel"]))
    qat = _student((8, 8, 1), 3, tmp_path / "pets_qat.h5", qat=True)
    out = tmp_path / "m.tflite"
    # Without --data the digits used to give it the labels 0..9.
    run = edgeq("export", qat, "--out", out)
    assert_clean_error(run, EXIT_BAD_INPUT, "pets_qat.h5 has 3 outputs", "'digits' has 10 classes")
    api.export(qat, out, data=api.DataOptions(str(tmp_path / "pets.npz")))
    assert json.loads((tmp_path / "m.edgeq.json").read_text())["labels"] == ["cat", "dog", "eel"]

    # Ten named classes of digits' shape: only the record saved with the model can tell them apart.
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    np.savez(
        tmp_path / "named.npz", x=(d.images * 16).clip(0, 255).astype(np.uint8), y=d.target, labels=names
    )
    ds = load_dataset(tmp_path / "named.npz")
    save_model(build_model("student", ds.input_shape, ds.num_classes), tmp_path / "named.keras", dataset=ds)
    with pytest.raises(UserInputError) as e:
        api.export(tmp_path / "named.keras", out)
    assert "named.keras was trained on" in e.value.message and "labels zero, one" in e.value.message
    assert e.value.hint == f"pass --data {tmp_path / 'named.npz'}"
