"""`edgeq deploy` / `edgeq profile` over SSH against a real sshd on loopback, through the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from support_cli import assert_clean_error, edgeq
from support_sshd import SshServer, keygen, loopback_profile, pin_host_key

from edgeq.errors import EXIT_DEVICE


@pytest.fixture
def profile_file(sshd: SshServer, ssh_env: Path, tmp_path: Path) -> Path:
    # The "board" runs the runner under edgeq's own Python, which has ai-edge-litert.
    return loopback_profile(sshd, tmp_path / "profiles", sys.executable)


def test_profile_over_ssh_and_redeploy_sends_nothing(
    sshd: SshServer,
    ssh_env: Path,
    profile_file: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    pin_host_key(ssh_env, sshd)
    run = edgeq("profile", tiny_model, "--device", profile_file, "--runs", "30", "--warmup", "3", "--json")
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    assert res["schema"] == "edgeq.result/1"
    lat = res["latency_us"]
    assert lat["n"] == 30 and 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert res["device"]["name"] == "loop" and res["device"]["profile"] == "loop"
    assert len(res["device"]["profile_sha256"]) == 64
    workdir = tmp_path / "profiles" / "workdir"
    assert (workdir / "models" / res["model"]["sha256"] / tiny_model.name).exists()

    # The profile already deployed both: a deploy now sends nothing.
    run = edgeq("deploy", tiny_model, "--device", profile_file, "--json")
    assert run.code == 0, run.stderr
    dep = json.loads(run.stdout)
    assert dep["model"]["bytes_sent"] == 0 and dep["runner"]["bytes_sent"] == 0 and dep["bytes_sent"] == 0
    assert dep["model"]["remote_path"].startswith(str(workdir))

    # A new model is sent in full, once.
    other = tmp_path / "other.tflite"
    shutil.copy(tiny_model, other)
    first = json.loads(edgeq("deploy", other, "--device", profile_file, "--json").stdout)
    assert first["model"]["bytes_sent"] == other.stat().st_size
    again = json.loads(edgeq("deploy", other, "--device", profile_file, "--json").stdout)
    assert again["model"]["bytes_sent"] == 0


def test_unknown_host_refused_then_pinned_and_changed_key_always_refused(
    sshd: SshServer,
    ssh_env: Path,
    profile_file: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    run = edgeq("deploy", tiny_model, "--device", profile_file)
    assert_clean_error(run, EXIT_DEVICE, "unknown host key", "SHA256:")
    assert "--trust-new-host" in run.stderr
    known = ssh_env / ".cache" / "edgeq" / "known_hosts"
    assert not known.exists() or str(sshd.port) not in known.read_text()

    run = edgeq("deploy", tiny_model, "--device", profile_file, "--trust-new-host", "--json")
    assert run.code == 0, run.stderr
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    assert edgeq("deploy", tiny_model, "--device", profile_file).code == 0  # pinned: no flag needed

    # Pretend the device's key changed: pin a different key for the same host and port.
    other = tmp_path / "otherkey"
    keygen(other, "not-the-device")
    known.write_text(
        f"[127.0.0.1]:{sshd.port} " + " ".join((other.with_suffix(".pub")).read_text().split()[:2]) + "\n"
    )
    for extra in ([], ["--trust-new-host"]):
        run = edgeq("deploy", tiny_model, "--device", profile_file, *extra)
        assert_clean_error(run, EXIT_DEVICE, "CHANGED")
        assert "SHA256:" in run.stderr


def test_a_hostile_file_name_deploys_and_profiles_and_runs_nothing(
    sshd: SshServer,
    ssh_env: Path,
    profile_file: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    pin_host_key(ssh_env, sshd)
    src = tmp_path / "src"
    src.mkdir()
    hostile = src / "a b;$(touch x).tflite"
    shutil.copy(tiny_model, hostile)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    run = edgeq("profile", hostile, "--device", profile_file, "--runs", "5", "--json", cwd=cwd)
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    workdir = tmp_path / "profiles" / "workdir"
    assert (workdir / "models" / res["model"]["sha256"] / hostile.name).exists()
    for root in (workdir, cwd, src, Path(os.environ["HOME"])):
        assert not list(root.rglob("x")), root


def test_profile_with_power_over_ssh_reads_the_emulated_sensor(
    sshd: SshServer, ssh_env: Path, tmp_path: Path, tiny_model: Path
) -> None:
    from support_sensors import emulated_sensors

    pin_host_key(ssh_env, sshd)
    with emulated_sensors(tmp_path / "emu") as emu:
        prof = loopback_profile(
            sshd,
            tmp_path / "profiles",
            sys.executable,
            power_source='"ina2xx"',
            sysfs_root=json.dumps(emu["sysfs_root"]),
            vcgencmd=json.dumps(emu["vcgencmd"]),
            thermal_zones="[]",  # every zone (the emulated board's are cpu-thermal, gpu-thermal)
        )
        plot = tmp_path / "power.png"
        run = edgeq(
            "profile", tiny_model, "--device", prof, "--power", "--power-idle", "0.5", "--runs", "50",
            "--plot", plot, "--json",
        )  # fmt: skip
    assert run.code == 0, run.stderr
    res = json.loads(run.stdout)
    power = res["power"]
    assert power["available"] is True and power["source"] == "ina2xx"
    assert power["samples"]["measure"] >= 20 and power["samples"]["idle"] >= 5
    # The emulated INA219 reports between its idle (2 W by default) and full-load power.
    assert 1000 < power["power_mw"]["idle"] < 20000
    assert power["energy_mj_per_inference_sigma"] >= 0
    assert res["thermal"]["zones"], res["thermal"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
