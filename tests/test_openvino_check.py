"""``devices check`` for openvino: the device-side probe on a fake system tree, and the check lines
it leads to for each device (the accelerators themselves cannot exist on this machine)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import require_module

from edgeq.delegates.openvino.check import FAIL, OK, WARN, check_lines
from edgeq.runner.delegates.openvino import probe

require_module("openvino")


def tree(root: Path, *, stick: bool = False, rules: bool = False, npu: bool | None = None) -> Path:
    if stick:
        usb = root / "sys/bus/usb/devices/1-1"
        usb.mkdir(parents=True)
        (usb / "idVendor").write_text("03e7\n")
        (usb / "idProduct").write_text("2485\n")
    if rules:
        (root / "etc/udev/rules.d").mkdir(parents=True)
        (root / "etc/udev/rules.d/97-myriad-usbboot.rules").write_text("")
    if npu is not None:
        (root / "sys/module/intel_vpu").mkdir(parents=True)
        (root / "dev/accel").mkdir(parents=True)
        node = root / "dev/accel/accel0"
        node.write_text("")
        os.chmod(node, 0o666 if npu else 0o000)
    return root


def test_probe_reads_the_real_openvino_and_the_tree(tmp_path: Path) -> None:
    facts = probe(str(tree(tmp_path, stick=True, rules=True, npu=True)))
    assert facts["ok"] and facts["available_devices"] == ["CPU"] and facts["tflite_frontend"]
    assert facts["c_api"] is True
    assert facts["myriad_usb"] == ["03e7:2485"] and facts["myriad_udev_rules"]
    assert facts["intel_vpu_driver"] and facts["npu_nodes"] == ["dev/accel/accel0"]
    assert probe(str(tmp_path / "empty"))["myriad_usb"] == []


def statuses(lines: list[tuple[str, str, str]]) -> list[str]:
    return [s for s, _, _ in lines]


def test_cpu_here_is_all_ok(tmp_path: Path) -> None:
    lines = check_lines(probe(str(tmp_path)), "CPU")
    assert statuses(lines) == [OK, OK], lines
    assert lines[1][1].startswith("device CPU")


def ncs2_facts(**over: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "ok": True,
        "version": "2022.3.2",
        "available_devices": ["CPU"],
        "tflite_frontend": False,
        "c_api": False,
        "myriad_usb": [],
        "myriad_udev_rules": False,
    }
    facts.update(over)
    return facts


@pytest.mark.parametrize(
    ("facts", "needle"),
    [
        (ncs2_facts(version="2026.4.1", tflite_frontend=True), "has no MYRIAD plugin"),
        (ncs2_facts(), "no Movidius stick on USB"),
        (ncs2_facts(myriad_usb=["03e7:2485"]), "97-myriad-usbboot.rules is not installed"),
        (ncs2_facts(myriad_usb=["03e7:2485"], myriad_udev_rules=True), "OpenVINO sees only: CPU"),
    ],
)
def test_ncs2_missing_pieces_are_named(facts: dict[str, Any], needle: str) -> None:
    lines = check_lines(facts, "MYRIAD", "2022.3.2")
    fails = [(d, h) for s, d, h in lines if s == FAIL]
    assert len(fails) == 1 and needle in fails[0][0] and fails[0][1], lines


def test_ncs2_ready(tmp_path: Path) -> None:
    facts = ncs2_facts(available_devices=["CPU", "MYRIAD"], myriad_usb=["03e7:f63b"], myriad_udev_rules=True)
    lines = check_lines(facts, "MYRIAD", "2022.3.2")
    assert FAIL not in statuses(lines) and any("as OpenVINO IR" in d for _, d, _ in lines)


def test_openvino_not_importable() -> None:
    lines = check_lines({"ok": False, "error": "No module named 'openvino'"}, "NPU", "2026.4.1")
    assert lines == [
        (FAIL, "OpenVINO does not import: No module named 'openvino'", "pip install openvino==2026.4.1")
    ]
    assert "archive" in check_lines({"ok": False, "error": "x"}, "MYRIAD", "2022.3.2")[0][2]


def test_npu_node_without_permission(tmp_path: Path) -> None:
    facts = probe(str(tree(tmp_path, npu=True)))
    facts["npu_nodes_usable"] = []  # what a user outside the render group sees (root opens any node)
    lines = check_lines(facts, "NPU")
    assert any(s == FAIL and "cannot open it" in d and "render group" in h for s, d, h in lines)


def test_npu_pieces(tmp_path: Path) -> None:
    no_driver = check_lines(probe(str(tmp_path)), "NPU")
    assert any(s == FAIL and "intel_vpu kernel driver is not loaded" in d for s, d, _ in no_driver)
    facts = probe(str(tree(tmp_path / "t", npu=True)))
    facts["npu_nodes_usable"] = facts["npu_nodes"]  # as for a user in the render group
    lines = check_lines(facts, "NPU")
    assert any(s == FAIL and "linux-npu-driver" in h for s, _, h in lines)


def test_version_other_than_the_profile_pin_warns(tmp_path: Path) -> None:
    lines = check_lines(probe(str(tmp_path)), "CPU", "2025.4.1")
    assert lines[0][0] == WARN and "pip install openvino==2025.4.1" in lines[0][2]
