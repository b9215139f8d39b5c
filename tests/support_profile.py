"""``profile(model, runs=30, ...)`` for tests: edgeq.api.profile with MeasureSpec settings as keyword
arguments, returning the result as its JSON dict (what ``edgeq profile --json`` prints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq import api
from edgeq.devices.connect import DeviceTarget

# Older keyword names of sensor settings -> where they live in the MeasureSpec.
_POWER_KEYS = {"power_idle_s": "idle_s", "power_rate_hz": "rate_hz"}
_THERMAL_KEYS = {
    "set_governor": "set_governor",
    "cool_down_below_c": "cool_down_below_c",
    "cool_down_timeout_s": "cool_down_timeout_s",
}


def profile(
    model: Path,
    device: str = "local",
    *,
    test_data: Any = None,
    save_outputs: Path | None = None,
    on_event: Any = None,
    timeout: float | None = None,
    profiles: tuple[Path, ...] = (),
    **settings: Any,
) -> dict[str, Any]:
    measure: dict[str, Any] = {}
    power_extra = {_POWER_KEYS[k]: settings.pop(k) for k in list(settings) if k in _POWER_KEYS}
    thermal_extra = {_THERMAL_KEYS[k]: settings.pop(k) for k in list(settings) if k in _THERMAL_KEYS}
    if timeout is not None:
        measure["timeout_s"] = timeout
    power = settings.pop("power", None)
    if isinstance(power, str):
        power = {"source": power}
    if power_extra:
        power = {**(power if isinstance(power, dict) else {}), **power_extra}
    if power is not None:
        measure["power"] = power
    thermal = settings.pop("thermal", None)
    if thermal_extra and thermal is not False:
        thermal = {**(thermal if isinstance(thermal, dict) else {}), **thermal_extra}
    if thermal is not None:
        measure["thermal"] = thermal
    measure.update(settings)
    result = api.profile(
        Path(model),
        DeviceTarget(device, profiles=tuple(profiles)),
        measure=measure,
        test_data=test_data,
        save_outputs=save_outputs,
        on_event=on_event or (lambda e: None),
    )
    return result.to_dict()
