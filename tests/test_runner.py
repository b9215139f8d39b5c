"""The device-side runner, run for real: a subprocess, a real int8 model, the real interpreter."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeq.runner.measure import quantize
from edgeq.runner_zip import build_runner_pyz, runner_pyz_bytes

REPO = Path(__file__).resolve().parent.parent
RUNNER_DIR = REPO / "edgeq" / "runner"


@pytest.fixture(scope="session")
def test_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.uniform(0.0, 1.0, (24, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 24)


def run_runner(*args: str, pyz: Path | None = None, timeout: float = 120) -> tuple[int, list[dict], str]:
    """Run the runner as the device would; return exit code, parsed stdout events, stderr."""
    entry = [str(pyz)] if pyz is not None else ["-m", "edgeq.runner"]
    proc = subprocess.run(
        [sys.executable, *entry, *args], capture_output=True, text=True, cwd=REPO, timeout=timeout
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]  # every stdout line is JSON
    return proc.returncode, events, proc.stderr


def spec(**settings: object) -> list[str]:
    """The runner's ``--spec`` argument for these MeasureSpec settings."""
    return ["--spec", json.dumps(settings)]


def the_result(events: list[dict]) -> dict:
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 1, events
    assert events[-1]["event"] == "result"
    return results[0]["result"]


def the_error(events: list[dict]) -> dict:
    assert [e["event"] for e in events if e["event"] in ("result", "error")] == ["error"], events
    err = events[-1]
    assert set(err) == {"event", "kind", "message", "hint"}
    assert "\n" not in err["message"] and "Traceback" not in err["message"]
    return err


def in_process_outputs(model: Path, x: np.ndarray) -> np.ndarray:
    """The reference: the same model in this process's interpreter, one sample at a time."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    scale, zero_point = inp["quantization"]
    q = np.clip(np.round(x / np.float32(scale)) + zero_point, -128, 127).astype(np.int8)
    rows = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], q[i : i + 1])
        interp.invoke()
        rows.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(RUNNER_DIR.glob("*.py")), ids=lambda p: p.name)
def test_runner_sources_parse_as_python_3_8(path: Path) -> None:
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


def _imports(nodes: Any) -> list[str]:
    names = []
    for node in nodes:
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append((node.module or "").split(".")[0])
    return names


def test_runner_imports_only_stdlib_numpy_and_runtimes_lazily() -> None:
    """Module level: the standard library and NumPy. A runtime only inside a function, when chosen."""
    runtimes = {"ai_edge_litert", "tflite_runtime", "tensorflow"}
    for path in RUNNER_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for name in _imports(tree.body):
            assert name in sys.stdlib_module_names or name == "numpy", (path.name, name)
        for name in _imports(ast.walk(tree)):
            assert name in sys.stdlib_module_names or name == "numpy" or name in runtimes, (path.name, name)


def test_run_reports_a_complete_result(tiny_model: Path) -> None:
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runs=50, warmup=3))
    assert code == 0
    r = the_result(events)
    assert r["schema"] == "edgeq.result/1"
    lat = r["latency_us"]
    assert lat["n"] == 50
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    assert r["init_ms"] > 0
    assert r["peak_rss_kb"] > 10_000  # a Python process with NumPy and a runtime is well above 10 MB
    dev = r["device"]
    assert dev["runtime"] == "ai-edge-litert" and dev["runtime_version"]
    assert dev["arch"] and dev["python"] and dev["name"]
    assert r["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert r["model"]["size_bytes"] == tiny_model.stat().st_size
    assert r["config"] == {
        "runs": 50,
        "warmup": 3,
        "threads": 1,
        "min_seconds": None,
        "runtime": "ai-edge-litert",
        "delegate": "xnnpack",
        "input": "random, seed 0",
    }
    assert r["spec"]["runs"] == 50 and r["spec"]["runtime"] == "auto"  # what was asked, whole
    assert len(r["latency_us"]["samples"]) == 50
    mem = r["memory"]
    assert mem["peak_rss_kb"] == r["peak_rss_kb"] and 0 < mem["model_peak_rss_kb"] < mem["peak_rss_kb"]
    assert "accuracy" not in r
    assert r["execution"]["delegate_nodes"] >= 1  # ai-edge-litert hands int8 graphs to XNNPACK
    assert r["timestamp"].endswith("Z")
    phases = [(e["phase"], e["done"], e["total"]) for e in events if e["event"] == "progress"]
    assert ("warmup", 3, 3) in phases and ("measure", 50, 50) in phases


def test_progress_is_throttled(tiny_model: Path) -> None:
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runs=3000, warmup=0))
    assert code == 0
    progress = [e for e in events if e["event"] == "progress"]
    assert len(progress) < 20  # not one per invoke
    assert progress[-1] == {"event": "progress", "phase": "measure", "done": 3000, "total": 3000}


def test_min_seconds_keeps_measuring_past_runs(tiny_model: Path) -> None:
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runs=5, min_seconds=0.3, warmup=0))
    assert code == 0
    lat = the_result(events)["latency_us"]
    assert lat["wall_s"] >= 0.3
    assert lat["n"] > 5  # a tiny model invokes in microseconds: far more than 5 in 0.3 s


def test_runs_bound_when_it_is_the_stricter(tiny_model: Path) -> None:
    code, events, _ = run_runner(
        "run", "--model", str(tiny_model), *spec(runs=40, min_seconds=0.000001, warmup=0)
    )
    assert code == 0
    assert the_result(events)["latency_us"]["n"] == 40


def test_accuracy_and_outputs_match_the_interpreter_in_process(
    tiny_model: Path, test_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = test_data
    npz = tmp_path / "test.npz"
    np.savez(npz, x=x, y=y)
    out = tmp_path / "sub dir" / "outputs.npy"
    code, events, _ = run_runner(
        "run", "--model", str(tiny_model), *spec(runs=5), "--test-data", str(npz), "--save-outputs", str(out)
    )
    assert code == 0
    acc = the_result(events)["accuracy"]
    expected = in_process_outputs(tiny_model, x)
    saved = np.load(out)
    assert saved.dtype == np.int8 and saved.shape == expected.shape
    np.testing.assert_array_equal(saved, expected)  # bit-exact
    assert acc["n"] == len(x)
    assert acc["top1"] == pytest.approx(float((expected.argmax(axis=1) == y).mean()))
    assert not [p for p in out.parent.iterdir() if p.name != "outputs.npy"]  # no temp file left


def test_compiled_model_path_gives_the_same_outputs(
    tiny_model: Path, test_data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = test_data
    npz = tmp_path / "test.npz"
    np.savez(npz, x=x, y=y)
    outs = {}
    for runtime in ("ai-edge-litert", "ai-edge-litert-compiled"):
        outs[runtime] = tmp_path / f"{runtime}.npy"
        code, events, _ = run_runner(
            "run",
            "--model",
            str(tiny_model),
            *spec(runs=20, runtime=runtime),
            "--test-data",
            str(npz),
            "--save-outputs",
            str(outs[runtime]),
        )
        assert code == 0
        r = the_result(events)
        assert r["device"]["runtime"] == runtime and r["latency_us"]["n"] == 20
    # Both run the int8 graph in XNNPACK: bit-identical.
    np.testing.assert_array_equal(np.load(outs["ai-edge-litert"]), np.load(outs["ai-edge-litert-compiled"]))


def test_quantize_rounds_half_away_from_zero_and_clips() -> None:
    x = np.array([0.5, 1.5, -0.5, -1.5, 2.49, 1000.0, -1000.0], dtype=np.float32)
    assert quantize(x, 1.0, 0, np.int8).tolist() == [1, 2, -1, -2, 2, 127, -128]
    assert quantize(np.array([0.0, 0.25], np.float32), 0.5, -128, np.int8).tolist() == [-128, -127]
    assert quantize(np.array([1.0], np.float32), 1 / 255, 0, np.uint8).tolist() == [255]


def test_not_a_tflite_file_is_bad_input(tmp_path: Path) -> None:
    text = tmp_path / "notes.tflite"
    text.write_text("just some text, not a flatbuffer\n")
    code, events, _ = run_runner("run", "--model", str(text))
    assert code == 2
    err = the_error(events)
    assert err["kind"] == "bad_input" and "not a TFLite model" in err["message"]


def test_truncated_model_is_bad_input_in_one_line(tiny_model: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_model.read_bytes()[:600])  # keeps the TFL3 identifier, loses the rest
    code, events, stderr = run_runner("run", "--model", str(cut))
    assert code == 2
    err = the_error(events)
    assert err["kind"] == "bad_input" and "cut.tflite" in err["message"]


def test_missing_model_and_bad_options_are_bad_input(tmp_path: Path, tiny_model: Path) -> None:
    code, events, _ = run_runner("run", "--model", str(tmp_path / "absent.tflite"))
    assert code == 2 and "not found" in the_error(events)["message"]
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runs=0))
    assert code == 2 and the_error(events)["kind"] == "bad_input"
    code, events, _ = run_runner("run", "--model", str(tiny_model), "--save-outputs", "o.npy")
    assert code == 2 and "--test-data" in the_error(events)["message"]
    code, events, _ = run_runner("frobnicate")
    assert code == 2 and the_error(events)["kind"] == "bad_input"


def test_bad_test_data_is_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    npz = tmp_path / "wrong.npz"
    np.savez(npz, x=np.zeros((4, 5, 5, 1), np.float32), y=np.zeros(4, np.int64))
    code, events, _ = run_runner("run", "--model", str(tiny_model), "--test-data", str(npz))
    assert code == 2 and "shape" in the_error(events)["message"]
    assert not [e for e in events if e["event"] == "progress"]  # refused before measuring
    np.savez(npz, features=np.zeros((4, 8, 8, 1), np.float32))
    code, events, _ = run_runner("run", "--model", str(tiny_model), "--test-data", str(npz))
    assert code == 2 and "'x' and 'y'" in the_error(events)["message"]


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None, reason="tflite-runtime installed")
def test_missing_runtime_is_a_device_error_naming_what_to_install(tiny_model: Path) -> None:
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runtime="tflite-runtime"))
    assert code == 3
    err = the_error(events)
    assert err["kind"] == "runtime_missing" and "tflite-runtime" in err["message"]
    assert "pip install tflite-runtime" in err["hint"]


def test_the_zipapp_runs_the_same_runner(tiny_model: Path, tmp_path: Path) -> None:
    pyz = build_runner_pyz(tmp_path / "cache")
    assert pyz.name == "runner.pyz"
    code, events, _ = run_runner("run", "--model", str(tiny_model), *spec(runs=10), pyz=pyz)
    assert code == 0 and the_result(events)["latency_us"]["n"] == 10
    code, events, _ = run_runner("run", "--model", str(tmp_path / "nope.tflite"), pyz=pyz)
    assert code == 2 and the_error(events)["kind"] == "bad_input"


def test_zipapp_is_deterministic(tmp_path: Path) -> None:
    a = build_runner_pyz(tmp_path / "a")
    b = build_runner_pyz(tmp_path / "b")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    assert a.read_bytes() == runner_pyz_bytes()
    assert a.parent.name == hashlib.sha256(a.read_bytes()).hexdigest()[:16]
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert (
            "__main__.py" in names
            and "edgeq_runner/main.py" in names
            and "edgeq_runner/delegates/litert.py" in names
        )
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_probe_describes_the_device(tmp_path: Path) -> None:
    code, events, _ = run_runner("probe", pyz=build_runner_pyz(tmp_path))
    assert code == 0
    p = the_result(events)
    assert p["schema"] == "edgeq.probe/1"
    assert p["arch"] and p["os"] == "Linux" and p["kernel"] and p["python"] and p["numpy"]
    assert p["runtimes"]["ai-edge-litert"]["ok"] is True
    assert p["runtimes"]["ai-edge-litert"]["version"] == "2.3.0"
    assert p["default_runtime"] == "ai-edge-litert"
    assert set(p["runtimes"]) == {"ai-edge-litert", "tflite-runtime", "tensorflow"}
