"""Power on the device: every reader on real-format fixtures, energy accounting, the runner with
emulated sensors (a fake sysfs tree kept alive by a writer following real CPU time)."""

from __future__ import annotations

import ast
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import missing_prerequisite

from edgeq.errors import UserInputError
from edgeq.runner.power import PowerMeter, PowerTrace, summarize, unwrap_counter
from edgeq.runner.sensors import PowerConfig, open_reader
from edgeq.runner.sensors.common import Reader, SensorError, Warnings
from edgeq.runner.sensors.external import External
from edgeq.runner.sensors.ina2xx import Ina2xx
from edgeq.runner.sensors.ina3221 import Ina3221
from edgeq.runner.sensors.jetson_iio import JetsonIio
from edgeq.runner.sensors.rapl import Rapl
from edgeq.runner.sensors.rpi5_pmic import RpiPmic, parse_pmic_read_adc
from edgeq.testing.emulated_sensors import MODULE, EmulatedSensors, make_board_cgroup, remove_board_cgroup

REPO = Path(__file__).resolve().parent.parent


def put(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def hwmon(root: Path, n: int, name: str, files: dict[str, Any], *, legacy: bool = False) -> Path:
    """``class/hwmon/hwmonN`` → ``devices/.../hwmonN`` like the kernel (legacy: attrs under device/)."""
    real = root / "devices" / "platform" / f"i2c-{n}" / "hwmon" / f"hwmon{n}"
    attrs = real / "device" if legacy else real
    put(attrs / "name", name)
    for key, value in files.items():
        put(attrs / key, value)
    link = root / "class" / "hwmon" / f"hwmon{n}"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(real, link.parent))
    return attrs


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


# --------------------------------------------------------------------------------------------------
# readers on fixtures in the kernel's (and vcgencmd's) real formats and units


def test_ina219_power1_input_is_microwatts_and_found_by_name(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "acpitz", {"temp1_input": 27800})
    hwmon(tmp_path, 3, "ina219", {"power1_input": 1234567, "in1_input": 5012, "curr1_input": 246})
    r = Ina2xx(str(tmp_path))
    assert r.read() == pytest.approx(1234.567)  # µW → mW
    assert r.name == "ina219" and r.dir.endswith("hwmon3") and r.update_interval_s is None
    assert r.describe()["attribute"] == "power1_input"


def test_ina2xx_without_power1_input_multiplies_bus_mv_by_ma(tmp_path: Path) -> None:
    hwmon(tmp_path, 1, "ina226", {"in1_input": 5012, "curr1_input": 246, "update_interval": 35}, legacy=True)
    r = Ina2xx(str(tmp_path), sensor="ina226")
    assert r.read() == pytest.approx(5012 * 246 / 1000)  # mV·mA = µW → mW
    assert r.update_interval_s == pytest.approx(0.035)
    meter = PowerMeter(r, PowerConfig({"source": "ina2xx"}))
    assert meter.target_hz == pytest.approx(1000 / 35)  # never faster than the sensor converts
    assert meter.lag_s() == pytest.approx(0.035)


def test_ina2xx_missing_or_unreadable_is_a_sensor_error(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="no hwmon device named ina219"):
        Ina2xx(str(tmp_path), sensor="ina219")
    attrs = hwmon(tmp_path, 0, "ina219", {})
    (attrs / "power1_input").mkdir()  # exists, but reading it fails (EISDIR)
    with pytest.raises(SensorError, match="cannot be read"):
        Ina2xx(str(tmp_path))


def _ina3221(
    root: Path, n: int, rails: list[tuple[str, int, int]], enabled: tuple[int, ...] = (1, 1, 1)
) -> None:
    files: dict[str, Any] = {"update_interval": 20, "samples": 4}
    for ch, (label, mv, ma) in enumerate(rails, start=1):
        files.update(
            {
                f"in{ch}_label": label,
                f"in{ch}_input": mv,
                f"curr{ch}_input": ma,
                f"in{ch}_enable": enabled[ch - 1],
            }
        )
    hwmon(root, n, "ina3221", files)


def test_ina3221_rail_power_is_mv_times_ma_summed_over_chosen_rails(tmp_path: Path) -> None:
    _ina3221(tmp_path, 1, [("VDD_IN", 5048, 1136), ("VDD_CPU_GPU_CV", 5040, 208), ("VDD_SOC", 5032, 384)])
    default = Ina3221(str(tmp_path))
    assert default.rails == ["VDD_IN"]  # the whole input alone: the others are parts of it
    assert default.read() == pytest.approx(5048 * 1136 / 1000)
    parts = Ina3221(str(tmp_path), ["vdd_cpu_gpu_cv", "VDD_SOC"])
    assert parts.read() == pytest.approx((5040 * 208 + 5032 * 384) / 1000)
    assert default.update_interval_s == pytest.approx(0.020)
    with pytest.raises(SensorError, match="no rail GPU") as info:
        Ina3221(str(tmp_path), ["GPU"])
    assert "VDD_SOC" in str(info.value)


def test_ina3221_without_a_total_rail_sums_enabled_rails(tmp_path: Path) -> None:
    # Xavier-style labels, channel 3 disabled.
    _ina3221(tmp_path, 2, [("GPU", 5000, 100), ("CPU", 5000, 300), ("SOC", 5000, 900)], enabled=(1, 1, 0))
    r = Ina3221(str(tmp_path))
    assert sorted(r.rails) == ["CPU", "GPU"]
    assert r.read() == pytest.approx(5000 * 400 / 1000)


def test_jetson_jetpack4_iio_in_power_is_milliwatts(tmp_path: Path) -> None:
    real = tmp_path / "devices" / "7000c400.i2c" / "i2c-6" / "6-0040" / "iio:device0"
    for ch, (rail, mw) in enumerate((("POM_5V_IN", 3512), ("POM_5V_GPU", 118), ("POM_5V_CPU", 1422))):
        put(real / f"rail_name_{ch}", rail)
        put(real / f"in_power{ch}_input", mw)
        put(real / f"in_current{ch}_input", round(mw / 5))
        put(real / f"in_voltage{ch}_input", 5000)
    link = tmp_path / "bus" / "iio" / "devices" / "iio:device0"
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(real, link.parent))
    r = JetsonIio(str(tmp_path))
    assert r.rails == ["POM_5V_IN"] and r.read() == pytest.approx(3512.0)
    assert JetsonIio(str(tmp_path), ["POM_5V_GPU", "POM_5V_CPU"]).read() == pytest.approx(118 + 1422)


# A Raspberry Pi 5's `vcgencmd pmic_read_adc` under load, as the tool prints it (including a rail that
# has no current reading and the RTC battery's voltage).
PMIC_OUTPUT = """ 3V7_WL_SW_A current(0)=0.09368929A
   3V3_SYS_A current(1)=0.08783370A
   1V8_SYS_A current(2)=0.18054710A
  DDR_VDD2_A current(3)=0.22543980A
  DDR_VDDQ_A current(4)=0.06666720A
   1V1_SYS_A current(5)=0.17566740A
    0V8_SW_A current(6)=0.37670900A
  VDD_CORE_A current(7)=6.22421000A
   3V3_DAC_A current(17)=0.00006105A
   3V3_ADC_A current(18)=0.00036630A
   0V8_AON_A current(16)=0.00305250A
      HDMI_A current(22)=0.02417580A
 3V7_WL_SW_V volt(8)=3.69977600V
   3V3_SYS_V volt(9)=3.31003300V
   1V8_SYS_V volt(10)=1.80512600V
  DDR_VDD2_V volt(11)=1.10476100V
  DDR_VDDQ_V volt(12)=0.60146460V
   1V1_SYS_V volt(13)=1.11025500V
    0V8_SW_V volt(14)=0.80146440V
  VDD_CORE_V volt(15)=0.86173300V
   3V3_DAC_V volt(20)=3.31318300V
   3V3_ADC_V volt(21)=3.30677300V
   0V8_AON_V volt(19)=0.80029220V
      HDMI_V volt(23)=5.08664000V
     EXT5V_V volt(24)=5.09066000V
      BATT_V volt(25)=nanV
"""


def test_rpi5_pmic_parses_every_rail_and_sums_volts_times_amps(tmp_path: Path) -> None:
    rails = parse_pmic_read_adc(PMIC_OUTPUT)
    assert len(rails) == 13  # 12 rails with both readings, EXT5V with a voltage only; BATT is nan
    assert rails["VDD_CORE"] == {"current_a": 6.22421, "volt_v": 0.861733}
    assert rails["EXT5V"] == {"volt_v": 5.09066} and "BATT" not in rails
    expected_w = 0.0
    for line in PMIC_OUTPUT.splitlines():
        name, value = line.split()[0], line.split("=")[1]
        if name.endswith("_A"):
            volt_line = next(x for x in PMIC_OUTPUT.splitlines() if x.split()[0] == name[:-2] + "_V")
            expected_w += float(value[:-1]) * float(volt_line.split("=")[1][:-1])
    fake = script(
        tmp_path / "vcgencmd",
        f"import sys\nassert sys.argv[1:] == ['pmic_read_adc']\nprint({PMIC_OUTPUT!r}, end='')\n",
    )
    r = RpiPmic(str(fake))
    assert r.read() == pytest.approx(expected_w * 1000)  # W → mW
    assert "undercounts the 5 V input" in r.describe()["scope"]
    assert RpiPmic(str(fake), ["VDD_CORE"]).read() == pytest.approx(6.22421 * 0.861733 * 1000)
    with pytest.raises(SensorError, match="command not found"):
        RpiPmic(str(tmp_path / "no-vcgencmd"))


def _rapl(root: Path, domains: dict[str, tuple[str, int, int]]) -> None:
    for d, (name, energy, max_range) in domains.items():
        real = root / "devices" / "virtual" / "powercap" / "intel-rapl" / d
        put(real / "name", name)
        put(real / "energy_uj", energy)
        put(real / "max_energy_range_uj", max_range)
        link = root / "class" / "powercap" / d
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(real, link.parent))


def test_rapl_reads_package_microjoules_not_its_subzones(tmp_path: Path) -> None:
    _rapl(
        tmp_path,
        {
            "intel-rapl:0": ("package-0", 123456789, 262143328850),
            "intel-rapl:0:0": ("core", 99999, 262143328850),
            "intel-rapl:1": ("package-1", 42, 65532610987),
        },
    )
    r = Rapl(str(tmp_path))
    assert r.domains == ["intel-rapl:0", "intel-rapl:1"] and r.kind == "energy"
    assert r.read() == (123456789.0, 42.0)
    assert r.max_range_uj == (262143328850.0, 65532610987.0)
    assert Rapl(str(tmp_path), ["intel-rapl:0:0"]).read() == (99999.0,)


def test_unwrap_counter_adds_the_range_at_a_wrap_and_ignores_a_reset() -> None:
    cum, wraps, resets = unwrap_counter([999_000, 999_990, 500, 1_500], max_range=1_000_000)
    assert cum.tolist() == [0, 990, 990 + 510, 990 + 510 + 1000] and (wraps, resets) == (1, 0)
    cum, wraps, resets = unwrap_counter([100.0, 200.0, 5.0, 7.0], max_range=None)
    assert cum.tolist() == [0, 100, 105, 107] and (wraps, resets) == (0, 1)  # reset to ~0: 5 since
    cum, wraps, resets = unwrap_counter([500_000, 600_000, 599_990, 700_000], max_range=1_000_000)
    assert cum.tolist() == [0, 100_000, 100_000, 200_000] and (wraps, resets) == (
        0,
        1,
    )  # a glitch is not a wrap


def test_external_meter_prints_watts_or_joules(tmp_path: Path) -> None:
    watts = script(tmp_path / "watts", "print('power: 3.25 W')\n")
    w = External([str(watts)], "W", sample=False, wrap_j=None, timeout_s=2)
    assert w.kind == "power" and w.read() == pytest.approx(3250.0)
    joules = script(tmp_path / "joules", "print('12.5')\n")
    j = External([str(joules)], "J", sample=False, wrap_j=100.0, timeout_s=2)
    assert j.kind == "energy" and not j.sampled and j.read() == (12.5e6,) and j.max_range_uj == (1e8,)
    cfg = PowerConfig({"source": "external", "command": f"{watts} --now", "unit": "W"})
    assert cfg.options["command"] == [str(watts), "--now"]
    broken = script(tmp_path / "broken", "print('n/a')\n")
    with pytest.raises(SensorError, match="printed no number"):
        External([str(broken)], "W", sample=False, wrap_j=None, timeout_s=2)


def test_auto_finds_the_board_sensor_and_none_is_none(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "ina219", {"power1_input": 2000000})
    reader = open_reader(PowerConfig({"source": "auto"}), str(tmp_path), str(tmp_path / "no-vcgencmd"))
    assert isinstance(reader, Ina2xx)
    assert open_reader(PowerConfig({"source": "none"}), str(tmp_path), "vcgencmd") is None
    with pytest.raises(SensorError, match="no power sensor found"):
        open_reader(PowerConfig({}), str(tmp_path / "empty"), str(tmp_path / "no-vcgencmd"))


@pytest.mark.parametrize(
    "data, match",
    [
        ({"source": "ina999"}, "source"),
        ({"source": "rapl", "rate": 5}, "unknown key"),
        ({"idle_s": -1}, "idle_s"),
        ({"source": "external"}, "command"),
        ({"rate_hz": "fast"}, "rate_hz"),
    ],
)
def test_bad_power_config_is_one_line(data: dict[str, Any], match: str) -> None:
    from edgeq.runner.protocol import RunnerError

    with pytest.raises(RunnerError, match=match) as info:
        PowerConfig(data)
    assert info.value.kind == "bad_input" and "\n" not in info.value.message


# --------------------------------------------------------------------------------------------------
# energy accounting on synthetic traces (exact expectations)


class FakePower(Reader):
    source = "fake"

    def __init__(self, update_interval_s: float | None = None) -> None:
        self.update_interval_s = update_interval_s


class FakeCounter(Reader):
    kind = "energy"
    source = "fake-counter"

    def __init__(self, max_range: float) -> None:
        self.max_range_uj = (max_range,)


def _trace(times_s: np.ndarray, values: list[Any], marks_s: dict[str, float]) -> PowerTrace:
    tr = PowerTrace()
    base = 10**12
    tr.times = [base + int(round(t * 1e9)) for t in times_s]
    tr.values = values
    tr.marks = {k: base + int(round(v * 1e9)) for k, v in marks_s.items()}
    return tr


MARKS = {"start": 0.0, "idle_start": 0.2, "idle_end": 1.2, "measure_start": 1.5, "measure_end": 3.5}


def test_energy_per_inference_is_net_of_idle_with_an_uncertainty() -> None:
    t = np.arange(0.0, 3.6, 0.01)
    rng = np.random.default_rng(0)
    p = np.where((t >= 1.5) & (t <= 3.5), 1500.0, 1000.0) + rng.normal(0, 5, t.size)
    meter = PowerMeter(FakePower(), PowerConfig({"source": "ina2xx", "lag_ms": 0}))
    w = Warnings()
    out = summarize(meter, _trace(t, p.tolist(), MARKS), invokes=1000, warnings=w)
    assert out["power_mw"]["idle"] == pytest.approx(1000, abs=3)
    assert out["power_mw"]["active_mean"] == pytest.approx(1500, rel=0.01)
    assert out["power_mw"]["active_p95"] > out["power_mw"]["active_mean"]
    # 500 mW above idle for 2 s = 1000 mJ over 1000 inferences
    assert out["energy_mj_per_inference"] == pytest.approx(1.0, rel=0.01)
    sigma = out["energy_mj_per_inference_sigma"]
    assert 0 < sigma < 0.02 and "1 sigma" in out["energy_uncertainty"]
    assert out["samples"]["measure"] == pytest.approx(200, abs=2) and out["samples"]["idle"] == pytest.approx(
        100, abs=2
    )
    assert out["window"]["measure_s"] == pytest.approx(2.0) and out["window"]["invokes"] == 1000
    assert out["trace"]["marks_ms"]["measure"] == [1500.0, 3500.0]
    assert len(out["trace"]["t_ms"]) == len(out["trace"]["mw"]) == t.size
    assert w.items == []


def test_sensor_lag_is_taken_out_of_the_window() -> None:
    t = np.arange(0.0, 3.8, 0.01)
    # the sensor reports each value 50 ms late
    p = np.where((t >= 1.55) & (t <= 3.55), 1500.0, 1000.0)
    cfg = PowerConfig({"source": "ina2xx", "lag_ms": 50})
    out = summarize(PowerMeter(FakePower(), cfg), _trace(t, p.tolist(), MARKS), 1000, Warnings())
    assert out["energy_mj_per_inference"] == pytest.approx(1.0, rel=0.01)
    no_lag = summarize(
        PowerMeter(FakePower(), PowerConfig({"source": "ina2xx", "lag_ms": 0})),
        _trace(t, p.tolist(), MARKS),
        1000,
        Warnings(),
    )
    assert no_lag["energy_mj_per_inference"] < 0.98  # 50 ms of the window read as idle


def test_an_energy_counter_that_wraps_gives_the_right_energy() -> None:
    max_range = 1_000_000.0  # µJ: wraps every 0.25 s at 4 W, every 0.5 s at 2 W
    t = np.arange(0.0, 3.6, 0.01)
    power_mw = np.where(t < 1.5, 2000.0, 4000.0)
    energy_uj = np.concatenate([[0.0], np.cumsum(power_mw[:-1] * 0.01 * 1000.0)]) + 700_000.0
    values = [(float(e % max_range),) for e in energy_uj]
    w = Warnings()
    out = summarize(
        PowerMeter(FakeCounter(max_range), PowerConfig({"source": "rapl"})), _trace(t, values, MARKS), 500, w
    )
    assert out["sensor"]["wraps"] >= 10  # 3 J of idle and 8 J of load through a 1 J counter
    assert out["power_mw"]["idle"] == pytest.approx(2000, rel=1e-3)
    assert out["energy_mj"]["measure"] == pytest.approx(4000 * 2.0, rel=1e-3)  # mW·s = mJ
    assert out["energy_mj_per_inference"] == pytest.approx(2000 * 2.0 / 500, rel=1e-3)
    naive = (values[350][0] - values[150][0]) / 1000.0
    assert abs(naive - out["energy_mj"]["measure"]) > 100  # what ignoring the wraps would say
    assert w.items == []


def test_too_few_samples_is_one_warning() -> None:
    t = np.arange(0.0, 3.6, 0.5)  # 2 Hz: 4-5 samples in the window
    w = Warnings()
    summarize(
        PowerMeter(FakePower(), PowerConfig({"source": "ina2xx"})), _trace(t, [1000.0] * t.size, MARKS), 10, w
    )
    summarize(
        PowerMeter(FakePower(), PowerConfig({"source": "ina2xx"})), _trace(t, [1000.0] * t.size, MARKS), 10, w
    )
    assert [x["code"] for x in w.items].count("power.too_few_samples") == 1


# --------------------------------------------------------------------------------------------------
# the runner with emulated sensors (``tiny_model`` is the session fixture of support_models)


@pytest.fixture
def board_cgroup() -> Iterator[str]:
    """A cgroup standing for the board: the emulated sensor follows its CPU time, not the neighbours'."""
    path = make_board_cgroup(f"edgeq-test-{os.getpid()}-{time.monotonic_ns()}")
    if path is None:
        missing_prerequisite("cannot create a cgroup here (needs root and a writable cgroup fs)")
    assert path is not None
    try:
        yield path
    finally:
        remove_board_cgroup(path)


def run_runner(
    *args: str, cgroup: str | None = None, as_nobody: bool = False, timeout: float = 120
) -> tuple[int, list[dict], str]:
    cmd = [sys.executable, "-m", "edgeq.runner", *args]
    if as_nobody:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]

    def join() -> None:
        if cgroup is not None:
            Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))

    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, preexec_fn=join if cgroup else None
    )
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    return proc.returncode, events, proc.stderr


def run_model(
    model: Path, *, cgroup: str | None = None, as_nobody: bool = False, timeout: float = 120, **spec: Any
) -> tuple[int, list[dict], str]:
    """``runner run --model MODEL --spec JSON`` with the spec's settings as keyword arguments."""
    return run_runner(
        "run",
        "--model",
        str(model),
        "--spec",
        json.dumps(spec),
        cgroup=cgroup,
        as_nobody=as_nobody,
        timeout=timeout,
    )


def the_result(events: list[dict]) -> dict:
    results = [e["result"] for e in events if e["event"] == "result"]
    assert len(results) == 1, events
    return results[0]


def warning_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] == "warning"]


def test_emulated_ina219_energy_follows_the_runners_cpu_time(
    tiny_model: Path, tmp_path: Path, board_cgroup: str
) -> None:
    with EmulatedSensors(
        tmp_path / "emu", util_source=f"cgroup:{board_cgroup}", families=("ina2xx",)
    ) as sensors:
        cfg = {"source": "ina2xx", "idle_s": 0.5, "min_window_s": 1.0}
        code, events, err = run_model(
            tiny_model, runs=20, warmup=5, power=cfg, sysfs_root=str(sensors.sysfs), cgroup=board_cgroup
        )
    assert code == 0, err
    r = the_result(events)
    p = r["power"]
    assert p["available"] and p["source"] == "ina2xx" and p["sensor"]["name"] == "ina219"
    # The runner keeps one of the CPUs busy: the sensor sees that, the idle baseline does not.
    assert p["power_mw"]["active_mean"] > p["power_mw"]["idle"] + 200
    assert p["power_mw"]["idle"] == pytest.approx(2000, abs=150)
    assert (
        p["energy_mj_per_inference"] > 0 and p["energy_mj_per_inference_sigma"] < p["energy_mj_per_inference"]
    )
    assert p["window"]["lengthened"] and p["window"]["measure_s"] >= 1.0
    assert p["window"]["invokes"] == r["latency_us"]["n"] > 20  # 20 runs of a tiny model are far below 1 s
    assert p["samples"]["measure"] >= 20 and p["rate_hz"]["achieved"] > 50
    assert r["config"]["runs"] == 20  # what was asked stays recorded as asked
    assert len(json.dumps(p)) < 60_000  # the power trace is compact
    assert r["warnings"] == [] and not warning_events(events)


def test_a_slow_sensor_lengthens_the_window_to_get_enough_samples(tiny_model: Path, tmp_path: Path) -> None:
    with EmulatedSensors(
        tmp_path / "emu", ina2xx="ina226", ina2xx_update_ms=50, families=("ina2xx",)
    ) as sensors:
        cfg = {"source": "ina2xx", "idle_s": 0.3, "min_window_s": 0.1, "min_samples": 15}
        code, events, err = run_model(tiny_model, runs=5, warmup=0, power=cfg, sysfs_root=str(sensors.sysfs))
    assert code == 0, err
    p = the_result(events)["power"]
    assert p["rate_hz"]["target"] == pytest.approx(20.0)  # update_interval 50 ms
    assert p["sensor"]["update_interval_ms"] == 50
    assert p["window"]["lengthened"] and p["window"]["required_s"] >= 15 / 20
    assert p["window"]["measure_s"] >= 0.75 and p["samples"]["measure"] >= 14


def test_a_rapl_counter_that_wraps_during_the_run_still_gives_the_right_energy(
    tiny_model: Path, tmp_path: Path
) -> None:
    opts = {"families": ("rapl",), "rapl_max_uj": 1_500_000, "truth_log": True}  # wraps every 0.1-0.5 s
    with EmulatedSensors(tmp_path / "emu", **opts) as sensors:
        code, events, err = run_model(
            tiny_model, runs=10, warmup=2, min_seconds=1.5, power={"source": "rapl", "idle_s": 0.5},
            sysfs_root=str(sensors.sysfs),
        )  # fmt: skip
        truth = sensors.truth()
    assert code == 0, err
    p = the_result(events)["power"]
    assert p["sensor"]["domains"] == ["intel-rapl:0"] and p["sensor"]["wraps"] >= 3
    t0 = p["window"]["t0_monotonic_ns"]
    a_ms, b_ms = p["trace"]["marks_ms"]["measure"]
    t = np.array([x["t_ns"] for x in truth], dtype=np.float64)
    e = np.array([x["rapl_total_uj"] for x in truth])
    true_mj = (np.interp(t0 + b_ms * 1e6, t, e) - np.interp(t0 + a_ms * 1e6, t, e)) / 1000.0
    assert true_mj > 1_500_000 / 1000.0  # the window itself spans more than one wrap
    # Within the writer's 10 ms publishing granularity at each edge.
    assert p["energy_mj"]["measure"] == pytest.approx(true_mj, rel=0.03)


def _sensor_tree_missing(tmp: Path) -> tuple[dict[str, Any], str]:
    return {"source": "ina2xx", "sensor": "ina219", "idle_s": 0.2}, "no hwmon device named ina219"


def _sensor_unreadable(tmp: Path) -> tuple[dict[str, Any], str]:
    hwmon(tmp, 0, "ina219", {})
    (tmp / "devices" / "platform" / "i2c-0" / "hwmon" / "hwmon0" / "power1_input").mkdir()
    return {"source": "ina2xx", "idle_s": 0.2}, "cannot be read"


def _meter_dies_mid_run(tmp: Path) -> tuple[dict[str, Any], str]:
    count = tmp / "calls"
    meter = script(
        tmp / "meter",
        f"import pathlib, sys\np = pathlib.Path({str(count)!r})\nn = int(p.read_text()) if p.exists() else 0\n"
        "p.write_text(str(n + 1))\nif n >= 1:\n    sys.exit('meter unplugged')\nprint('2.5')\n",
    )
    return {
        "source": "external",
        "command": [str(meter)],
        "unit": "W",
        "idle_s": 0.2,
        "rate_hz": 20,
    }, "meter unplugged"


@pytest.mark.parametrize(
    "make",
    [_sensor_tree_missing, _sensor_unreadable, _meter_dies_mid_run],
    ids=["missing", "unreadable", "dies"],
)
def test_a_missing_or_broken_sensor_is_one_warning_and_the_profile_completes(
    make: Any, tiny_model: Path, tmp_path: Path
) -> None:
    root = tmp_path / "sys"
    root.mkdir()
    cfg, match = make(root)
    code, events, err = run_model(tiny_model, runs=30, warmup=2, power=cfg, sysfs_root=str(root))
    assert code == 0, err
    r = the_result(events)
    assert r["latency_us"]["n"] >= 30 and r["model"]["sha256"]
    assert r["power"]["available"] is False
    warned = warning_events(events)
    assert len(warned) == 1 and len(r["warnings"]) == 1, warned
    assert match in warned[0]["message"] and warned[0]["code"].startswith("power.")
    assert set(warned[0]) == {"event", "code", "message", "hint"}


def test_rapl_readable_by_root_only_says_how_to_grant_access(tiny_model: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        missing_prerequisite("needs root and setpriv to run the runner as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="edgeq-rapl-"))
    try:
        base.chmod(0o755)
        EmulatedSensors(base / "emu", families=("rapl",)).build()  # energy_uj is 0400 root
        model = base / "m.tflite"
        shutil.copy(tiny_model, model)
        for p in [base, *base.rglob("*")]:
            if p.is_dir():
                p.chmod(0o755)
        code, events, err = run_model(
            model,
            runs=5,
            warmup=0,
            power={"source": "rapl"},
            sysfs_root=str(base / "emu" / "sys"),
            as_nobody=True,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert code == 0, err
    (w,) = warning_events(events)
    assert "Permission denied" in w["message"] and "chmod o+r" in w["hint"] and "5.10" in w["hint"]
    assert the_result(events)["latency_us"]["n"] == 5


def test_bad_power_config_is_bad_input_before_measuring(tiny_model: Path) -> None:
    code, events, _ = run_model(tiny_model, power={"source": "volts"})
    assert code == 2
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "bad_input"
    assert not [e for e in events if e["event"] == "progress"]
    code, events, _ = run_model(tiny_model, thermal=[1, 2])
    assert code == 2 and "JSON object" in events[-1]["message"]


# --------------------------------------------------------------------------------------------------
# host side


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "edgeq-home"
    monkeypatch.setenv("EDGEQ_HOME", str(path))
    return path


def test_profile_passes_power_and_thermal_options_to_the_runner(
    tiny_model: Path, tmp_path: Path, home: Path
) -> None:
    from edgeq import api

    events: list[dict] = []
    with EmulatedSensors(tmp_path / "emu", families=("ina3221", "thermal", "cpufreq")) as sensors:
        measure = {
            "runs": 10,
            "warmup": 1,
            "power": {"source": "ina3221", "idle_s": 0.3},
            "thermal": {"set_governor": "performance"},
            "sysfs_root": str(sensors.sysfs),
            "vcgencmd": str(sensors.vcgencmd),
        }
        r = api.profile(tiny_model, measure=measure, on_event=events.append).to_dict()
        governor = (sensors.sysfs / "devices/system/cpu/cpufreq/policy0/scaling_governor").read_text().strip()
    p = r["power"]
    assert p["available"] and p["sensor"]["rails"] == ["VDD_IN"] and p["config"]["idle_s"] == 0.3
    assert r["thermal"]["governor"] == {
        "found": {"policy0": "schedutil"},
        "expected": "performance",
        "set_to": "performance",
        "restored": True,
    }
    assert governor == "schedutil"
    assert [z["type"] for z in r["thermal"]["zones"]] == ["cpu-thermal", "gpu-thermal"]
    assert isinstance(r["warnings"], list)
    assert [e for e in events if e["event"] == "progress" and e["phase"] == "idle"]


@pytest.mark.parametrize(
    "measure, match",
    [
        ({"power": "volts"}, "source"),
        ({"power": {"source": "rapl", "rate": 5}}, "unknown key rate"),
        ({"power": {"source": "external"}}, "command"),
        ({"thermal": {"cool_down_below_c": "hot"}}, "cool_down_below_c"),
    ],
)
def test_profile_checks_sensor_settings_before_sending_anything(
    measure: dict[str, Any], match: str, tiny_model: Path, home: Path
) -> None:
    from edgeq import api

    with pytest.raises(UserInputError, match=match):
        api.profile(tiny_model, measure=measure)
    assert not home.exists() or not list(home.rglob("*.tflite"))


def test_new_runner_modules_ship_in_the_zipapp_and_stay_python_3_8() -> None:
    from edgeq.runner_zip import runner_pyz_bytes

    names = zipfile.ZipFile(io.BytesIO(runner_pyz_bytes())).namelist()
    sensors = sorted((REPO / "edgeq" / "runner" / "sensors").glob("*.py"))
    assert {p.stem for p in sensors} >= {"__init__", "common", "ina2xx", "rapl", "external"}
    for path in [REPO / "edgeq" / "runner" / f"{m}.py" for m in ("power", "thermal", "session")] + sensors:
        assert f"edgeq_runner/{path.relative_to(REPO / 'edgeq' / 'runner').as_posix()}" in names
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 8))


def test_emulator_leaves_nothing_running(tmp_path: Path) -> None:
    sensors = EmulatedSensors(tmp_path / "emu", families=("ina2xx",)).start()
    assert sensors.proc is not None
    pid = sensors.proc.pid
    first = (sensors.sysfs / "class/hwmon/hwmon1/power1_input").read_text()
    time.sleep(0.1)
    assert int(first) > 1_000_000  # µW: the idle level is 2 W
    sensors.stop()
    assert sensors.proc is None and not Path(f"/proc/{pid}").exists()  # stopped and reaped
    # The command-line form: start (detached), stop.
    out = subprocess.run(
        [sys.executable, "-m", MODULE, "start", "--dir", str(tmp_path / "cli")],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert Path(info["sysfs_root"], "class", "powercap", "intel-rapl:0", "energy_uj").exists()
    subprocess.run(
        [sys.executable, "-m", MODULE, "stop", "--dir", str(tmp_path / "cli")],
        check=True, timeout=60,
    )  # fmt: skip
    time.sleep(0.1)
    assert not Path(f"/proc/{info['pid']}").exists()


def test_a_bug_in_the_power_analysis_is_a_warning_not_a_failed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edgeq.runner.session as session_mod

    hwmon(tmp_path, 0, "ina219", {"power1_input": 2000000})

    def broken(*args: Any) -> dict:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(session_mod, "summarize", broken)
    cfg = PowerConfig(
        {"source": "ina2xx", "idle_s": 0.05, "settle_s": 0, "min_window_s": 0.05, "min_samples": 1}
    )
    session = session_mod.SensorSession(cfg, None, str(tmp_path))
    with session:
        session.prepare()
        assert session.min_seconds(None) == pytest.approx(0.05, abs=0.02)
        session.measure_start()
        time.sleep(0.05)
        session.measure_end(10)
    r = session.result()
    assert r["power"]["available"] is False and r["power"]["reason"] == "analysis failed"
    assert [w["code"] for w in r["warnings"]] == ["power.analysis_failed"]
    assert "ZeroDivisionError" in capsys.readouterr().err
