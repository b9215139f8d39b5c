"""``edgeq devices check`` for a profile whose delegate is edgetpu: from the device's facts
(:func:`edgeq.runner.delegates.edgetpu.probe`, run on the device) to check lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeq.delegates.delegate import CheckLine

INSTALL = "install libedgetpu1-std (or -max) from Coral's apt repository (https://coral.ai/docs/accelerator/get-started/)"


def check_lines(facts: Mapping[str, Any], device: str = "") -> list[CheckLine]:
    library = facts.get("library", "libedgetpu.so.1")
    if not facts.get("library_loads"):
        return [("FAIL", f"{library} does not load: {facts.get('error', 'not found')}", INSTALL)]
    usb, pcie = list(facts.get("usb") or []), list(facts.get("pcie") or [])
    wants_pci = device.startswith("pci")
    wants_usb = device.startswith("usb")
    if (wants_pci and not pcie) or (wants_usb and not usb) or not (usb or pcie):
        where = "a PCIe/M.2 module (/dev/apex_0)" if wants_pci else "a Coral USB Accelerator"
        hint = (
            "install the gasket/apex PCIe driver and reboot (ls /dev/apex_0)"
            if wants_pci
            else "plug the USB Accelerator into a USB 3 port; add Coral's udev rules so the user can open it"
        )
        return [
            (
                "FAIL",
                f"{library} loads, but {where} is not attached"
                + (f" (device = {device!r})" if device else ""),
                hint,
            )
        ]
    found = ", ".join([*(f"USB {u}" for u in usb), *pcie])
    return [("OK", f"edgetpu: {library} loads; {found}", "")]
