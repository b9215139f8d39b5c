"""Delegates through the real command line: `inspect --delegate`, `compile`, the placement line on every
run, and a profile's min_delegate_coverage gate (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support_cli import assert_clean_error, edgeq
from support_delegate import models


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("delegate-cli")
    return {
        "student": models.student(root / "student.tflite"),
        "middle": models.leaky("middle")(root / "middle.tflite"),
        "float": models.float_model(root / "float.tflite"),
    }


def test_inspect_edgetpu_cuts_the_graph_at_the_first_unsupported_op(built: dict[str, Path]) -> None:
    run = edgeq("inspect", built["middle"], "--delegate", "edgetpu", "--json")
    assert run.code == 0, run.stderr
    cov = json.loads(run.stdout)["coverage"]
    ops = cov["ops"]
    first_cpu = next(i for i, o in enumerate(ops) if o["placement"] == "cpu")
    assert 0 < first_cpu < len(ops) - 1  # in the middle
    assert ops[first_cpu]["reason"] == "Operation not supported"
    assert all(o["placement"] == "delegate" and o["reason"] == "Mapped to Edge TPU" for o in ops[:first_cpu])
    assert all(o["placement"] == "cpu" for o in ops[first_cpu:])  # and everything after it
    assert cov["summary"] == f"{first_cpu} of {len(ops)} ops on edgetpu, {len(ops) - first_cpu} on the CPU"
    text = edgeq("inspect", built["middle"], "--delegate", "edgetpu")
    assert cov["summary"] in text.stdout and "Operation not supported" in text.stdout


def test_inspect_edgetpu_maps_the_pipelines_student_and_refuses_a_float_model(built: dict[str, Path]) -> None:
    cov = json.loads(edgeq("inspect", built["student"], "--delegate", "edgetpu", "--json").stdout)["coverage"]
    assert cov["on_cpu"] == 0 and cov["on_delegate"] == cov["total"] > 0
    run = edgeq("inspect", built["float"], "--delegate", "edgetpu")
    assert_clean_error(run, 2, "not quantized")


def test_compile_without_the_compiler_says_what_to_install(built: dict[str, Path], tmp_path: Path) -> None:
    run = edgeq(
        "compile",
        built["student"],
        "--delegate",
        "edgetpu",
        "--out",
        tmp_path / "c",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert_clean_error(run, 2, "edgetpu_compiler is not installed")
    assert "edgetpu-compiler" in run.stderr


def test_unknown_delegate_is_one_line(built: dict[str, Path]) -> None:
    assert_clean_error(edgeq("inspect", built["student"], "--delegate", "gpu"), 2, "unknown delegate 'gpu'")


def test_min_delegate_coverage_all_stops_with_the_gate_code_naming_the_ops(
    tmp_path: Path, tiny_model: Path
) -> None:
    import numpy as np

    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    m = k.Sequential(
        [k.layers.Input((8, 8, 1)), k.layers.Conv2D(4, 3, activation="relu"), k.layers.Flatten(),
         k.layers.Dense(3), k.layers.Softmax()]
    )  # fmt: skip
    softmax = tmp_path / "softmax.tflite"
    softmax.write_bytes(
        to_int8_tflite(m, np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32))
    )
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "strict.toml").write_text('extends = "local"\nmin_delegate_coverage = "all"\n')
    env = {"EDGEQ_HOME": str(tmp_path / "h")}
    run = edgeq("profile", softmax, "--device", "strict", "--profiles", d, "--runs", "5", env=env)
    assert_clean_error(run, 4, "ops on xnnpack", "SOFTMAX")
    # every profile prints the placement line, and a model that maps fully passes the same gate
    ok = edgeq("profile", tiny_model, "--device", "strict", "--profiles", d, "--runs", "5", env=env)
    assert ok.code == 0, ok.stderr
    assert "placement: 3 of 3 ops on xnnpack, 0 on the CPU" in ok.stdout


def test_an_openvino_ir_deploys_as_a_pair_and_profiles(tiny_model: Path, tmp_path: Path) -> None:
    """The NCS2 path on this machine's CPU: edgeq compile writes IR, deploy puts .xml and .bin side by
    side, the runner opens the IR with OpenVINO."""
    env = {"EDGEQ_HOME": str(tmp_path / "h")}
    run = edgeq("compile", tiny_model, "--delegate", "openvino", "--delegate-option", "device=MYRIAD",
                "--out", tmp_path / "ir", "--json")  # fmt: skip
    assert run.code == 0, run.stderr
    xml = Path(json.loads(run.stdout)["model"])
    assert xml.suffix == ".xml" and xml.with_suffix(".bin").is_file()
    dep = json.loads(edgeq("deploy", xml, "--json", env=env).stdout)
    assert Path(dep["model"]["remote_path"]).parent == Path(dep["weights"]["remote_path"]).parent
    prof = edgeq(
        "profile", xml, "--delegate", "openvino", "--runtime", "openvino", "--runs", "10", "--json", env=env
    )
    assert prof.code == 0, prof.stderr
    res = json.loads(prof.stdout)
    assert res["execution"]["delegate"] == "openvino" and res["latency_us"]["n"] == 10
    xml.with_suffix(".bin").unlink()
    assert_clean_error(edgeq("deploy", xml, env=env), 2, "without its weights")
