#!/usr/bin/env python3
"""Deploy time and bytes over real SSH to the farm's plain and degraded hosts (first deploy, redeploy).

Brings the farm up (scripts/farm/up.sh) when it is not, and down again afterwards in that case.
The model is an int8 MobileNetV2-0.35 96×96 (random weights); the runner.pyz travels with it.
The last stdout line is one JSON object:
``{"model_bytes", "plain": {first_s, first_bytes, redeploy_s, redeploy_bytes}, "degraded": {...}}``.

    .venv/bin/python scripts/bench_deploy.py   # as root (network namespaces)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the farm helpers the farm tests use

import numpy as np  # noqa: E402
from support_farm import FARM, farm_is_up, farm_profile, pin_farm_keys, state_dir  # noqa: E402


def log(msg: str) -> None:
    print(f"[bench_deploy] {msg}", file=sys.stderr, flush=True)


def build_model(dest: Path) -> Path:
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    calib = np.random.default_rng(0).uniform(-1, 1, (16, 96, 96, 3)).astype(np.float32)
    dest.write_bytes(to_int8_tflite(model, calib))
    return dest


def main() -> int:
    from edgeq import api
    from edgeq.devices.connect import DeviceTarget

    was_up = farm_is_up()
    subprocess.run([str(FARM / "up.sh")], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    farm = json.loads((state_dir() / "farm.json").read_text())
    out: dict[str, object] = {}
    workdirs: list[Path] = []
    try:
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td)
            os.environ["EDGEQ_HOME"] = str(tmp / "home")
            pin_farm_keys(farm, tmp / "home")
            model = build_model(tmp / "mobilenet_v2_035_96_int8.tflite")
            out["model_bytes"] = model.stat().st_size
            for name in ("plain", "degraded"):
                # The x86 farm hosts share this machine's /tmp; a fresh workdir makes the first deploy real.
                wd = Path("/tmp") / f"edgeq-bench-deploy-{uuid.uuid4().hex[:12]}"
                workdirs.append(wd)
                prof = farm_profile(
                    farm, name, tmp / "profiles", "generic-x86_64", workdir=str(wd), python="/usr/bin/python3"
                )
                target = DeviceTarget(str(prof))
                first = api.deploy(model, target)
                again = api.deploy(model, target)
                out[name] = {
                    "first_s": first["seconds"],
                    "first_bytes": first["bytes_sent"],
                    "redeploy_s": again["seconds"],
                    "redeploy_bytes": again["bytes_sent"],
                }
                log(f"{name}: {out[name]}")
    finally:
        for wd in workdirs:
            shutil.rmtree(wd, ignore_errors=True)
        if not was_up:
            subprocess.run([str(FARM / "down.sh")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
