"""The openvino delegate's device side, on OpenVINO's real CPU device: outputs, reports, failures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require_module

from edgeq.placement import Coverage
from edgeq.runner.delegates import openvino as ovr
from edgeq.runner.measure import LatencyRecorder, evaluate
from edgeq.runner.measure_spec import MeasureSpec
from edgeq.runner.protocol import RunnerError

openvino = require_module("openvino")


def spec(**kw: object) -> MeasureSpec:
    return MeasureSpec(delegate="openvino", **kw)  # type: ignore[arg-type]


def litert_builtin(path: Path):  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    d = interp.get_input_details()[0]
    shape = [1 if n < 0 else int(n) for n in d["shape_signature"]]
    interp.resize_tensor_input(d["index"], shape)
    interp.allocate_tensors()
    return interp


def run_litert(interp, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """edgeq's student trained briefly on the digits, as full int8, and its test split (.npz)."""
    from edgeq.data import load_dataset
    from edgeq.export.convert import to_int8_tflite
    from edgeq.models.zoo import build_model
    from edgeq.train.core import FitConfig, train_float

    data = load_dataset(None)
    model = build_model("student", data.input_shape, data.num_classes)
    train_float(model, data, FitConfig(epochs=3))
    out = tmp_path_factory.mktemp("digits")
    (out / "student.tflite").write_bytes(to_int8_tflite(model, data.x_train))
    np.savez(out / "test.npz", x=data.x_test, y=data.y_test)
    return out / "student.tflite", out / "test.npz"


@pytest.fixture(params=["c", "python"])
def binding(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways of invoking: OpenVINO's C library through ctypes, and the Python binding."""
    if request.param == "python":
        monkeypatch.setenv(ovr.BINDING_ENV, "python")
    return str(request.param)


def test_outputs_within_one_lsb_of_litert_builtin_kernels(tiny_model: Path, binding: str) -> None:
    opened = ovr.open_model(str(tiny_model), spec())
    assert ("C API" in opened.details["binding"]) == (binding == "c")
    interp = opened.interp
    ref = litert_builtin(tiny_model)
    rng = np.random.default_rng(1)
    shape = tuple(int(n) for n in interp.get_input_details()[0]["shape"])
    worst = 0
    for _ in range(200):
        x = rng.integers(-128, 128, size=shape, dtype=np.int8)
        interp.set_tensor(0, x)
        interp.invoke()
        got = interp.get_tensor(0).astype(np.int32)
        want = run_litert(ref, x).astype(np.int32)
        assert got.shape == want.shape and got.dtype == np.int32
        worst = max(worst, int(np.abs(got - want).max()))
    assert worst <= 1


def test_top1_on_digits_agrees_with_litert(digits_model: tuple[Path, Path]) -> None:
    model, test = digits_model
    with np.load(test) as npz:
        x, y = npz["x"], npz["y"]
    opened = ovr.open_model(str(model), spec())
    ov_acc, ov_out = evaluate(opened.interp, x, y)
    ref = litert_builtin(model)
    d = ref.get_input_details()[0]
    assert opened.interp.get_input_details()[0]["quantization"] == pytest.approx(d["quantization"])
    lite_acc, lite_out = evaluate(ref, x, y)
    agreement = float((ov_out.argmax(1) == lite_out.argmax(1)).mean())
    assert agreement >= 0.99
    assert abs(ov_acc["top1"] - lite_acc["top1"]) <= 0.01
    assert ov_acc["top1"] > 0.8  # a trained model, so agreement is about real decisions


def test_reports_device_version_threads_and_placement(tiny_model: Path) -> None:
    opened = ovr.open_model(str(tiny_model), spec(threads=2))
    assert opened.runtime == "openvino"
    assert opened.runtime_version == str(openvino.get_version()).split("-")[0]
    assert opened.delegate == "openvino"
    assert opened.details["execution_devices"] == ["CPU"]
    assert opened.details["config"]["INFERENCE_NUM_THREADS"] == "2"
    assert opened.threads == 2
    cov = Coverage.from_dict(opened.placement or {})
    assert cov.source == "device"
    assert [o.op for o in cov.ops] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert cov.summary() == "3 of 3 ops on openvino, 0 on the CPU"
    assert all(o.reason == "OpenVINO CPU" for o in cov.ops)
    # The interpreter surface the runner relies on: details with quantization, no resizing.
    d = opened.interp.get_input_details()[0]
    assert d["dtype"] == np.int8 and list(d["shape"]) == [1, 8, 8, 1] and d["quantization"][0] > 0
    with pytest.raises(ValueError, match="fixed input shapes"):
        opened.interp.resize_tensor_input(0, [2, 8, 8, 1])
    with pytest.raises(ValueError, match="takes shape"):
        opened.interp.set_tensor(0, np.zeros((2, 8, 8, 1), np.int8))


def test_latency_through_the_runners_recorder(tiny_model: Path) -> None:
    interp = ovr.open_model(str(tiny_model), spec()).interp
    rec = LatencyRecorder(runs=50, return_samples=50)
    rec.measure(interp.invoke, None)
    stats = rec.stats()
    assert stats["n"] == 50 and 0 < stats["min"] <= stats["p50"] <= stats["max"]


def one_line_error(exc: pytest.ExceptionInfo[RunnerError]) -> RunnerError:
    err = exc.value
    assert "\n" not in err.message and "\n" not in err.hint
    assert "Exception from" not in err.message
    return err


def test_unavailable_device_names_the_available_ones(tiny_model: Path) -> None:
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(tiny_model), spec(delegate_options={"device": "NPU"}))
    err = one_line_error(exc)
    assert err.kind == "runtime_failure"
    assert "OpenVINO device NPU is not available here" in err.message and "sees: CPU" in err.message
    assert "intel_vpu" in err.hint
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(tiny_model), spec(delegate_options={"device": "MYRIAD"}))
    assert "no MYRIAD plugin" in one_line_error(exc).hint


def test_auto_without_an_accelerator_is_reported_as_cpu(tiny_model: Path) -> None:
    opened = ovr.open_model(str(tiny_model), spec(delegate_options={"device": "AUTO"}))
    cov = Coverage.from_dict(opened.placement or {})
    assert opened.details["execution_devices"] == ["CPU"]
    assert cov.on_cpu == cov.total == 3  # not counted as accelerated: AUTO fell back to the CPU
    assert not cov.meets("all")


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"device": "HETERO:NPU,CPU"}, "splits the model"),
        ({"device": "CPU", "precision": "f16"}, "unknown openvino delegate option: precision"),
    ],
)
def test_bad_options_are_one_line(tiny_model: Path, options: dict[str, str], needle: str) -> None:
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(tiny_model), spec(delegate_options=options))
    err = one_line_error(exc)
    assert err.kind == "bad_input" and needle in err.message


def test_a_model_the_front_end_refuses(tmp_path: Path) -> None:
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras, tensorflow

    k, tf = keras(), tensorflow()
    model = k.Sequential(
        [
            k.layers.Input((8, 8, 1)),
            k.layers.Conv2D(4, 3, activation="relu"),
            k.layers.Lambda(lambda t: tf.nn.local_response_normalization(t)),
            k.layers.Flatten(),
            k.layers.Dense(3),
        ]
    )
    path = tmp_path / "lrn.tflite"
    path.write_bytes(
        to_int8_tflite(model, np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype("float32"))
    )
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(path), spec())
    err = one_line_error(exc)
    assert err.kind == "runtime_failure"
    assert "no translator for LOCAL_RESPONSE_NORMALIZATION" in err.message
    assert "--delegate openvino" in err.hint


def test_openvino_missing_is_runtime_missing(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(tiny_model), spec())
    err = one_line_error(exc)
    assert err.kind == "runtime_missing" and err.exit_code == 3
    assert "OpenVINO is not installed on this device" in err.message
    assert f"pip install openvino=={ovr.PIN}" in err.hint


def test_files_it_cannot_read(tmp_path: Path, tiny_model: Path) -> None:
    cases = {
        "missing.tflite": None,
        "junk.tflite": b"not a model at all",
        "model.xml": b"<net/>",  # no model.bin beside it
    }
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
        with pytest.raises(RunnerError) as exc:
            ovr.open_model(str(tmp_path / name), spec())
        assert one_line_error(exc).kind == "bad_input", name
    with pytest.raises(RunnerError, match="openvino"):  # refused by the spec, or by open_model
        ovr.open_model(str(tiny_model), spec(runtime="ai-edge-litert"))


def test_ir_for_the_ncs2_runs_like_the_tflite(tiny_model: Path, tmp_path: Path) -> None:
    """The IR edgeq compile writes for MYRIAD, run here on the CPU: same outputs, same details."""
    from edgeq.delegates.openvino.compile import write_ir

    xml = write_ir(tiny_model, tmp_path)
    ir = ovr.open_model(str(xml), spec())
    lite = ovr.open_model(str(tiny_model), spec())
    assert ir.details["model_format"] == "ir"
    assert [o["op"] for o in (ir.placement or {})["ops"]] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    for a, b in zip(ir.interp.get_input_details(), lite.interp.get_input_details(), strict=True):
        assert a["quantization"] == pytest.approx(b["quantization"]) and a["dtype"] == b["dtype"]
        assert list(a["shape"]) == list(b["shape"])
    x = np.random.default_rng(2).integers(-128, 128, (1, 8, 8, 1), dtype=np.int8)
    for o in (ir, lite):
        o.interp.set_tensor(0, x)
        o.interp.invoke()
    np.testing.assert_array_equal(ir.interp.get_tensor(0), lite.interp.get_tensor(0))
    xml.with_suffix(".bin").unlink()
    with pytest.raises(RunnerError) as exc:
        ovr.open_model(str(xml), spec())
    assert "tiny_int8.bin is missing" in one_line_error(exc).message


def test_op_names_read_without_a_schema(tiny_model: Path) -> None:
    from edgeq import tflite

    codes = tflite._enum_names("BuiltinOperator")
    assert [codes[i] for i in range(len(codes))] == ovr._BUILTIN_NAMES
    parsed = tflite.read_model(tiny_model)
    assert ovr.tflite_ops(tiny_model.read_bytes()) == [parsed.op_name(op) for op in parsed.subgraph.operators]


def test_ctrl_c_after_bindings_closed_in_any_order_is_a_keyboardinterrupt(tiny_model: Path) -> None:
    """OpenVINO's CPU plugin leaves the thread on a signal stack of its own that ov_core_free frees; the
    runner keeps one core per process, so a later Ctrl-C is a KeyboardInterrupt, not a SIGSEGV. Two C-API
    bindings open at once and closed first-opened-first (not nested), in a child process."""
    import subprocess

    script = "\n".join(
        [
            "import os, signal, sys, time",
            "from edgeq.runner.delegates import openvino as ovr",
            "from edgeq.runner.measure_spec import MeasureSpec",
            "spec = MeasureSpec(delegate='openvino')",
            "a = ovr.open_model(sys.argv[1], spec)",
            "b = ovr.open_model(sys.argv[1], spec)",
            "assert 'C API' in a.details['binding'], a.details['binding']",
            "a.interp.close(); b.interp.close()",
            "try:",
            "    os.kill(os.getpid(), signal.SIGINT)",
            "    time.sleep(5)",
            "except KeyboardInterrupt:",
            "    print('KeyboardInterrupt')",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_model)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert proc.stdout.strip() == "KeyboardInterrupt"
