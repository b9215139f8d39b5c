"""The openvino delegate's host side: coverage asked of the real OpenVINO, and IR for the NCS2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_prerequisite, require_module

from edgeq import delegates, tflite
from edgeq.delegates.openvino.compile import ir_2022_3_problems, write_ir
from edgeq.delegates.openvino.coverage import analyse, single_op_model, unsupported_per_op
from edgeq.errors import UserInputError
from edgeq.files import TMP_PREFIX
from edgeq.placement import CPU

openvino = require_module("openvino")
REPO = Path(__file__).resolve().parent.parent


def convert(dest: Path, *layers: object) -> Path:
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.layers.Input((8, 8, 1)), *layers])
    calib = np.random.default_rng(0).uniform(0.0, 1.0, (8, 8, 8, 1)).astype(np.float32)
    dest.write_bytes(to_int8_tflite(model, calib))
    return dest


@pytest.fixture(scope="module")
def lrn_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LOCAL_RESPONSE_NORMALIZATION (op 2) has no translator in OpenVINO's TFLite front end."""
    from edgeq.tfenv import keras, tensorflow

    k, tf = keras(), tensorflow()
    return convert(
        tmp_path_factory.mktemp("lrn") / "lrn.tflite",
        k.layers.Conv2D(4, 3, activation="relu"),
        k.layers.Lambda(lambda t: tf.nn.local_response_normalization(t)),
        k.layers.Flatten(),
        k.layers.Dense(3),
    )


@pytest.fixture(scope="module")
def custom_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its MEAN (op 1) turned into a custom op, as edgeq's own custom ops are."""
    s = tflite.schema()
    m = tflite.read_model(tiny_model).model
    code = s.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = s.BuiltinOperator.CUSTOM
    code.customCode = b"EDGEQ_STANDIN"
    code.version = 1
    m.operatorCodes.append(code)
    op = m.subgraphs[0].operators[1]
    op.opcodeIndex = len(m.operatorCodes) - 1
    op.builtinOptionsType, op.builtinOptions = 0, None
    path = tmp_path_factory.mktemp("custom") / "custom.tflite"
    path.write_bytes(tflite.serialize(m))
    return path


def test_tiny_model_fully_on_cpu_device(tiny_model: Path) -> None:
    cov = delegates.get("openvino").coverage(tiny_model)
    assert cov.source == "offline" and cov.delegate == "openvino"
    assert cov.summary() == "3 of 3 ops on openvino, 0 on the CPU"
    assert [o.op for o in cov.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert all(o.reason == "OpenVINO CPU" for o in cov.ops)
    assert any("query_model: CPU supports all" in n for n in cov.notes)


def test_an_op_the_front_end_cannot_read(lrn_model: Path) -> None:
    cov = analyse(lrn_model)
    fallen = cov.fallen_back()
    assert [(o.index, o.op) for o in fallen] == [(2, "LOCAL_RESPONSE_NORMALIZATION")]
    assert "no translator for LOCAL_RESPONSE_NORMALIZATION" in fallen[0].reason
    assert "does not load" in fallen[0].reason
    assert not cov.meets("all") and cov.on_delegate == cov.total - 1


def test_a_custom_op(custom_model: Path) -> None:
    cov = analyse(custom_model)
    assert [(o.index, o.op, o.placement) for o in cov.fallen_back()] == [(1, "EDGEQ_STANDIN", CPU)]
    assert cov.fallen_back()[0].reason.startswith("custom op EDGEQ_STANDIN")


def test_a_device_not_on_this_host_is_said_not_checked(tiny_model: Path) -> None:
    for device in ("NPU", "MYRIAD"):
        cov = delegates.get("openvino").coverage(tiny_model, delegate_options={"device": device})
        assert cov.on_delegate == 3
        assert all(f"({device} not checked)" in o.reason for o in cov.ops)
        assert any("only the front end was checked here" in n for n in cov.notes)


def test_each_op_queried_alone(tiny_model: Path) -> None:
    """The attribution path (used when query_model leaves nodes unsupported): every op of the
    model cut out alone, read and queried by the real CPU plugin."""
    from edgeq.tfenv import keras

    k = keras()
    wider = convert(
        tiny_model.parent / "wider.tflite",
        k.layers.Conv2D(4, 3, activation="relu", padding="same"),
        k.layers.DepthwiseConv2D(3),
        k.layers.MaxPooling2D(2),
        k.layers.Conv2DTranspose(2, 3),
        k.layers.Flatten(),
        k.layers.Dense(5),
        k.layers.Softmax(),
    )
    count = len(tflite.read_model(wider).subgraph.operators)
    assert unsupported_per_op(wider, "CPU") == {i: [] for i in range(count)}
    one = tflite.parse(single_op_model(tflite.read_model(wider), 1))
    assert len(one.subgraph.operators) == 1 and one.op_name(one.subgraph.operators[0]) == "DEPTHWISE_CONV_2D"


def test_compile_for_cpu_ships_the_model_itself(tiny_model: Path, tmp_path: Path, lrn_model: Path) -> None:
    result = delegates.get("openvino").compile(tiny_model, tmp_path)
    assert result.model == tiny_model and "nothing to compile" in result.log
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserInputError, match=r"no translator for LOCAL_RESPONSE_NORMALIZATION \(op 2\)"):
        delegates.get("openvino").compile(lrn_model, tmp_path)


def test_ncs2_ir_is_written_atomically_and_reads_back(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out dir ü"
    result = delegates.get("openvino").compile(tiny_model, out, delegate_options={"device": "MYRIAD"})
    xml = out / "tiny_int8.xml"
    assert result.model == xml and sorted(p.name for p in out.iterdir()) == ["tiny_int8.bin", "tiny_int8.xml"]
    text = xml.read_text()
    assert ir_2022_3_problems(text) == []
    root = ET.fromstring(text)
    assert root.get("version") == "11"
    node = root.find("rt_info/edgeq")
    assert node is not None
    record = json.loads(str(node.get("value")))
    assert record["ops"] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert record["inputs"][0]["dtype"] == "int8" and record["inputs"][0]["scale"] > 0
    model = openvino.Core().read_model(str(xml))
    assert [int(d.get_length()) for d in model.inputs[0].get_partial_shape()] == [1, 8, 8, 1]
    # Writing again replaces both files and leaves no temporary behind.
    mtime = xml.stat().st_mtime_ns
    write_ir(tiny_model, out)
    assert xml.stat().st_mtime_ns >= mtime
    assert not [p for p in out.iterdir() if p.name.startswith(TMP_PREFIX)]


def test_ncs2_ir_refused_leaves_nothing(lrn_model: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="cannot convert lrn.tflite"):
        write_ir(lrn_model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ir_checker_refuses_what_2022_3_cannot_parse(tmp_path: Path) -> None:
    import openvino.opset1 as o1
    import openvino.opset13 as o13

    p = o1.parameter([-1, 4], openvino.Type.i32)
    openvino.save_model(openvino.Model([o13.bitwise_not(p)], [p], "new"), str(tmp_path / "new.xml"))
    problems = ir_2022_3_problems((tmp_path / "new.xml").read_text())
    assert any("BitwiseNot (opset13)" in p for p in problems)
    assert any("dynamic shape" in p for p in problems)


# A reader built against OpenVINO 2022.3.2's own libopenvino (from its PyPI wheel, whose Python
# binding is for Python <= 3.10 only): the two C++ calls that parse an IR, declared here so no
# 2022.3 headers are needed. The library uses the pre-C++11 string ABI.
READER_CPP = r"""
#include <cstdio>
#include <exception>
#include <memory>
#include <string>
#include <vector>
namespace ov {
class Node;
class Model { public: std::vector<std::shared_ptr<Node>> get_ops() const; };
class Core {
public:
    explicit Core(const std::string& xml_config_file = {});
    std::shared_ptr<Model> read_model(const std::string& model_path, const std::string& bin_path = {}) const;
private:
    std::shared_ptr<void> impl_;
};
}
int main(int argc, char** argv) {
    try {
        ov::Core core;
        std::printf("read %zu ops\n", core.read_model(argv[1])->get_ops().size());
        return 0;
    } catch (const std::exception& e) {
        std::printf("%s\n", e.what());
        return 1;
    }
}
"""


def ov2022_libs() -> Path:
    libs = Path(os.environ.get("EDGEQ_OPENVINO_2022_LIBS", REPO / ".venv/openvino-2022.3/openvino/libs"))
    if not (libs / "libopenvino.so.2232").is_file():
        missing_prerequisite(
            f"OpenVINO 2022.3.2's libraries not at {libs} (scripts/setup.sh --test unpacks its wheel there)"
        )
    if shutil.which("g++") is None:
        missing_prerequisite("g++ is not installed")
    return libs


def test_ir_reads_with_openvino_2022_3(tiny_model: Path, tmp_path: Path) -> None:
    libs = ov2022_libs()
    src = tmp_path / "read_ir.cpp"
    src.write_text(READER_CPP)
    exe = tmp_path / "read_ir"
    subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-D_GLIBCXX_USE_CXX11_ABI=0",
            str(src),
            "-o",
            str(exe),
            f"-L{libs}",
            "-l:libopenvino.so.2232",
            f"-Wl,-rpath,{libs}",
        ],
        check=True,
        capture_output=True,
    )
    xml = write_ir(tiny_model, tmp_path / "ir")
    ok = subprocess.run([str(exe), str(xml)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.startswith("read "), ok.stdout + ok.stderr
    # ... and the same reader refuses an IR with an op newer than opset10, as the checker does.
    import openvino.opset1 as o1
    import openvino.opset13 as o13

    p = o1.parameter([1, 4], openvino.Type.i32)
    openvino.save_model(openvino.Model([o13.bitwise_not(p)], [p], "new"), str(tmp_path / "new.xml"))
    bad = subprocess.run([str(exe), str(tmp_path / "new.xml")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "unsupported opset: opset13" in bad.stdout
