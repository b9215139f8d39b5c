"""Power and thermal in the report: the PNG plot and the Markdown section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_power import MARKS, FakePower, _trace

from edgeq.report.markdown import report_markdown, sensors_markdown
from edgeq.report.plot import plot_power
from edgeq.runner.power import PowerMeter, summarize
from edgeq.runner.sensors import PowerConfig
from edgeq.runner.sensors.common import Warnings

PNG = b"\x89PNG\r\n\x1a\n"


def a_result() -> dict[str, Any]:
    t = np.arange(0.0, 3.6, 0.01)
    p = np.where((t >= 1.5) & (t <= 3.5), 1500.0, 1000.0) + np.random.default_rng(1).normal(0, 5, t.size)
    power = summarize(
        PowerMeter(FakePower(), PowerConfig({"source": "ina2xx"})),
        _trace(t, p.tolist(), MARKS),
        1000,
        Warnings(),
    )
    power["window"]["lengthened"] = True
    thermal = {
        "zones": [
            {"zone": "thermal_zone0", "type": "cpu-thermal", "before_c": 45.0, "after_c": 61.5, "max_c": 62.0}
        ],
        "cpufreq": [
            {
                "policy": "policy0",
                "cpus": "0 1 2 3",
                "governor": "schedutil",
                "governor_during": "performance",
                "min_mhz": 600.0,
                "max_mhz": 2400.0,
                "cur_mhz": {"min": 1800.0, "max": 2400.0},
            }
        ],
        "governor": {"set_to": "performance", "restored": True},
        "throttling": {"detected": True, "reasons": ["policy0: 2400.0 → 1800.0 MHz (-25.0 %) under load"]},
        "cooldown": {"below_c": 50, "reached": True, "waited_s": 12.5, "start_c": 58.0, "end_c": 49.9},
        "trace": {"t_ms": [0.0, 1000.0, 2000.0, 3000.0], "hottest_c": [45.0, 50.0, 58.0, 62.0]},
    }
    warnings = [{"code": "thermal.throttled", "message": "the device throttled", "hint": "cool it better"}]
    return {
        "schema": "edgeq.result/1",
        "device": {"name": "pi5-lab", "arch": "aarch64", "runtime": "ai-edge-litert"},
        "power": power,
        "thermal": thermal,
        "warnings": warnings,
    }


def test_power_plot_is_a_png_with_the_window_and_temperature(tmp_path: Path) -> None:
    result = a_result()
    dest = plot_power(result, tmp_path / "out" / "power.png")
    assert dest == tmp_path / "out" / "power.png"
    data = dest.read_bytes()
    assert data.startswith(PNG) and len(data) > 10_000
    import matplotlib.image

    img = matplotlib.image.imread(str(dest))
    assert img.shape[:2] == (440, 990)
    # the measured window is shaded orange somewhere in the plot
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    assert ((r > 0.95) & (g > 0.8) & (g < 0.95) & (b < 0.85)).sum() > 1000
    assert sorted(p.name for p in dest.parent.iterdir()) == ["power.png"]  # no temporary left


def test_no_trace_no_plot(tmp_path: Path) -> None:
    assert plot_power({"power": {"available": False, "source": "ina2xx"}}, tmp_path / "p.png") is None
    assert plot_power({}, tmp_path / "p.png") is None
    assert not list(tmp_path.iterdir())


def test_markdown_has_the_power_and_thermal_sections() -> None:
    result = a_result()
    report = {"dataset": {"name": "digits"}, "profile": result, "plots": {"power": "power.png"}}
    md = report_markdown(report)
    e = result["power"]["energy_mj_per_inference"]
    assert "### Power and energy" in md and f"{e:.4g} ± " in md and "mJ |" in md
    assert "| power idle | 999." in md or "| power idle | 1000." in md
    assert "(lengthened for the sensor)" in md
    assert "![power over time, measured window shaded](power.png)" in md
    assert "### Thermal state" in md and "| cpu-thermal (thermal_zone0) | 45.0 °C | 62.0 °C | 61.5 °C |" in md
    assert "governor set to performance for the run, restored afterwards" in md
    assert "cool-down below 50 °C: reached after 12.5 s" in md
    assert "**throttled during the measurement**" in md
    assert "- `thermal.throttled`: the device throttled — cool it better" in md


def test_markdown_says_what_a_sensor_cannot_see() -> None:
    pmic = {
        "available": True,
        "source": "rpi5-pmic",
        "note": "sum of the PMIC's rails: it undercounts the 5 V input",
        "sensor": {"name": "pmic_read_adc", "rails": ["VDD_CORE"]},
        "power_mw": {"idle": 1500.0, "active_mean": 4000.0, "active_p95": 4100.0},
        "energy_mj_per_inference": 0.5,
        "energy_mj_per_inference_sigma": 0.01,
    }
    text = "\n".join(sensors_markdown({"power": pmic}))
    assert "undercounts the 5 V input" in text and "rails VDD_CORE" in text
    missing = "\n".join(
        sensors_markdown({"power": {"available": False, "source": "rapl", "reason": "Permission denied"}})
    )
    assert "Not measured: Permission denied" in missing
    assert sensors_markdown({"schema": "edgeq.result/1"}) == []


@pytest.mark.parametrize("key", ["power", "thermal"])
def test_report_without_sensors_is_unchanged(key: str) -> None:
    result = a_result()
    del result[key]
    md = report_markdown({"profile": result})
    assert ("### Power and energy" in md) == (key != "power")
