"""The runner's Edge TPU path with the real runtime and its real load_delegate.

No Edge TPU exists here, so libedgetpu.so.1 is replaced by a stand-in external-delegate library
built from tests/support_delegate/stand_in_delegate.c with the system C compiler: the runtime's
external-delegate entry points, libedgetpu's "device" option and its NULL-without-a-message when no
accelerator matches, options recorded to a file, no nodes taken.
"""

from __future__ import annotations

import ctypes.util
import gc
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import missing_prerequisite

from edgeq.runner.delegates import edgetpu, litert
from edgeq.runner.measure_spec import MeasureSpec
from edgeq.runner.protocol import Emitter, RunnerError

SOURCE = Path(__file__).parent / "support_delegate" / "stand_in_delegate.c"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        missing_prerequisite("no C compiler (gcc) to build the stand-in delegate library")
    lib = tmp_path_factory.mktemp("stand-in") / "libstand_in_edgetpu.so"
    subprocess.run(
        [str(cc), "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib), str(SOURCE)],
        check=True,
        capture_output=True,
    )
    return lib


def _spec(**options: Any) -> MeasureSpec:
    return MeasureSpec(delegate="edgetpu", delegate_options=options)


def _events(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _run(interp: Any) -> np.ndarray:
    d = interp.get_input_details()[0]
    x = np.random.default_rng(0).integers(-128, 128, size=tuple(d["shape"])).astype(d["dtype"])
    interp.set_tensor(d["index"], x)
    interp.invoke()
    return np.array(interp.get_tensor(interp.get_output_details()[0]["index"]))


def test_stand_in_loads_through_the_libedgetpu_path_options_reach_it(
    stand_in: Path, tiny_model: Path, tmp_path: Path
) -> None:
    record = tmp_path / "options.txt"
    spec = _spec(
        library=str(stand_in),
        device="usb:0",
        stand_in_record=str(record),
        Performance="Max",
        **{"Usb.AlwaysDfu": False, "Usb.MaxBulkInQueueLength": 32},
    )
    stream = io.StringIO()
    opened = edgetpu.open_model(str(tiny_model), spec, Emitter(stream))
    lines = record.read_text().splitlines()
    assert sorted(line for line in lines if line.startswith("option ")) == sorted(
        [
            "option device=usb:0",
            f"option stand_in_record={record}",
            "option Performance=Max",
            "option Usb.AlwaysDfu=False",
            "option Usb.MaxBulkInQueueLength=32",
        ]
    )  # passed on as strings; "library" is edgeq's, not the library's
    assert "created" in lines and "prepare" in lines  # the runtime called the delegate's Prepare
    assert opened.delegate == "edgetpu" and opened.runtime in (
        "ai-edge-litert",
        "tflite-runtime",
        "tensorflow",
    )
    assert opened.details["library"] == str(stand_in)

    # The model still runs, with the same answer as the plain CPU path.
    cpu = litert.open_model(str(tiny_model), MeasureSpec(delegate="none"))
    assert np.array_equal(_run(opened.interp), _run(cpu.interp))

    placement = opened.placement
    assert placement is not None
    assert placement["source"] == "device" and placement["delegate"] == "edgetpu"
    assert placement["total"] == 3 and placement["on_delegate"] == 0 and placement["on_cpu"] == 3
    assert [o["op"] for o in placement["ops"]] == ["CONV_2D", "MEAN", "FULLY_CONNECTED"]
    assert all(o["placement"] == "cpu" and o["reason"].startswith("CPU (") for o in placement["ops"])
    assert placement["summary"] == "0 of 3 ops on edgetpu, 3 on the CPU"

    (warning,) = [e for e in _events(stream) if e["event"] == "warning"]
    assert warning["code"] == "edgetpu.not_compiled"
    assert warning["message"] == (
        f"{tiny_model.name} was not compiled for the Edge TPU (no edgetpu-custom-op): every op runs on the CPU"
    )
    assert "edgeq compile" in warning["hint"]
    del opened, cpu
    gc.collect()
    assert record.read_text().splitlines()[-1] == "destroyed"


def _error(spec: MeasureSpec, model: Path) -> RunnerError:
    with pytest.raises(RunnerError) as err:
        edgetpu.open_model(str(model), spec, None)
    assert "\n" not in err.value.message
    return err.value


def test_missing_library_is_one_line(tiny_model: Path) -> None:
    e = _error(_spec(library="/nonexistent/dir/libedgetpu.so.1"), tiny_model)
    assert e.kind == "runtime_missing" and e.exit_code == 3
    assert e.message == (
        "cannot load the Edge TPU runtime library /nonexistent/dir/libedgetpu.so.1: "
        "cannot open shared object file: No such file or directory"
    )
    assert "libedgetpu1-std" in e.hint and "apt" in e.hint


def test_the_real_library_name_when_libedgetpu_is_not_installed(tiny_model: Path) -> None:
    if ctypes.util.find_library("edgetpu"):
        pytest.skip("libedgetpu is installed on this machine")
    e = _error(_spec(), tiny_model)
    assert e.kind == "runtime_missing"
    assert e.message == (
        "cannot load the Edge TPU runtime library libedgetpu.so.1: cannot open shared object file: "
        "No such file or directory"
    )


@pytest.mark.parametrize(
    ("options", "says", "hint"),
    [
        ({"device": "pci"}, "found no accelerator matching device 'pci'", "/dev/apex_0"),
        ({"device": "usb:1"}, "found no accelerator matching device 'usb:1'", "USB 3 port"),
        ({"stand_in_devices": "none"}, "found no accelerator", "lsusb"),
    ],
)
def test_no_accelerator_is_one_line(
    stand_in: Path, tiny_model: Path, options: dict[str, str], says: str, hint: str
) -> None:
    e = _error(_spec(library=str(stand_in), **options), tiny_model)
    assert e.kind == "runtime_failure"
    assert e.message == f"no Edge TPU found: {stand_in} loaded but {says}"
    assert hint in e.hint


def test_an_option_the_library_refuses_is_one_line(stand_in: Path, tiny_model: Path) -> None:
    e = _error(_spec(library=str(stand_in), device="usb", stand_in_refuse="yes"), tiny_model)
    assert e.kind == "runtime_failure"
    assert e.message == (
        f"{stand_in} could not create the delegate (device=usb, stand_in_refuse=yes): "
        "stand-in delegate: option stand_in_refuse=yes is not accepted"
    )
    assert "delegate_options" in e.hint


def test_a_device_value_libedgetpu_cannot_parse(stand_in: Path, tiny_model: Path) -> None:
    e = _error(_spec(library=str(stand_in), device="usb0"), tiny_model)
    assert e.kind == "bad_input" and e.message == "Edge TPU device 'usb0' is not one libedgetpu understands"
    assert "usb:0" in e.hint


def test_a_library_that_is_not_a_delegate(tiny_model: Path) -> None:
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no libc to point at")
    e = _error(_spec(library=libc), tiny_model)
    assert e.kind == "runtime_failure" and "is not a TFLite external delegate" in e.message


def test_a_compiled_model_needs_libedgetpu(stand_in: Path, tmp_path: Path) -> None:
    """A model as edgetpu_compiler writes it: the stand-in takes no nodes, so its
    edgetpu-custom-op cannot run, and the runner says which library did not take it."""
    from support_delegate import edgetpu_compiler as fake
    from support_models import build_tiny_int8

    src = build_tiny_int8(tmp_path / "tiny.tflite")
    compiled = tmp_path / "tiny_edgetpu.tflite"
    compiled.write_bytes(fake._compiled_model(fake._read(src), 2))
    e = _error(_spec(library=str(stand_in)), compiled)
    assert e.kind == "runtime_failure"
    assert e.message.startswith(f"{stand_in} did not take the model's edgetpu-custom-op nodes")
    assert "libedgetpu1-std" in e.hint


def _runner(model: Path, spec: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeq.runner", "run", "--model", str(model), "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_through_the_runner_missing_library_no_traceback(tiny_model: Path) -> None:
    proc = _runner(tiny_model, {"delegate": "edgetpu", "runs": 2, "warmup": 0})
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "runtime_missing"
    assert events[-1]["message"].startswith("cannot load the Edge TPU runtime library libedgetpu.so.1")


def test_through_the_runner_with_the_stand_in(stand_in: Path, tiny_model: Path) -> None:
    spec = {"delegate": "edgetpu", "runs": 3, "warmup": 1, "delegate_options": {"library": str(stand_in)}}
    proc = _runner(tiny_model, spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert any(e["event"] == "warning" and e["code"] == "edgetpu.not_compiled" for e in events)
    result = events[-1]["result"]
    assert result["latency_us"]["n"] >= 3
    placement = result["execution"]["placement"]
    assert placement["source"] == "device" and placement["on_delegate"] == 0 and placement["total"] == 3
