"""``edgeq pipeline --weights ternary`` end to end, and ``edgeq inspect`` of the ternary model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from support_cli import assert_clean_error, edgeq

from edgeq.export.tflite_model import TensorInfo, _int8_violation, describe
from edgeq.ops import rewrite
from edgeq.ops import ternary_format as spec


def test_pipeline_ternary_writes_a_custom_op_model_and_measures_it(ternary_pipeline_dir: Path) -> None:
    out = ternary_pipeline_dir
    report = json.loads((out / "report.json").read_text())
    assert report["weights"] == "ternary" and report["recipe"]["weights"] == "ternary"
    model = out / "model.tflite"
    data = model.read_bytes()
    ops = report["model"]["op_counts"]
    # The first conv and the logits layer stay builtin int8 ops; the other conv and dense are ternary.
    assert ops.get("EDGEQ_TERNARY_CONV2D") == 1 and ops.get("EDGEQ_TERNARY_FC") == 1
    assert ops.get("CONV_2D") == 1 and ops.get("FULLY_CONNECTED") == 1
    nodes = rewrite.read_ternary_ops(data)
    assert [n.index for n in nodes] == [c["index"] for c in report["custom_ops"]]
    assert describe(model).full_int8
    # The interpreter cannot run it; the accuracy came from the runner's custom-op path, and the
    # profile (same path, same kernels) agrees exactly.
    acc = report["accuracy"]
    prof = report["profile"]
    assert prof["custom_ops"] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    assert prof["device"]["runtime"] == "ai-edge-litert"
    assert prof["accuracy"]["top1"] == acc["student_int8_qat"]
    assert 0.0 <= acc["student_int8_qat_builtin_ops"] <= 1.0
    # 2-bit weights: the model is well below the same weights as builtin int8 ops.
    sizes = report["size_bytes"]
    assert sizes["student_int8"] == len(data) < 0.5 * sizes["student_int8_builtin_ops"]
    assert (out / "model_int8_builtin.tflite").stat().st_size == sizes["student_int8_builtin_ops"]
    side = json.loads((out / "model.edgeq.json").read_text())
    assert side["recipe"]["weights"] == "ternary" and side["model"]["sha256"] == report["model"]["sha256"]


def test_inspect_shows_custom_ops_with_packed_size_and_options(ternary_pipeline_dir: Path) -> None:
    model = ternary_pipeline_dir / "model.tflite"
    run = edgeq("inspect", model, "--json")
    assert run.code == 0, run.stderr
    info = json.loads(run.stdout)
    assert info["full_int8"] is True and info["violations"] == []
    custom = info["custom_ops"]
    assert [c["op"] for c in custom] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    for c in custom:
        o = c["options"]
        assert o["version"] == spec.FORMAT_VERSION and o["out_depth"] == c["weight_shape"][0]
        assert c["packed_weight_bytes"] == np.prod(c["weight_shape"][:-1]) * spec.row_bytes(o["in_depth"])
        assert c["bits_per_weight"] == round(8 * c["packed_weight_bytes"] / c["weights"], 3)
    conv, fc1 = custom
    assert conv["options"]["kind"] == spec.KIND_CONV2D and conv["options"]["padding"] == spec.PADDING_SAME
    assert conv["bits_per_weight"] == 2.0 and fc1["bits_per_weight"] == 2.0  # depths are multiples of 8
    roles = {t["role"] for t in info["tensors"]}
    assert {"ternary_weight", "ternary_qparams"} <= roles
    text = edgeq("inspect", model)
    assert text.code == 0, text.stderr
    assert "EDGEQ_TERNARY_FC" in text.stdout and "bits/weight" in text.stdout


def test_int8_rule_accepts_custom_op_constants_but_not_floats() -> None:
    def t(role: str, dtype: str) -> TensorInfo:
        return TensorInfo(index=3, name="w", dtype=dtype, shape=(4, 2), role=role)

    assert _int8_violation(t("ternary_weight", "uint8")) == []
    assert _int8_violation(t("ternary_qparams", "int32")) == []
    assert _int8_violation(t("ternary_weight", "float32"))
    assert _int8_violation(t("ternary_qparams", "float32"))
    assert _int8_violation(t("weight", "uint8"))  # uint8 only as a ternary op's packed weights
    assert _int8_violation(t("activation", "float32"))
    assert _int8_violation(t("constant", "float32"))


def test_pipeline_rejects_unknown_weights_before_any_work(tmp_path: Path) -> None:
    run = edgeq("pipeline", "--out", tmp_path / "out", "--weights", "binary")
    assert_clean_error(run, 2, "--weights", "binary")
    assert not (tmp_path / "out").exists()
