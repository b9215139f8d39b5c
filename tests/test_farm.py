"""The farm tier (`pytest -m farm`): real SSH to hosts in network namespaces and an emulated aarch64 board."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support_cli import edgeq
from support_farm import farm_profile, pin_farm_keys

from edgeq.data import load_dataset

pytestmark = pytest.mark.farm


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "edgeq-home"
    return {"EDGEQ_HOME": str(home)}


def test_aarch64_board_runs_the_pipeline_model_like_the_host(
    farm: dict[str, Any], pipeline_dir: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    pin_farm_keys(farm, Path(env["EDGEQ_HOME"]))
    # ai-edge-litert with its builtin kernels: tflite-runtime 2.14's invoke() segfaults under the
    # qemu-user 10.0.2 that bookworm-backports installs now (scripts/farm/README.md)
    prof = farm_profile(farm, "arm64", tmp_path / "profiles", "generic-aarch64", workdir="~/edgeq-litert",
                        runtime="ai-edge-litert", runtime_version="2.3.0")  # fmt: skip
    setup = edgeq("devices", "setup", prof, "--json", env=env, timeout=1800)
    assert setup.code == 0, setup.stdout + setup.stderr

    ds = load_dataset()
    td = tmp_path / "test.npz"
    np.savez(td, x=ds.x_test, y=ds.y_test)
    model = pipeline_dir / "model.tflite"
    board_out = tmp_path / "board.npy"
    args = ["--runs", "20", "--warmup", "2", "--delegate", "none", "--test-data", td, "--json"]
    run = edgeq("profile", model, "--device", prof, *args, "--save-outputs", board_out, env=env, timeout=1800)
    assert run.code == 0, run.stderr
    board = json.loads(run.stdout)
    assert board["device"]["arch"] == "aarch64"
    assert board["device"]["runtime"] == "ai-edge-litert"
    assert board["latency_us"]["n"] == 20
    # The host's answer from the same TFLite builtin kernels (--delegate none on the board: XNNPACK's
    # int8 rounding differs by 1-2 LSB).
    # Data other than the model's own dataset is sent whole, in file order.
    x, y = ds.x_test, ds.y_test
    host = _builtin_kernel_outputs(model, x)
    a = np.load(board_out)
    assert a.shape == host.shape == (len(ds.y_test), 10) and a.dtype == host.dtype == np.int8
    # ai-edge-litert's builtin int8 kernels on aarch64 (its optimized NEON paths) put ~8 % of the
    # outputs 1-3 LSB away from the x86 ones (measured); tflite-runtime 2.14 matched exactly, but it
    # segfaults under this qemu (above). The answer must stay the same: logits within 4 LSB, the
    # predicted class almost always the host's, and the reported accuracy the board's own outputs'.
    diff = np.abs(a.astype(np.int16) - host.astype(np.int16))
    assert diff.max() <= 4, diff.max()
    assert np.mean(a.argmax(axis=1) == host.argmax(axis=1)) >= 0.98
    assert board["accuracy"]["top1"] == float(np.mean(a.argmax(axis=1) == y))


def _builtin_kernel_outputs(model: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeq.runner.measure import quantize

    it = Interpreter(
        model_path=str(model), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    scale, zp = inp["quantization"]
    rows = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], quantize(x[i : i + 1], scale, zp, np.int8))
        it.invoke()
        rows.append(it.get_tensor(out["index"])[0].copy())
    return np.array(rows)


@pytest.mark.parametrize("name", ["plain", "degraded"])
def test_deploy_then_redeploy_sends_nothing(
    farm: dict[str, Any], tiny_model: Path, tmp_path: Path, env: dict[str, str], name: str
) -> None:
    pin_farm_keys(farm, Path(env["EDGEQ_HOME"]))
    # x86 farm hosts share this machine's /tmp: a fresh workdir per test, removed afterwards.
    workdir = Path("/tmp") / f"edgeq-farm-test-{uuid.uuid4().hex[:12]}"
    prof = farm_profile(
        farm, name, tmp_path / "profiles", "generic-x86_64", python="/usr/bin/python3", workdir=str(workdir)
    )
    try:
        first = edgeq("deploy", tiny_model, "--device", prof, "--json", env=env, timeout=600)
        assert first.code == 0, first.stderr
        res = json.loads(first.stdout)
        assert res["model"]["bytes_sent"] == tiny_model.stat().st_size
        assert Path(res["model"]["remote_path"]).read_bytes() == tiny_model.read_bytes()
        again = json.loads(edgeq("deploy", tiny_model, "--device", prof, "--json", env=env).stdout)
        assert again["bytes_sent"] == 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_profile_with_power_on_a_farm_host_with_an_emulated_sensor_tree(
    farm: dict[str, Any], tiny_model: Path, env: dict[str, str]
) -> None:
    from support_sensors import emulated_sensors

    pin_farm_keys(farm, Path(env["EDGEQ_HOME"]))
    # The x86 farm hosts share this machine's /tmp, so the emulated tree is visible on "plain".
    root = Path("/tmp") / f"edgeq-farm-sensors-{uuid.uuid4().hex[:12]}"
    try:
        with emulated_sensors(root) as emu:
            prof = farm_profile(
                farm, "plain", root / "profiles", "generic-x86_64", python="/usr/bin/python3",
                power_source="ina2xx", sysfs_root=emu["sysfs_root"], vcgencmd=emu["vcgencmd"],
            )  # fmt: skip
            with open(prof, "a") as f:
                f.write("thermal_zones = []\n")
            setup = edgeq("devices", "setup", prof, env=env, timeout=1200)
            assert setup.code == 0, setup.stdout + setup.stderr
            run = edgeq(
                "profile", tiny_model, "--device", prof, "--power", "--runs", "100", "--json",
                env=env, timeout=600,
            )  # fmt: skip
        assert run.code == 0, run.stderr
        res = json.loads(run.stdout)
        assert res["device"]["name"] == "plain"
        power = res["power"]
        assert power["available"] is True and power["sensor"]["name"] == "ina219"
        assert power["samples"]["measure"] >= 20
        assert power["rate_hz"]["achieved"] > 10
        assert power["energy_mj_per_inference"] is not None
        assert {z["type"] for z in res["thermal"]["zones"]} >= {"cpu-thermal"}
    finally:
        shutil.rmtree(root, ignore_errors=True)
