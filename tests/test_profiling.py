"""Host-side profiling and deploy on the local device: real runner.pyz, real subprocess, real model."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import missing_prerequisite
from support_profile import profile

from edgeq.devices.deploy import deploy_file, remote_path_for
from edgeq.devices.transports.local import LocalTransport
from edgeq.errors import DeviceError, UserInputError
from edgeq.home import edgeq_home
from edgeq.remote import local_workdir, write_test_data


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "edgeq-home"
    monkeypatch.setenv("EDGEQ_HOME", str(path))
    return path


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_profile_local_returns_the_runner_result(tiny_model: Path, home: Path) -> None:
    events: list[dict] = []
    r = profile(tiny_model, runs=30, warmup=2, on_event=events.append)
    assert r["schema"] == "edgeq.result/1"
    assert r["latency_us"]["n"] == 30 and r["latency_us"]["p50"] > 0
    assert r["device"]["name"] == "local" and r["device"]["runtime"] == "ai-edge-litert"
    assert r["model"]["sha256"] == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert r["config"]["runs"] == 30 and r["config"]["warmup"] == 2
    assert len(r["runner"]["sha256"]) == 64
    kinds = [e["event"] for e in events]
    assert kinds.count("deploy") == 2 and "progress" in kinds and "runtime" in kinds
    assert not [e for e in events if e["event"] in ("result", "error")]
    assert edgeq_home() == home.resolve() and local_workdir() == home.resolve() / "devices" / "local"
    model_copy = local_workdir() / "models" / r["model"]["sha256"] / tiny_model.name
    assert model_copy.read_bytes() == tiny_model.read_bytes()
    assert not [p for p in all_files(home) if p.name.endswith(".part")]


def test_profile_min_seconds(tiny_model: Path, home: Path) -> None:
    r = profile(tiny_model, runs=3, warmup=0, min_seconds=0.25)
    assert r["latency_us"]["wall_s"] >= 0.25 and r["latency_us"]["n"] > 3
    assert r["config"]["min_seconds"] == 0.25


def test_profile_accuracy_and_saved_outputs_match_in_process(
    tiny_model: Path, home: Path, tmp_path: Path
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(3)
    x = rng.uniform(-1.0, 1.0, (16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 4, 16)
    interp = Interpreter(model_path=str(tiny_model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    scale, zp = inp["quantization"]
    q = np.clip(np.round(x / np.float32(scale)) + zp, -128, 127).astype(np.int8)
    expected = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], q[i : i + 1])
        interp.invoke()
        expected.append(interp.get_tensor(out["index"])[0].copy())
    want = np.stack(expected)

    saved = tmp_path / "outputs" / "local.npy"
    r = profile(tiny_model, runs=5, warmup=1, test_data=(x, y), save_outputs=saved)
    assert r["accuracy"]["n"] == 16
    assert r["accuracy"]["top1"] == pytest.approx(float((want.argmax(axis=1) == y).mean()))
    np.testing.assert_array_equal(np.load(saved), want)
    assert not all_files(local_workdir() / "outputs")  # the device-side copy is cleaned up


@pytest.mark.parametrize("kind", ["missing", "random_bytes", "text", "directory"])
def test_bad_model_is_one_line_user_error_and_nothing_is_written(
    kind: str, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "model.tflite"
    if kind == "random_bytes":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path = tmp_path / "model.txt"
        path.write_text("this is a text file\nwith two lines\n")
    elif kind == "directory":
        path.mkdir()
    with pytest.raises(UserInputError) as info:
        profile(path)
    assert "\n" not in str(info.value) and info.value.hint and "\n" not in info.value.hint
    assert info.value.exit_code == 2
    assert all_files(home) == []


def test_corrupt_model_with_valid_header_fails_on_device_as_user_error(
    tiny_model: Path, home: Path, tmp_path: Path
) -> None:
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(tiny_model.read_bytes()[:500])
    with pytest.raises(UserInputError) as info:
        profile(cut, runs=5)
    assert "cut.tflite" in str(info.value) and "\n" not in str(info.value)
    leftovers = [p for p in all_files(home) if p.name.endswith(".part") or p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.skipif(importlib.util.find_spec("tflite_runtime") is not None, reason="tflite-runtime installed")
def test_missing_runtime_is_a_device_error(tiny_model: Path, home: Path) -> None:
    with pytest.raises(DeviceError) as info:
        profile(tiny_model, runtime="tflite-runtime")
    assert info.value.exit_code == 3
    assert "tflite-runtime" in str(info.value) and "pip install" in info.value.hint


def test_options_and_devices_are_checked_before_anything_runs(tiny_model: Path, home: Path) -> None:
    with pytest.raises(UserInputError, match="unknown device"):
        profile(tiny_model, device="pi4")
    with pytest.raises(UserInputError, match="runs"):
        profile(tiny_model, runs=0)
    with pytest.raises(UserInputError, match="runtime"):
        profile(tiny_model, runtime="onnx")
    with pytest.raises(UserInputError, match="test data"):
        profile(tiny_model, save_outputs=home / "o.npy")
    with pytest.raises(UserInputError, match="shapes"):
        profile(tiny_model, test_data=(np.zeros((3, 8, 8, 1), np.float32), np.zeros(4, np.int64)))
    assert all_files(home) == []


def test_timeout_stops_the_runner(tiny_model: Path, home: Path) -> None:
    with pytest.raises(DeviceError, match="timed out"):
        profile(tiny_model, runs=1, warmup=0, min_seconds=60, timeout=3)


def test_deploy_twice_sends_nothing_the_second_time(tiny_model: Path, tmp_path: Path) -> None:
    workdir = str(tmp_path / "device")
    with LocalTransport() as t:
        first = deploy_file(t, sys.executable, workdir, tiny_model, "models")
        second = deploy_file(t, sys.executable, workdir, tiny_model, "models")
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert first.bytes_sent == tiny_model.stat().st_size and second.bytes_sent == 0
    assert first.sha256 == second.sha256 == sha
    assert first.remote_path == f"{workdir}/models/{sha}/{tiny_model.name}"
    assert second.remote_path == first.remote_path


def test_deploy_replaces_a_damaged_copy(tiny_model: Path, tmp_path: Path) -> None:
    workdir = str(tmp_path / "device")
    with LocalTransport() as t:
        first = deploy_file(t, sys.executable, workdir, tiny_model, "models")
        Path(first.remote_path).write_bytes(b"damaged")
        again = deploy_file(t, sys.executable, workdir, tiny_model, "models")
    assert again.bytes_sent == tiny_model.stat().st_size
    assert Path(again.remote_path).read_bytes() == tiny_model.read_bytes()


def test_deploy_refuses_a_file_larger_than_the_free_space(tiny_model: Path, tmp_path: Path) -> None:
    """The device's workdir on a real 256 KiB tmpfs: a 1 MiB file is refused before anything is sent,
    with one line saying what is free and what is needed, and leaves nothing behind; a small file
    still deploys there."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        missing_prerequisite("mounting a tmpfs for the free-space test needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], check=True)
    try:
        big = tmp_path / "big.tflite"
        big.write_bytes(os.urandom(1 << 20))
        workdir = str(mnt / "device")
        with LocalTransport() as t:
            with pytest.raises(DeviceError, match=r"has 0\.\d MiB free in .*, big\.tflite needs 1\.0 MiB"):
                deploy_file(t, sys.executable, workdir, big, "models")
            assert [p for p in mnt.rglob("*") if p.is_file()] == []
            small = deploy_file(t, sys.executable, workdir, tiny_model, "models")
        assert Path(small.remote_path).read_bytes() == tiny_model.read_bytes()
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_weird_filename_deploys_and_profiles_without_running_anything(
    tiny_model: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    weird = tmp_path / "in" / "a b;$(touch x).tflite"
    weird.parent.mkdir()
    shutil.copy(tiny_model, weird)
    r = profile(weird, runs=5, warmup=1)
    assert r["model"]["name"] == weird.name
    deployed = local_workdir() / "models" / r["model"]["sha256"] / weird.name
    assert deployed.is_file()
    for root in (home, cwd, tmp_path, Path(os.getcwd())):
        assert not [p for p in root.rglob("x")], root


@pytest.mark.parametrize(
    "workdir, name",
    [
        ("/w", ".."),
        ("/w", "."),
        ("/w", "a/../../etc"),
        ("/w", "line\nbreak"),
        ("relative/dir", "m.tflite"),
        ("/", "m.tflite"),
    ],
)
def test_remote_paths_never_leave_the_workdir(workdir: str, name: str) -> None:
    with pytest.raises(UserInputError):
        remote_path_for(workdir, "models", "0" * 64, name)


def test_remote_path_layout() -> None:
    sha = "ab" * 32
    assert remote_path_for("/w/x/", "models", sha, "m b.tflite") == f"/w/x/models/{sha}/m b.tflite"
    with pytest.raises(ValueError):
        remote_path_for("/w", "../up", sha, "m.tflite")


def test_test_data_npz_is_deterministic(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    y = np.array([0, 1])
    write_test_data(x, y, tmp_path / "a.npz")
    write_test_data(x, y, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as npz:
        np.testing.assert_array_equal(npz["x"], x)
        np.testing.assert_array_equal(npz["y"], y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]


def test_peak_rss_is_the_runners_own_not_the_parents(tiny_model: Path, home: Path) -> None:
    """ru_maxrss survives exec; a host holding 800 MB must not show up as the runner's peak."""
    import numpy as np

    ballast = np.ones(100_000_000)  # 800 MB resident in this (parent) process
    res = profile(tiny_model, runs=5, warmup=1)
    assert ballast[-1] == 1.0
    assert 10_000 < res["peak_rss_kb"] < 400_000
