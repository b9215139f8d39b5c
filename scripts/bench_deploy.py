#!/usr/bin/env python3
"""Deploy over real SSH as a user runs it, against scp and rsync on the same link in the same run.

Two hosts of a farm of its own (scripts/farm, prefix ``eqbd``, its own subnet and state dir, so a farm
someone else runs is never touched; brought up and down by this script): ``plain`` (a network
namespace behind a bridge, as good as loopback) and ``degraded`` (8 Mbit/s, 1 % loss, +40 ms each way).
The model is an int8 MobileNetV2-0.35 96×96 with a 10-class head (random weights, 0.6 MB); runner.pyz
travels with it. For each host, seven alternating pairs of whole commands, after one warm-up pair:

* first deploy: ``edgeq deploy MODEL --device PROFILE`` into a fresh workdir, vs ``scp`` of the same
  two files (model and runner.pyz) into a fresh directory;
* unchanged redeploy (0 bytes sent): the same edgeq command again, vs an ``rsync -a`` of the same two
  files that finds nothing to send.

Both as a user runs them (the default: the connection kept between commands by a keeper, as OpenSSH's
ControlPersist would; ``vs_scp``, ``vs_rsync``), then again with every edgeq command making its own
connection (``EDGEQ_SSH_PERSIST_S=0``: ``vs_scp_own_connection``, ``vs_rsync_own_connection``). scp
and rsync connect every time in both.

* the floor of a Python client that connects itself (``FLOOR``): an interpreter that imports what
  edgeq's CLI stands on (typer, rich, paramiko), connects with the same key, opens SFTP and stats the
  two deployed files, vs the same rsync.

Every ratio is the median of the pairwise ratios (the edgeq command / the other), as the commands ran
in turn; targets ``vs_scp`` ≤ 1.5 and ``vs_rsync`` ≤ 1.0. The last stdout line is one JSON object:
``{"model_bytes", "runs", "plain": {first_s, first_bytes, redeploy_s, redeploy_bytes, first_cmd_s,
scp_s, redeploy_cmd_s, rsync_s, vs_scp, vs_rsync, first_own_cmd_s, scp2_s, redeploy_own_cmd_s,
rsync2_s, vs_scp_own_connection, vs_rsync_own_connection, floor_s, floor_vs_rsync}, "degraded":
{...}, "vs_scp", "vs_rsync"}``: ``first_s``/``redeploy_s`` are the command's own timing (``--json``
``seconds``, one run each), the other ``*_s`` medians of whole commands (seconds, wall; ``scp2_s`` and
``rsync2_s`` those paired with the own-connection runs), the top-level ratios those of ``plain``.

    .venv/bin/python scripts/bench_deploy.py   # as root (network namespaces); needs scp and rsync
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the farm helpers the farm tests use

import numpy as np  # noqa: E402
from support_farm import FARM, farm_profile, pin_farm_keys  # noqa: E402

RUNS = int(os.environ.get("EDGEQ_BENCH_RUNS", "7"))
HOSTS = ("plain", "degraded")
# A farm of this benchmark's own: another prefix, subnet and state dir than the test farm's.
FARM_ENV = {
    "EDGEQ_FARM_PREFIX": "eqbd",
    "EDGEQ_FARM_SUBNET": os.environ.get("EDGEQ_BENCH_SUBNET", "10.213.93.0/24"),
    "EDGEQ_FARM_HOSTS": ",".join(HOSTS),
    "EDGEQ_FARM_EGRESS": "0",
}
EDGEQ = Path(sys.executable).with_name("edgeq")
OWN = {"EDGEQ_SSH_PERSIST_S": "0"}  # no keeper: the command makes its own connection


# The least a Python client does for an unchanged redeploy: import what edgeq's CLI stands on, connect,
# open SFTP, stat the files. argv: host port user key known_hosts path...
FLOOR = """
import gc, sys
import rich.console, typer
from edgeq.devices.transports import ssh_config
ssh_config.defer_invoke()  # as edgeq does: paramiko's optional invoke is not imported
import paramiko
host, port, user, key, known_hosts, *paths = sys.argv[1:]
client = paramiko.SSHClient()
client.load_host_keys(known_hosts)
client.connect(host, int(port), user, key_filename=key, allow_agent=False, look_for_keys=False)
sftp = client.open_sftp()
for path in paths:
    sftp.stat(path)
client.close()
gc.freeze()
"""


def log(msg: str) -> None:
    print(f"[bench_deploy] {msg}", file=sys.stderr, flush=True)


def build_model(dest: Path) -> Path:
    from edgeq.export.convert import to_int8_tflite
    from edgeq.tfenv import keras

    k = keras()
    k.utils.set_random_seed(0)
    model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    calib = np.random.default_rng(0).uniform(-1, 1, (16, 96, 96, 3)).astype(np.float32)
    dest.write_bytes(to_int8_tflite(model, calib))
    return dest


# A command to time: argv, what runs before it (untimed), variables added to its environment.
Cmd = tuple[list[str], Callable[[], None] | None, dict[str, str]]


def timed(argv: list[str], env: dict[str, str], before: Callable[[], None] | None = None) -> float:
    """Wall seconds of one whole command (``before`` runs first, untimed); it must succeed."""
    if before is not None:
        before()
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return took


def alternate(a: Cmd, b: Cmd, env: dict[str, str]) -> tuple[float, float, float]:
    """One warm-up pair, then RUNS pairs A B A B ...: (median A s, median B s, median of A/B)."""
    ea, eb = {**env, **a[2]}, {**env, **b[2]}
    timed(a[0], ea, a[1])
    timed(b[0], eb, b[1])
    ta, tb = [], []
    for _ in range(RUNS):
        ta.append(timed(a[0], ea, a[1]))
        tb.append(timed(b[0], eb, b[1]))
    ratios = [x / y for x, y in zip(ta, tb, strict=True)]
    return statistics.median(ta), statistics.median(tb), statistics.median(ratios)


def fresh(path: Path) -> Callable[[], None]:
    """Empties ``path`` (the farm's x86 hosts share this machine's /tmp, so this is the device's too)."""

    def go() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)

    return go


def gone(path: Path) -> Callable[[], None]:
    return lambda: shutil.rmtree(path, ignore_errors=True)


def edgeq_json(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [*argv, "--json"], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"edgeq deploy failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def bench_host(
    name: str, farm: dict[str, Any], tmp: Path, model: Path, runner: Path, env: dict[str, str]
) -> dict[str, float | int]:
    run_id = uuid.uuid4().hex[:12]
    # The x86 farm hosts share this machine's /tmp: a fresh workdir there makes a first deploy real.
    wd = Path("/tmp") / f"edgeq-bench-deploy-{run_id}-{name}"
    scp_dir = Path("/tmp") / f"edgeq-bench-scp-{run_id}-{name}"
    rsync_dir = Path("/tmp") / f"edgeq-bench-rsync-{run_id}-{name}"
    prof = farm_profile(
        farm, name, tmp / "profiles", "generic-x86_64", workdir=str(wd), python="/usr/bin/python3"
    )
    deploy = [str(EDGEQ), "deploy", str(model), "--device", str(prof)]
    ssh = ["-F", str(farm["ssh_config"])]
    scp = ["scp", "-q", *ssh, str(model), str(runner), f"{name}:{scp_dir}/"]
    rsync = ["rsync", "-a", "-e", " ".join(["ssh", *ssh]), str(model), str(runner), f"{name}:{rsync_dir}/"]
    try:
        gone(wd)()
        first = edgeq_json(deploy, env)
        again = edgeq_json(deploy, env)
        fresh(rsync_dir)()
        timed(rsync, env)
        check = subprocess.run([*rsync[:2], "-i", *rsync[2:]], env=env, capture_output=True, text=True)
        if check.returncode != 0 or check.stdout.strip():
            raise SystemExit(f"rsync would still send something: {check.stdout.strip()[:200]}")
        # As a user runs it: the connection kept between commands (a keeper; persist_s = 60) ...
        first_cmd_s, scp_s, vs_scp = alternate((deploy, gone(wd), {}), (scp, fresh(scp_dir), {}), env)
        redeploy_cmd_s, rsync_s, vs_rsync = alternate((deploy, None, {}), (rsync, None, {}), env)
        subprocess.run([str(EDGEQ), "devices", "disconnect"], env=env, capture_output=True, check=True)
        # ... and with every command connecting itself
        first_own_s, scp2_s, vs_scp_own = alternate((deploy, gone(wd), OWN), (scp, fresh(scp_dir), {}), env)
        redeploy_own_s, rsync2_s, vs_rsync_own = alternate((deploy, None, OWN), (rsync, None, {}), env)
        h = next(h for h in farm["hosts"] if h["name"] == name)
        there = [again["model"]["remote_path"], again["runner"]["remote_path"]]
        floor = [sys.executable, "-c", FLOOR, h["address"], str(h["port"]), h["user"]]
        floor += [h["identity_file"], h["known_hosts"], *there]
        floor_s, _, floor_vs_rsync = alternate((floor, None, {}), (rsync, None, {}), env)
    finally:
        subprocess.run([str(EDGEQ), "devices", "disconnect"], env=env, capture_output=True, check=False)
        for d in (wd, scp_dir, rsync_dir):
            shutil.rmtree(d, ignore_errors=True)
    out: dict[str, float | int] = {
        "first_s": float(first["seconds"]),
        "first_bytes": int(first["bytes_sent"]),
        "redeploy_s": float(again["seconds"]),
        "redeploy_bytes": int(again["bytes_sent"]),
        "first_cmd_s": round(first_cmd_s, 3),
        "scp_s": round(scp_s, 3),
        "redeploy_cmd_s": round(redeploy_cmd_s, 3),
        "rsync_s": round(rsync_s, 3),
        "vs_scp": round(vs_scp, 2),
        "vs_rsync": round(vs_rsync, 2),
        "first_own_cmd_s": round(first_own_s, 3),
        "scp2_s": round(scp2_s, 3),
        "redeploy_own_cmd_s": round(redeploy_own_s, 3),
        "rsync2_s": round(rsync2_s, 3),
        "vs_scp_own_connection": round(vs_scp_own, 2),
        "vs_rsync_own_connection": round(vs_rsync_own, 2),
        "floor_s": round(floor_s, 3),
        "floor_vs_rsync": round(floor_vs_rsync, 2),
    }
    return out


def main() -> int:
    for tool in ("scp", "rsync"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install -y openssh-client rsync")
    if not EDGEQ.exists():
        raise SystemExit(f"no edgeq command next to {sys.executable}: install edgeq into this venv")
    # edgeq's bytecode as an installed edgeq has it after its first run: with PYTHONDONTWRITEBYTECODE
    # set, every command would compile the modules changed since the last compile (tens of ms).
    compileall.compile_dir(str(REPO / "edgeq"), quiet=1)
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-deploy-") as td:
        tmp = Path(td)
        os.environ.update(FARM_ENV, EDGEQ_FARM_STATE=str(tmp / "farm"))
        (tmp / "run").mkdir(mode=0o700)  # this benchmark's own keepers (XDG_RUNTIME_DIR/edgeq)
        env = {**os.environ, "EDGEQ_HOME": str(tmp / "home"), "XDG_RUNTIME_DIR": str(tmp / "run")}
        env.pop("EDGEQ_SSH_PERSIST_S", None)  # the default: what a user gets
        os.environ["EDGEQ_HOME"] = env["EDGEQ_HOME"]  # build_runner_pyz below caches there too
        up = subprocess.run(
            [str(FARM / "up.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
        if up.returncode != 0:
            raise SystemExit(f"farm up failed: {up.stderr.strip()[-1500:]}")
        try:
            farm = json.loads((tmp / "farm" / "farm.json").read_text())
            pin_farm_keys(farm, tmp / "home")
            log("building the model (TensorFlow)")
            model = build_model(tmp / "mobilenet_v2_035_96_int8.tflite")
            from edgeq.runner_zip import build_runner_pyz

            runner = build_runner_pyz()
            out["model_bytes"] = model.stat().st_size
            out["runs"] = RUNS
            for name in HOSTS:
                out[name] = bench_host(name, farm, tmp, model, runner, env)
                log(f"{name}: {out[name]}")
        finally:
            subprocess.run(
                [str(FARM / "down.sh")], stdin=subprocess.DEVNULL, capture_output=True, check=False
            )
    plain = out["plain"]
    assert isinstance(plain, dict)
    out["vs_scp"] = plain["vs_scp"]
    out["vs_rsync"] = plain["vs_rsync"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
