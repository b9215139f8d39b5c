"""``edgeq devices check`` for a profile whose delegate is openvino: from the device's probe facts
(:func:`edgeq.runner.delegates.openvino.probe`, run on the device) to check lines.

>>> check_lines(facts, device="MYRIAD", runtime_version="2022.3.2")
[('OK', 'OpenVINO 2022.3.2 imports (devices: CPU)', ''), ('FAIL', 'no Movidius stick on USB ...', '...')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeq.runner.delegates.openvino import INSTALL_HINT, NCS2_HINT, PIN

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CheckLine = tuple[str, str, str]  # (status, detail, hint)

NCS2_ARCHIVE_HINT = (
    "install OpenVINO 2022.3 from Intel's archive (l_openvino_toolkit_*_2022.3.*.tgz), run its "
    "install_dependencies/install_NCS_udev_rules.sh, and point the profile's python at an interpreter "
    "that sources its setupvars.sh (Python 3.7-3.10)"
)


def _device_present(device: str, available: list[str]) -> bool:
    if device.startswith("AUTO"):
        return True
    return device in set(available) | {d.split(".")[0] for d in available}


def _missing_device(device: str, facts: Mapping[str, Any]) -> CheckLine:
    base = device.split(".")[0]
    version = str(facts.get("version", "?"))
    seen = ", ".join(facts.get("available_devices") or []) or "no device"
    if base == "MYRIAD":
        if not version.startswith("2022."):
            return (
                FAIL,
                f"OpenVINO {version} has no MYRIAD plugin (it ended with 2022.3)",
                NCS2_ARCHIVE_HINT,
            )
        if not facts.get("myriad_usb"):
            return (
                FAIL,
                "no Movidius stick on USB (no 03e7:2485 or 03e7:f63b device)",
                "plug the NCS2 into a USB 3 port of this board (lsusb shows 03e7:2485)",
            )
        if not facts.get("myriad_udev_rules"):
            return (
                FAIL,
                "the NCS2 is plugged in but 97-myriad-usbboot.rules is not installed, so the user cannot open it",
                "run install_dependencies/install_NCS_udev_rules.sh from the 2022.3 archive, then "
                "udevadm control --reload-rules && udevadm trigger, and add the user to the users group",
            )
        return (
            FAIL,
            f"the NCS2 is plugged in but OpenVINO sees only: {seen}",
            "unplug and replug it; " + NCS2_HINT,
        )
    if base == "NPU":
        if not facts.get("intel_vpu_driver"):
            return (
                FAIL,
                "the intel_vpu kernel driver is not loaded",
                "use Linux 6.6 or newer with intel_vpu (modprobe intel_vpu); Core Ultra only",
            )
        if not facts.get("npu_nodes"):
            return (
                FAIL,
                "intel_vpu is loaded but /dev/accel/accel0 does not exist",
                "check dmesg for intel_vpu errors",
            )
        if not facts.get("npu_nodes_usable"):
            return (
                FAIL,
                f"{facts['npu_nodes'][0]} exists but this user cannot open it",
                "add the user to the render group (sudo usermod -aG render USER), then log in again",
            )
        return (
            FAIL,
            f"the NPU driver is there but OpenVINO sees only: {seen}",
            "install Intel's linux-npu-driver user-space (Level Zero, matching OpenVINO's release)",
        )
    if base == "GPU":
        if not facts.get("gpu_nodes"):
            return (
                FAIL,
                "no GPU render node (/dev/dri/renderD*)",
                "an Intel GPU with the i915 or xe driver is needed",
            )
        if not facts.get("gpu_nodes_usable"):
            return (
                FAIL,
                f"{facts['gpu_nodes'][0]} exists but this user cannot open it",
                "add the user to the render group",
            )
        return (FAIL, f"OpenVINO sees only: {seen}", "install Intel's compute runtime (intel-opencl-icd)")
    return (
        FAIL,
        f"OpenVINO device {device} is not available (OpenVINO sees: {seen})",
        "set device to one it sees",
    )


def check_lines(facts: Mapping[str, Any], device: str = "CPU", runtime_version: str = PIN) -> list[CheckLine]:
    """The check lines for the openvino delegate on ``device``, from the device's probe facts."""
    device = (device or "CPU").strip().upper()
    ncs2 = device == "MYRIAD"
    if not facts.get("ok"):
        return [
            (
                FAIL,
                f"OpenVINO does not import: {facts.get('error', 'unknown error')}",
                NCS2_ARCHIVE_HINT if ncs2 else f"pip install openvino=={runtime_version}",
            )
        ]
    version = str(facts.get("version", "?"))
    available = list(facts.get("available_devices") or [])
    lines: list[CheckLine] = []
    status = OK if version.startswith(runtime_version.rsplit(".", 1)[0]) else WARN
    lines.append(
        (
            status,
            f"OpenVINO {version} (devices: {', '.join(available) or 'none'})",
            ""
            if status == OK
            else f"the profile pins {runtime_version}: pip install openvino=={runtime_version}",
        )
    )
    if _device_present(device, available):
        name = (facts.get("device_names") or {}).get(device) or ""
        lines.append((OK, f"device {device}" + (f": {name}" if name else ""), ""))
    else:
        lines.append(_missing_device(device, facts))
    if ncs2:
        lines.append(
            (OK, "models go to the NCS2 as OpenVINO IR (edgeq compile converts them on the host)", "")
        )
    elif not facts.get("tflite_frontend"):
        lines.append(
            (
                FAIL,
                f"OpenVINO {version} has no TFLite front end",
                f"{INSTALL_HINT} (2023.0 or newer reads .tflite)",
            )
        )
    if not facts.get("c_api") and not ncs2:
        lines.append(
            (
                WARN,
                "no usable libopenvino_c (2026 API) beside the package: invoke goes through the Python binding (~5 us more per call)",
                f"{INSTALL_HINT} (the wheels ship libopenvino_c)",
            )
        )
    return lines
