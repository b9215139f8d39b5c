"""A profile's delegate reaches the runner: ``none`` runs LiteRT without its default delegate,
``xnnpack`` with XNNPACK, and the result says which, on the local device and over loopback SSH."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from support_cli import edgeq
from support_sshd import SshServer, loopback_profile, pin_host_key

from edgeq import api
from edgeq.devices.connect import DeviceTarget
from edgeq.errors import UserInputError


def _assert_ran_on(res: dict, delegate: str) -> None:
    ex = res["execution"]
    assert res["spec"]["delegate"] == delegate and res["config"]["delegate"] == delegate
    assert ex["delegate"] == delegate
    placement = ex["placement"]
    assert placement["source"] == "device" and placement["total"] == 3
    if delegate == "none":
        assert ex["delegate_nodes"] == 0
        assert {o["placement"] for o in placement["ops"]} == {"cpu"}
    else:
        assert ex["delegate_nodes"] >= 1
        assert placement["on_delegate"] == 3 and placement["summary"] == "3 of 3 ops on xnnpack, 0 on the CPU"


@pytest.mark.parametrize("delegate", ["none", "xnnpack"])
def test_local_profile_delegate_reaches_the_runner(
    delegate: str, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "here.toml").write_text(f'extends = "local"\ndelegate = "{delegate}"\n')
    res = api.profile(tiny_model, DeviceTarget("here", profiles=(d,)), measure={"runs": 20}).to_dict()
    _assert_ran_on(res, delegate)


@pytest.mark.parametrize("delegate", ["none", "xnnpack"])
def test_ssh_profile_delegate_reaches_the_runner(
    delegate: str, sshd: SshServer, ssh_env: Path, tiny_model: Path, tmp_path: Path
) -> None:
    pin_host_key(ssh_env, sshd)
    prof = loopback_profile(sshd, tmp_path / "p", sys.executable, delegate=f'"{delegate}"')
    run = edgeq("profile", tiny_model, "--device", prof, "--runs", "20", "--json")
    assert run.code == 0, run.stderr
    _assert_ran_on(json.loads(run.stdout), delegate)
    assert "placement: " not in run.stdout  # --json prints the JSON only


def test_command_line_delegate_overrides_the_profile(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEQ_HOME", str(tmp_path / "home"))
    run = edgeq("profile", tiny_model, "--delegate", "none", "--runs", "10")
    assert run.code == 0, run.stderr
    assert "placement: 0 of 3 ops on none, 3 on the CPU" in run.stdout


def test_contradictory_runtime_and_delegate_are_refused_before_anything_runs(
    tiny_model: Path, tmp_path: Path
) -> None:
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "ov.toml").write_text('extends = "local"\nruntime = "openvino"\nruntime_version = "2026.4.1"\n')
    with pytest.raises(UserInputError, match="OpenVINO is both the runtime and the delegate"):
        api.profile(tiny_model, DeviceTarget("ov", profiles=(d,)))
