"""Thermal state around a measurement: zones, frequencies, throttling, governor, cool-down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_power import (
    REPO,
    board_cgroup,
    home,  # noqa: F401  (a fixture: EDGEQ_HOME in tmp_path)
    put,
    run_model,
    the_result,
    warning_events,
)

from edgeq.runner.sensors.common import Warnings
from edgeq.runner.session import SensorSession
from edgeq.runner.thermal import (
    ThermalConfig,
    ThermalMonitor,
    decode_throttled,
    frequency_drops,
    list_zones,
    parse_get_throttled,
    read_governors,
    read_temp_c,
    throttled_during,
)
from edgeq.testing.emulated_sensors import EmulatedSensors

__all__ = ["board_cgroup"]  # a fixture shared with test_power


def static_tree(base: Path, **options: Any) -> Path:
    """The emulator's tree without its writer: values stay as written (the test sets them)."""
    options.setdefault("families", ("thermal", "cpufreq"))
    emu = EmulatedSensors(base, **options).build()
    return Path(emu.sysfs)


def test_zones_are_read_in_millidegrees_in_kernel_order(tmp_path: Path) -> None:
    for n, kind, milli in ((10, "gpu-thermal", 51250), (2, "cpu-thermal", 45123)):
        real = tmp_path / "devices" / "virtual" / "thermal" / f"thermal_zone{n}"
        put(real / "type", kind)
        put(real / "temp", milli)
        link = tmp_path / "class" / "thermal" / f"thermal_zone{n}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(real, link.parent))
    zones = list_zones(str(tmp_path))
    assert [(z.name, z.type) for z in zones] == [
        ("thermal_zone2", "cpu-thermal"),
        ("thermal_zone10", "gpu-thermal"),
    ]
    assert [read_temp_c(z) for z in zones] == [pytest.approx(45.123), pytest.approx(51.25)]


def test_get_throttled_bits_are_decoded() -> None:
    assert parse_get_throttled("throttled=0x50005\n") == 0x50005
    assert parse_get_throttled("throttled=0x0") == 0
    d = decode_throttled(0x50005)
    assert d["raw"] == "0x50005"
    assert d["now"] == ["under-voltage detected", "currently throttled"]
    assert d["since_boot"] == ["under-voltage has occurred", "throttling has occurred"]
    assert decode_throttled(0xE0008)["now"] == ["soft temperature limit active"]
    # during a run: bits set now, or sticky bits that were not set before it
    assert throttled_during(0x50000, 0x50000) == []
    assert throttled_during(0x0, 0x40000) == ["throttling has occurred"]
    assert throttled_during(0x10000, 0x50002) == ["arm frequency capped", "throttling has occurred"]


def test_a_frequency_drop_under_load_is_found_and_a_blip_is_not() -> None:
    ms = 1_000_000
    times = [i * 200 * ms for i in range(10)]
    held = [2400e3] * 4 + [1800e3] * 6
    drop = frequency_drops(times, held, (0, 10_000 * ms), 10.0)
    assert drop == {"peak_mhz": 2400.0, "low_mhz": 1800.0, "drop_pct": 25.0, "at_s": 0.8}
    blip = [2400e3] * 4 + [1800e3] + [2400e3] * 5
    assert frequency_drops(times, blip, (0, 10_000 * ms), 10.0) is None
    assert frequency_drops(times, held, (0, 600 * ms), 10.0) is None  # the drop is after the window
    small = [2400e3] * 4 + [2300e3] * 6
    assert frequency_drops(times, small, (0, 10_000 * ms), 10.0) is None  # -4 %: within tolerance


def test_throttling_under_load_is_detected_from_the_frequency_and_the_firmware(
    tiny_model: Path, tmp_path: Path, board_cgroup: str
) -> None:
    # The emulated board heats only with the runner's own CPU time (its cgroup); above 52 °C the
    # writer lowers scaling_max_freq step by step, as a cpufreq cooling device does.
    opts = {
        "families": ("thermal", "cpufreq"),
        "util_source": f"cgroup:{board_cgroup}",
        "ambient_c": 40.0,
        "heat_c": 60.0,
        "tau_s": 0.6,
        "throttle_c": 52.0,
    }
    with EmulatedSensors(tmp_path / "emu", **opts) as emu:
        # Starting the runner heats the board too: cool down first, so the window starts cool.
        thermal = {
            "set_governor": "performance",
            "rate_hz": 10,
            "get_throttled": True,
            "cool_down_below_c": 44,
        }
        code, events, err = run_model(
            tiny_model, runs=10, warmup=0, min_seconds=3, thermal=thermal, sysfs_root=str(emu.sysfs),
            vcgencmd=str(emu.vcgencmd), cgroup=board_cgroup,
        )  # fmt: skip
    assert code == 0, err
    th = the_result(events)["thermal"]
    thr = th["throttling"]
    assert thr["detected"], th
    (drop,) = thr["frequency_drops"]
    assert drop["policy"] == "policy0" and drop["counted"] and drop["drop_pct"] >= 10
    assert thr["capped"][0]["max_mhz_low"] < thr["capped"][0]["max_mhz_before"]
    assert "throttling has occurred" in thr["get_throttled"]["after"]["since_boot"]
    assert any(r.startswith("firmware: ") for r in thr["reasons"])
    cpu = th["cpufreq"][0]
    assert cpu["cur_mhz"]["min"] < cpu["cur_mhz"]["max"]
    zone = th["zones"][0]
    assert zone["type"] == "cpu-thermal" and zone["max_c"] > 52 > zone["before_c"]
    assert th["cooldown"]["reached"] is True
    assert [w["code"] for w in warning_events(events)] == ["thermal.throttled"]


def test_governor_is_checked_set_for_the_run_and_restored(tiny_model: Path, tmp_path: Path) -> None:
    sysfs = static_tree(tmp_path / "emu", governor="ondemand")
    code, events, _ = run_model(tiny_model, runs=5, thermal={}, sysfs_root=str(sysfs))
    assert code == 0
    (w,) = warning_events(events)
    assert (
        w["code"] == "thermal.governor"
        and "policy0=ondemand" in w["message"]
        and "--set-governor performance" in w["hint"]
    )

    code, events, _ = run_model(
        tiny_model, runs=5, thermal={"set_governor": "performance"}, sysfs_root=str(sysfs)
    )
    assert code == 0 and not warning_events(events)
    th = the_result(events)["thermal"]
    assert th["governor"]["set_to"] == "performance" and th["governor"]["restored"] is True
    assert th["cpufreq"][0]["governor"] == "ondemand" and th["cpufreq"][0]["governor_during"] == "performance"
    assert read_governors(str(sysfs)) == {"policy0": "ondemand"}

    code, events, _ = run_model(tiny_model, runs=5, thermal={"set_governor": "turbo"}, sysfs_root=str(sysfs))
    assert code == 0
    assert "thermal.governor_unavailable" in [w["code"] for w in warning_events(events)]
    assert read_governors(str(sysfs)) == {"policy0": "ondemand"}


def test_governor_is_restored_when_the_runner_is_terminated(tiny_model: Path, tmp_path: Path) -> None:
    """SSH stops a timed-out run with SIGTERM: the governor must not stay at performance."""
    sysfs = static_tree(tmp_path / "emu", governor="schedutil")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edgeq.runner", "run", "--model", str(tiny_model), "--spec", json.dumps(
                {"runs": 1, "min_seconds": 120, "thermal": {"set_governor": "performance"}, "sysfs_root": str(sysfs)}
            ),
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event["event"] == "progress" and event["phase"] == "measure":
                break
        assert read_governors(str(sysfs)) == {"policy0": "performance"}
        proc.send_signal(signal.SIGTERM)
        rest = proc.stdout.read()
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert json.loads(rest.strip().splitlines()[-1])["event"] == "error"
    assert read_governors(str(sysfs)) == {"policy0": "schedutil"}


@pytest.mark.usefixtures("home")
def test_governor_is_restored_when_a_local_run_times_out(tiny_model: Path, tmp_path: Path) -> None:
    """The local device stops a timed-out runner as SSH does (TERM, then KILL after a grace period)."""
    from edgeq import api
    from edgeq.errors import DeviceError

    sysfs = static_tree(tmp_path / "emu", governor="schedutil")
    measure = {
        "runs": 1,
        "warmup": 0,
        "min_seconds": 120,
        "timeout_s": 4,
        "thermal": {"set_governor": "performance"},
        "sysfs_root": str(sysfs),
    }
    with pytest.raises(DeviceError, match="timed out"):
        api.profile(tiny_model, measure=measure)
    assert read_governors(str(sysfs)) == {"policy0": "schedutil"}


def test_local_transport_terminates_before_it_kills(tmp_path: Path) -> None:
    from edgeq.devices.transports.local import LocalTransport
    from edgeq.devices.transports.transport import STOP_GRACE_S
    from edgeq.errors import DeviceError

    marker = tmp_path / "cleaned-up"
    polite = (
        "import pathlib, signal, sys, time\n"
        "def bye(*_):\n    pathlib.Path(sys.argv[1]).write_text('yes')\n    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    for stream in (None, lambda line: None):
        with pytest.raises(DeviceError, match="timed out"):
            LocalTransport().run(
                [sys.executable, "-c", polite, str(marker)], timeout=1, on_stdout_line=stream
            )
        assert marker.read_text() == "yes"
        marker.unlink()
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
    t0 = time.monotonic()
    with pytest.raises(DeviceError, match="timed out"):
        LocalTransport().run([sys.executable, "-c", stubborn], timeout=0.5, on_stdout_line=lambda line: None)
    assert time.monotonic() - t0 < 0.5 + STOP_GRACE_S + 5


def test_governor_is_restored_when_the_measurement_fails(tmp_path: Path) -> None:
    sysfs = static_tree(tmp_path / "emu", governor="powersave")
    session = SensorSession(None, ThermalConfig({"set_governor": "performance"}), str(sysfs))
    with pytest.raises(RuntimeError, match="interpreter crashed"), session:
        session.prepare()
        assert read_governors(str(sysfs)) == {"policy0": "performance"}
        raise RuntimeError("interpreter crashed")
    assert read_governors(str(sysfs)) == {"policy0": "powersave"}
    assert session.thermal is not None and session.thermal.governor_restored is True


def test_cool_down_that_does_not_get_there_warns_and_measures_anyway(
    tiny_model: Path, tmp_path: Path
) -> None:
    sysfs = static_tree(tmp_path / "emu", initial_c=90.0)  # no writer: it never cools
    cfg = {"cool_down_below_c": 50, "cool_down_timeout_s": 1.0, "cool_down_poll_s": 0.1, "governor": None}
    t0 = time.monotonic()
    code, events, _ = run_model(tiny_model, runs=5, thermal=cfg, sysfs_root=str(sysfs))
    assert code == 0 and time.monotonic() - t0 < 30
    r = the_result(events)
    cool = r["thermal"]["cooldown"]
    assert cool["reached"] is False and cool["start_c"] == 90.0 and 1.0 <= cool["waited_s"] < 2.0
    assert [w["code"] for w in warning_events(events)] == ["thermal.cooldown_timeout"]
    assert r["latency_us"]["n"] == 5
    assert ("cooldown", 1, 1) in [
        (e["phase"], e["done"], e["total"]) for e in events if e["event"] == "progress"
    ]


def test_cool_down_waits_until_the_zone_is_below_the_target(tiny_model: Path, tmp_path: Path) -> None:
    # Hot (75 °C) and static until the runner is waiting; then the writer lets it relax towards
    # 40 °C with a 0.5 s time constant (load adds nothing).
    opts = {"families": ("thermal",), "initial_c": 75.0, "ambient_c": 40.0, "heat_c": 0.0, "tau_s": 0.5}
    emu = EmulatedSensors(tmp_path / "emu", **opts).build()
    cfg = {"cool_down_below_c": 60, "cool_down_timeout_s": 60, "cool_down_poll_s": 0.05}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edgeq.runner", "run", "--model", str(tiny_model),
            "--spec", json.dumps({"runs": 5, "thermal": cfg, "sysfs_root": str(emu.sysfs)}),
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    events = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] == "progress" and events[-1]["phase"] == "cooldown":
                break
        time.sleep(0.3)  # still hot: it keeps waiting
        emu.start(rebuild=False)
        events += [json.loads(line) for line in proc.stdout]
        assert proc.wait(timeout=60) == 0
    finally:
        emu.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    th = the_result(events)["thermal"]
    cool = th["cooldown"]
    assert cool["reached"] is True and cool["start_c"] == 75.0 and cool["end_c"] < 60
    assert 0.3 < cool["waited_s"] < 10
    assert th["zones"][0]["before_c"] < 60
    assert "thermal.cooldown_timeout" not in [w["code"] for w in warning_events(events)]


def test_an_unreadable_zone_is_one_warning_and_the_others_are_recorded(
    tiny_model: Path, tmp_path: Path
) -> None:
    sysfs = static_tree(tmp_path / "emu", initial_c=47.5)
    temp = sysfs / "devices" / "virtual" / "thermal" / "thermal_zone1" / "temp"
    temp.unlink()
    temp.mkdir()  # read() fails with EISDIR, like a sensor that refuses reads
    code, events, _ = run_model(
        tiny_model,
        runs=200,
        min_seconds=0.5,
        thermal={"rate_hz": 20, "governor": None},
        sysfs_root=str(sysfs),
    )
    assert code == 0
    (w,) = warning_events(events)
    assert w["code"] == "thermal.zone_unreadable:thermal_zone1" and "gpu-thermal" in w["message"]
    th = the_result(events)["thermal"]
    assert th["samples"] >= 5  # sampled many times, warned once
    assert th["zones"][0]["max_c"] == 47.5 and th["zones"][1]["max_c"] is None


def test_no_thermal_zones_or_cpufreq_are_single_warnings(tiny_model: Path, tmp_path: Path) -> None:
    empty = tmp_path / "sys"
    empty.mkdir()
    code, events, _ = run_model(tiny_model, runs=5, thermal={}, sysfs_root=str(empty))
    assert code == 0
    assert [w["code"] for w in warning_events(events)] == ["thermal.no_zones", "thermal.no_cpufreq"]
    th = the_result(events)["thermal"]
    assert th["zones"] == [] and th["cpufreq"] == [] and th["throttling"]["detected"] is False


def test_missing_zone_types_are_named(tmp_path: Path) -> None:
    sysfs = static_tree(tmp_path / "emu")
    w = Warnings()
    mon = ThermalMonitor(ThermalConfig({"zones": ["cpu-thermal", "tj-thermal"]}), str(sysfs), "vcgencmd", w)
    mon.open()
    assert [z.type for z in mon.zones] == ["cpu-thermal"]
    assert w.items[0]["code"] == "thermal.zone_missing" and "tj-thermal" in w.items[0]["message"]


def test_emulated_vcgencmd_prints_the_real_formats(tmp_path: Path) -> None:
    opts = {
        "families": ("thermal",),
        "throttled_bits": 0x50005,
        "initial_c": 48.3,
        "heat_c": 0.0,
        "ambient_c": 48.3,
    }
    with EmulatedSensors(tmp_path / "emu", **opts) as emu:

        def vc(*args: str) -> str:
            return subprocess.run(
                [str(emu.vcgencmd), *args], capture_output=True, text=True, check=True
            ).stdout

        assert vc("get_throttled") == "throttled=0x50005\n"
        assert vc("measure_temp") == "temp=48.3'C\n"
        pmic = vc("pmic_read_adc").splitlines()
        assert pmic[0].startswith(" 3V7_WL_SW_A current(0)=") and pmic[0].endswith("A")
        assert "     EXT5V_V volt(24)=" in "\n".join(pmic)
        assert vc("pmic_read_adc", "VDD_CORE_V").startswith("  VDD_CORE_V volt(15)=0.")
        bad = subprocess.run([str(emu.vcgencmd), "get_camera"], capture_output=True, text=True)
        assert bad.returncode != 0 and 'error_msg="Command not registered"' in bad.stdout
