"""The measurement request on the host: :class:`MeasureSpec` (defined with the runner, which reads it
on the device) and how a request is checked before anything is sent.

Defaults are resolved once, in one order: the spec's built-in defaults < the device profile
(:meth:`edgeq.devices.profile.DeviceProfile.measure_spec`) < the command line (``edgeq/cli/measure.py``
maps its options onto spec settings) or an API caller's overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgeq.errors import UserInputError
from edgeq.runner.measure_spec import DELEGATES, MeasureSpec, setting_help
from edgeq.runner.protocol import RunnerError

__all__ = ["DELEGATES", "MeasureSpec", "build_spec", "setting_help"]


def build_spec(values: Mapping[str, Any], where: str, names: Mapping[str, str] | None = None) -> MeasureSpec:
    """A MeasureSpec from ``values``; a bad value is one UserInputError naming ``where`` it came from.

    ``names`` maps a setting to what the user wrote for it (a profile key such as ``warmup_runs``).
    The power and thermal tables are checked with the runner's own parsers, so a typo fails here,
    before anything is deployed.
    """
    try:
        spec = MeasureSpec.from_dict(values)
        _check_sensor_config(spec)
    except RunnerError as exc:
        message = exc.message
        for setting, written in (names or {}).items():
            if written.startswith("--"):
                message = message.replace(f"measurement setting {setting} ", f"{written} ")
            else:
                message = message.replace(f"measurement setting {setting} ", f"key '{written}' ")
        raise UserInputError(
            message if message.startswith("--") else f"{where}: {message}", exc.hint
        ) from None
    return spec


def _check_sensor_config(spec: MeasureSpec) -> None:
    from edgeq.runner.sensors import PowerConfig
    from edgeq.runner.thermal import ThermalConfig

    if spec.power is not None:
        PowerConfig(spec.power, "power")
    if spec.thermal is not None:
        ThermalConfig(spec.thermal, "thermal")
