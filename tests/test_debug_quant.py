"""``inspect --debug-quant`` (issue 13 item 18): the per-layer error of the int8 file inspected against
the Keras model it was converted from, on every model edgeq writes, from any directory; QAT and PTQ
side by side; the ternary model through the custom-op path; distill from edgeq's own ternary student.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support_cli import assert_clean_error, edgeq

from edgeq.errors import EXIT_BAD_INPUT


def debug_quant(model: Path, cwd: Path, *extra: str | Path) -> dict[str, Any]:
    cwd.mkdir(parents=True, exist_ok=True)
    run = edgeq("inspect", model, "--debug-quant", "--json", *extra, cwd=cwd)
    assert run.code == 0, run.stderr
    return json.loads(run.stdout)  # type: ignore[no-any-return]


def assert_describes_the_file(info: dict[str, Any]) -> None:
    """Every row is a tensor of the inspected file, with that tensor's own scale and zero point."""
    tensors = {t["index"]: t for t in info["tensors"]}
    for row in info["quant_debug"]:
        q = tensors[row["index"]]["quantization"]
        assert (q["scale"][0], q["zero_point"][0]) == (row["scale"], row["zero_point"]), row
        assert tensors[row["index"]]["name"] == row["tensor"]


def test_qat_model_against_its_qat_source_with_ptq_side_by_side(
    pipeline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    info = debug_quant(pipeline_dir / "model.tflite", tmp_path / "elsewhere")
    main, ptq = info["quant_debug_models"]
    assert (main["file"], main["quantization"], main["source"]["file"]) == (
        "model.tflite",
        "qat",
        "student_qat.h5",
    )
    assert (ptq["role"], ptq["file"], ptq["source"]["file"]) == ("ptq", "model_ptq.tflite", "student.keras")
    assert main["not_compared"] == [] and ptq["not_compared"] == []  # every activation has its layer
    rows = info["quant_debug"]
    assert rows[0]["layer"] == "image" and rows[-1]["layer"] == "logits"
    assert {"CONV_2D", "MAX_POOL_2D", "RESHAPE", "FULLY_CONNECTED"} <= {r["op"] for r in rows}
    assert_describes_the_file(info)
    # The QAT int8 file reproduces its QAT model's simulated quantization: well under one step per layer.
    assert all(r["rmse_per_scale"] < 1.0 for r in rows), rows
    assert all(r["ptq_rmse_per_scale"] is not None and r["ptq_rmse_per_scale"] >= 0 for r in rows)
    assert main["output"]["top1_agreement"] >= 0.9
    assert info["quant_debug_data"]["split"] == "test"  # the model's own test split, not training data

    from edgeq.cli import train_commands

    monkeypatch.setattr(train_commands.out, "width", 200)
    train_commands._render_quant_debug(info)  # what `edgeq inspect --debug-quant` prints without --json
    human = capsys.readouterr().out
    assert "against student_qat.h5" in human and "ptq rmse (steps)" in human and "test split" in human


def test_ptq_model_and_export_outputs_from_another_directory(
    pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeq import api

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    info = api.inspect(pipeline_dir / "model_ptq.tflite", debug_quant=True)
    main, qat = info["quant_debug_models"]
    assert (main["quantization"], main["source"]["file"], qat["role"]) == ("ptq", "student.keras", "qat")
    assert_describes_the_file(info)
    assert all("qat_rmse_per_scale" in r for r in info["quant_debug"])

    # `edgeq export` run in one directory with relative paths, inspected from another.
    made = tmp_path / "made"
    made.mkdir()
    for name in ("student.keras", "student_qat.h5"):
        shutil.copy(pipeline_dir / name, made / name)
    for src, out in (("student.keras", "out/p.tflite"), ("student_qat.h5", "out/q.tflite")):
        monkeypatch.chdir(made)
        api.export(Path(src), Path(out))
        monkeypatch.chdir(elsewhere)
        info = api.inspect(made / out, debug_quant=True)
        assert info["quant_debug_models"][0]["source"]["path"] == str(made / src)
        assert info["quant_debug_models"][0]["not_compared"] == []
        assert_describes_the_file(info)


def test_ternary_model_through_the_custom_op_path(ternary_pipeline_dir: Path, tmp_path: Path) -> None:
    from edgeq.data import load_dataset
    from edgeq.export.debug_quant import capture
    from edgeq.export.tflite_model import custom_op_outputs, describe

    model = ternary_pipeline_dir / "model.tflite"
    info = debug_quant(model, tmp_path)
    main = info["quant_debug_models"][0]
    assert main["source"]["file"] == "student_qat.h5" and main["not_compared"] == []
    ops = {r["op"] for r in info["quant_debug"]}
    assert {"EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"} <= ops
    assert_describes_the_file(info)
    assert all(r["rmse_per_scale"] < 1.5 for r in info["quant_debug"])
    assert [m["role"] for m in info["quant_debug_models"]] == ["inspected", "ptq"]

    # What the comparison reads out of the file is what the runner's custom-op path computes.
    x = load_dataset().x_test[:16]
    out_index = describe(model).outputs[0]
    assert np.array_equal(capture(model, x, [out_index])[out_index], custom_op_outputs(model, x))


def test_data_override_when_the_recorded_dataset_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.datasets import load_digits

    from edgeq import api
    from edgeq.models import build_model, save_model

    d = load_digits()
    made = tmp_path / "made"
    made.mkdir()
    np.savez(made / "data.npz", x=(d.images * 16).clip(0, 255).astype(np.uint8), y=d.target)
    save_model(build_model("student", (8, 8, 1), 10), made / "s.keras")
    monkeypatch.chdir(made)
    api.export(Path("s.keras"), Path("m.tflite"), data=api.DataOptions("data.npz"))
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert api.inspect(made / "m.tflite", debug_quant=True)["quant_debug_data"]["split"] == "test"

    (made / "data.npz").rename(made / "moved.npz")
    run = edgeq("inspect", made / "m.tflite", "--debug-quant", cwd=tmp_path)
    assert_clean_error(run, EXIT_BAD_INPUT, "data.npz that m.tflite was made from is missing")
    assert "--data" in run.stderr.splitlines()[-1]
    info = debug_quant(made / "m.tflite", tmp_path / "b", "--data", made / "moved.npz")
    assert info["quant_debug_data"]["samples"] == 64 and info["quant_debug"]


def test_distill_from_edgeqs_own_ternary_student(ternary_pipeline_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.keras"
    run = edgeq("distill", ternary_pipeline_dir / "student.keras", "--out", out, "--epochs", "1", "--json")
    assert run.code == 0, run.stderr
    assert out.exists() and json.loads(run.stdout)["params"] > 0


@pytest.mark.parametrize("name", ["model.tflite", "model_ptq.tflite"])
def test_sidecar_names_its_source_relative_to_itself(pipeline_dir: Path, name: str) -> None:
    from edgeq.export.sidecar import read_sidecar, resolve_source

    side = read_sidecar(pipeline_dir / name)
    assert side is not None
    src = side["source"]
    assert not Path(src["file"]).is_absolute() and Path(src["path"]).is_absolute()
    assert resolve_source(pipeline_dir / name, side) == (pipeline_dir / src["file"]).resolve()
