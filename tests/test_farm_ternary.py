"""Farm tier: a model with ternary custom ops on the emulated aarch64 board (ai-edge-litert 2.3.0 under
qemu-user 10, libedgeq_ops.so cross-built by the host) gives exactly the host's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import missing_prerequisite
from support_cli import edgeq
from support_farm import farm_profile, pin_farm_keys

from edgeq import api
from edgeq.data import load_dataset
from edgeq.devices.connect import DeviceTarget
from edgeq.export.tflite_model import custom_op_outputs
from edgeq.ops.build import compiler_for

pytestmark = pytest.mark.farm


def test_aarch64_board_runs_the_ternary_model_like_the_host(
    farm: dict[str, Any], ternary_pipeline_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        compiler_for("aarch64")  # the host cross-builds the kernels for the board
    except Exception:
        missing_prerequisite(
            "aarch64-linux-gnu-gcc not installed (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
        )
    home = tmp_path / "edgeq-home"
    env = {"EDGEQ_HOME": str(home)}
    pin_farm_keys(farm, home)
    # Its own workdir (so its own venv): the tflite-runtime board profile pins numpy<2 in the other one.
    prof = farm_profile(
        farm,
        "arm64",
        tmp_path / "profiles",
        "generic-aarch64",
        workdir="~/edgeq-litert",
        runtime="ai-edge-litert",
        runtime_version="2.3.0",
    )
    setup = edgeq("devices", "setup", prof, "--json", env=env, timeout=2400)
    assert setup.code == 0, setup.stdout + setup.stderr

    model = ternary_pipeline_dir / "model.tflite"
    ds = load_dataset()
    x, y = ds.x_test[:64], ds.y_test[:64]  # emulated LiteRT is slow: a slice of the test set
    board_out = tmp_path / "board.npy"
    events: list[dict[str, Any]] = []
    monkeypatch.setenv("EDGEQ_HOME", str(home))
    r = api.profile(
        model,
        DeviceTarget(str(prof)),
        measure={"runs": 5, "warmup": 1},
        test_data=(x, y),
        save_outputs=board_out,
        on_event=events.append,
    ).to_dict()
    assert r["device"]["arch"] == "aarch64" and r["device"]["runtime"] == "ai-edge-litert"
    assert r["custom_ops"] == ["EDGEQ_TERNARY_CONV2D", "EDGEQ_TERNARY_FC"]
    sent = {e["kind"]: e for e in events if e.get("event") == "deploy"}
    assert sent["lib"]["name"] == "libedgeq_ops.so"
    host = custom_op_outputs(model, x)
    board = np.load(board_out)
    assert board.dtype == host.dtype == np.int8 and board.shape == host.shape == (64, 10)
    assert np.array_equal(board, host)
    assert r["accuracy"]["top1"] == float(np.mean(host.argmax(axis=1) == y))
    # Nothing is sent again, the aarch64 library included.
    again = edgeq("deploy", model, "--device", prof, "--json", env=env, timeout=600)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout)["bytes_sent"] == 0
