"""The device-side runner on custom-op models: bit-exact against the NumPy reference, one clear line
when the kernel library or libLiteRt.so is missing, and deploy shipping the library with the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support_profile import profile
from test_ternary_litert import _convert, _reference_chain

from edgeq import api, remote
from edgeq.devices.transports.local import LocalTransport
from edgeq.errors import DeviceError
from edgeq.ops import rewrite
from edgeq.ops.build import build_library
from edgeq.runner.measure import quantize
from edgeq.runner.modelfile import read_model
from edgeq.runner_zip import build_runner_pyz

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conv (ternary) → flatten → FC (ternary), 8×8×2 in, 10 out."""

    def build(k: Any, x: Any) -> Any:
        conv = k.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
        return k.layers.Dense(10)(k.layers.Flatten()(conv))

    data, _ = rewrite.to_ternary_ops(_convert(build, (8, 8, 2), seed=3))
    path = tmp_path_factory.mktemp("ternary-runner") / "chain.tflite"
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def pyz() -> Path:
    return build_runner_pyz()


def runner(pyz: Path, *args: str | Path, env: dict[str, str] | None = None) -> tuple[int, list[dict], str]:
    proc = subprocess.run(
        [sys.executable, str(pyz), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO,
    )
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_modelfile_reads_custom_ops_and_io_like_the_schema(chain: Path, tiny_model: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    info = read_model(chain.read_bytes())
    assert info["custom_ops"] == [(0, "EDGEQ_TERNARY_CONV2D"), (2, "EDGEQ_TERNARY_FC")]
    plain = read_model(tiny_model.read_bytes())
    assert plain["custom_ops"] == []
    it = Interpreter(model_path=str(tiny_model))
    for mine, theirs in (
        (plain["inputs"][0], it.get_input_details()[0]),
        (plain["outputs"][0], it.get_output_details()[0]),
    ):
        assert mine["dtype"] == theirs["dtype"]
        assert list(mine["shape"]) == list(theirs["shape"])
        assert list(mine["shape_signature"]) == list(theirs["shape_signature"])
        assert mine["quantization"] == pytest.approx(theirs["quantization"])


def test_runner_runs_a_custom_op_model_bit_exact(chain: Path, pyz: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(16, 8, 8, 2)).astype(np.float32)
    y = rng.integers(0, 10, 16)
    td, saved = tmp_path / "td.npz", tmp_path / "out.npy"
    np.savez(td, x=x, y=y)
    code, events, err = runner(
        pyz, "run", "--model", chain, "--custom-ops-lib", build_library(), "--spec", json.dumps({"runs": 30, "warmup": 2}),
        "--test-data", td, "--save-outputs", saved,
    )  # fmt: skip
    assert code == 0, err
    r = events[-1]["result"]
    assert r["custom_ops"] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    assert r["device"]["runtime"] == "ai-edge-litert" and r["latency_us"]["n"] == 30
    scale, zp = read_model(chain.read_bytes())["inputs"][0]["quantization"]
    want = _reference_chain(chain.read_bytes(), quantize(x, scale, zp, np.int8)).reshape(16, 10)
    got = np.load(saved)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)
    assert r["accuracy"]["top1"] == float(np.mean(want.argmax(axis=1) == y))


ONE = ["--spec", '{"runs": 1}']


def _one_error(code: int, events: list[dict]) -> dict:
    assert code == 3, events
    assert [e["event"] for e in events if e["event"] in ("result", "error")] == ["error"]
    err = events[-1]
    assert "\n" not in err["message"] and "Traceback" not in err["message"]
    return err


def test_missing_kernel_library_is_one_line_naming_the_op(chain: Path, pyz: Path, tmp_path: Path) -> None:
    err = _one_error(*runner(pyz, "run", "--model", chain, *ONE)[:2])
    assert err["kind"] == "runtime_missing"
    assert "EDGEQ_TERNARY_CONV2D (op 0)" in err["message"] and "no kernel library" in err["message"]
    assert "libedgeq_ops.so" in err["hint"]
    gone = tmp_path / "libedgeq_ops.so"
    err = _one_error(*runner(pyz, "run", "--model", chain, "--custom-ops-lib", gone, *ONE)[:2])
    assert str(gone) in err["message"]
    # The host turns it into a DeviceError with the same line.
    with pytest.raises(DeviceError, match=r"EDGEQ_TERNARY_CONV2D \(op 0\)"):
        remote.run_runner(
            LocalTransport(), [sys.executable, str(pyz), "run", "--model", str(chain), *ONE], "local"
        )


def test_device_without_libLiteRt_is_one_line_naming_the_op(chain: Path, pyz: Path, tmp_path: Path) -> None:
    # A device whose ai_edge_litert has no libLiteRt.so (as if only an old or a foreign runtime were there).
    fake = tmp_path / "site" / "ai_edge_litert"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(fake.parent)}
    code, events, _ = runner(pyz, "run", "--model", chain, "--custom-ops-lib", build_library(), *ONE, env=env)
    err = _one_error(code, events)
    assert "EDGEQ_TERNARY_CONV2D" in err["message"] and "libLiteRt.so" in err["message"]
    assert "pip install ai-edge-litert" in err["hint"]


def test_explicit_other_runtime_is_refused(chain: Path, pyz: Path) -> None:
    code, events, _ = runner(
        pyz,
        "run",
        "--model",
        chain,
        "--custom-ops-lib",
        build_library(),
        "--spec",
        '{"runtime": "tflite-runtime"}',
    )
    err = _one_error(code, events)
    assert "EDGEQ_TERNARY_CONV2D" in err["message"] and "tflite-runtime" in err["message"]
    assert "pip install ai-edge-litert" in err["hint"]


def test_deploy_ships_the_library_once(chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    first = api.deploy(chain)
    lib = first["lib"]
    assert lib["bytes_sent"] == build_library().stat().st_size > 0
    assert Path(lib["remote_path"]).read_bytes() == build_library().read_bytes()
    assert "/lib/" in lib["remote_path"]
    again = api.deploy(chain)
    assert again["bytes_sent"] == 0 and again["lib"]["remote_path"] == lib["remote_path"]


def test_plain_model_ships_no_library(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    assert "lib" not in api.deploy(tiny_model)


def test_profile_local_runs_custom_ops(chain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    events: list[dict[str, Any]] = []
    r = profile(chain, runs=5, warmup=1, on_event=events.append)
    assert r["custom_ops"] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    assert sorted(e["kind"] for e in events if e["event"] == "deploy") == ["lib", "models", "runner"]
