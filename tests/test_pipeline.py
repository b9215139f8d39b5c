"""The default pipeline end to end (small epoch budget), and everything it writes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgeq.data import load_dataset
from edgeq.export.tflite_model import describe, interpreter_accuracy

EXPECTED_FILES = {
    "teacher.keras",
    "student.keras",
    "student_qat.h5",
    "student_float.tflite",
    "model.tflite",
    "model.edgeq.json",
    "model_ptq.tflite",
    "model_ptq.edgeq.json",
    "report.json",
    "report.md",
    "latency.png",
    "manifest.json",
    ".edgeq.lock",
}


def test_pipeline_writes_every_file_and_nothing_half_written(pipeline_dir: Path) -> None:
    names = {p.name for p in pipeline_dir.iterdir()}
    assert names == EXPECTED_FILES


def test_report_has_the_promised_fields(pipeline_dir: Path) -> None:
    r = json.loads((pipeline_dir / "report.json").read_text())
    assert r["schema"] == "edgeq.report/1"
    schemas = Path(__file__).resolve().parent.parent / "docs" / "schemas"
    for name, instance in (("edgeq.report-1", r), ("edgeq.result-1", r["profile"])):
        jsonschema.Draft202012Validator(json.loads((schemas / f"{name}.schema.json").read_text())).validate(
            instance
        )
    acc = r["accuracy"]
    assert set(acc) >= {"teacher_float", "student_float", "student_int8_qat", "student_int8_ptq"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())
    # Even three epochs learn digits far above chance (0.1).
    assert acc["student_int8_qat"] > 0.5
    assert r["params"]["student"] * 4 <= r["params"]["teacher"]
    sizes = r["size_bytes"]
    assert sizes["student_int8"] == (pipeline_dir / "model.tflite").stat().st_size
    assert sizes["student_float_tflite"] == (pipeline_dir / "student_float.tflite").stat().st_size
    assert sizes["student_int8"] <= 0.30 * sizes["student_float_tflite"]
    assert r["wall_s"] > 0
    prof = r["profile"]
    assert prof["schema"] == "edgeq.result/1"
    lat = prof["latency_us"]
    assert lat["n"] == 50 and 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert prof["device"]["name"] == "local" and prof["device"]["runtime"] == "ai-edge-litert"
    sha = hashlib.sha256((pipeline_dir / "model.tflite").read_bytes()).hexdigest()
    assert prof["model"]["sha256"] == sha == r["model"]["sha256"]
    # The runner's on-device accuracy is the interpreter's accuracy on the same test split.
    assert prof["accuracy"]["n"] == r["dataset"]["sizes"]["test"]
    assert abs(prof["accuracy"]["top1"] - acc["student_int8_qat"]) < 1e-9
    assert r["gate"]["passed"] is True
    md = (pipeline_dir / "report.md").read_text()
    assert "QAT" in md and "PTQ" in md and "latency p50" in md


def test_int8_accuracies_are_measured_with_the_interpreter(pipeline_dir: Path) -> None:
    r = json.loads((pipeline_dir / "report.json").read_text())
    ds = load_dataset()
    assert (
        interpreter_accuracy(pipeline_dir / "model.tflite", ds.x_test, ds.y_test)
        == r["accuracy"]["student_int8_qat"]
    )
    assert (
        interpreter_accuracy(pipeline_dir / "model_ptq.tflite", ds.x_test, ds.y_test)
        == r["accuracy"]["student_int8_ptq"]
    )


def test_exported_models_are_int8_end_to_end(pipeline_dir: Path) -> None:
    for name in ("model.tflite", "model_ptq.tflite"):
        info = describe(pipeline_dir / name)
        assert info.full_int8, info.violations
        assert info.tensor(info.inputs[0]).dtype == "int8"
        assert info.tensor(info.outputs[0]).dtype == "int8"
        roles = {t.role for t in info.tensors}
        assert {"weight", "bias", "activation"} <= roles
        assert all(t.dtype == "int32" for t in info.tensors if t.role == "bias")
    flt = describe(pipeline_dir / "student_float.tflite")
    assert not flt.full_int8 and any("float32" in v for v in flt.violations)


def test_sidecar_records_recipe_hashes_versions_and_quantization(pipeline_dir: Path) -> None:
    side = json.loads((pipeline_dir / "model.edgeq.json").read_text())
    model = pipeline_dir / "model.tflite"
    assert side["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert side["labels"] == [str(i) for i in range(10)]
    assert side["recipe"]["steps"] == ["train", "distill", "qat", "export"]
    assert side["recipe"]["temperature"] == 4.0
    assert side["versions"]["tensorflow"] == "2.21.0"
    assert side["dataset"]["sha256"] == load_dataset().fingerprint()
    from ai_edge_litert.interpreter import Interpreter

    detail = Interpreter(model_path=str(model)).get_input_details()[0]
    scale, zp = detail["quantization"]
    assert np.isclose(side["input"]["scale"], scale) and side["input"]["zero_point"] == zp
    assert (
        side["accuracy"]["student_int8_qat"]
        == json.loads((pipeline_dir / "report.json").read_text())["accuracy"]["student_int8_qat"]
    )


@pytest.mark.slow
def test_pipeline_with_a_user_teacher(pipeline_dir: Path, tmp_path: Path) -> None:
    from support_cli import edgeq

    out = tmp_path / "out"
    run = edgeq(
        "pipeline", "--out", out, "--teacher", pipeline_dir / "teacher.keras", "--student-epochs", "1",
        "--qat-epochs", "1", "--runs", "5", "--warmup", "1", "--max-accuracy-drop", "100", "--json",
        env={"EDGEQ_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert run.code == 0, run.stderr
    report = json.loads(run.stdout)
    first = json.loads((pipeline_dir / "report.json").read_text())
    # The given teacher is used as is: same parameters, same accuracy, no training epochs recorded.
    assert report["accuracy"]["teacher_float"] == first["accuracy"]["teacher_float"]
    assert report["params"]["teacher"] == first["params"]["teacher"]
    assert report["recipe"]["teacher"] == str(pipeline_dir / "teacher.keras")
    assert report["recipe"]["teacher_epochs"] == 0
