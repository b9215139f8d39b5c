"""The power-source registry: one module per source, each one's detect() on emulated sysfs trees,
the auto order, probe_sensors, and building a SensorSession from a MeasureSpec."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import missing_prerequisite
from test_power import REPO, hwmon, put, script

import edgeq.runner.sensors as registry
from edgeq.runner.measure_spec import MeasureSpec
from edgeq.runner.protocol import RunnerError
from edgeq.runner.sensors import (
    MODULES,
    SENSORS,
    SOURCES,
    PowerConfig,
    auto_order,
    availability,
    open_reader,
    probe_sensors,
)
from edgeq.runner.sensors.common import ABSENT, OK, UNKNOWN, UNREADABLE, Availability, SensorError
from edgeq.runner.session import SensorSession
from edgeq.testing.emulated_sensors import EmulatedSensors

NO_VCGENCMD = "/nonexistent/vcgencmd"
# What a hint must not say: module names, files, API arguments. Users know CLI flags and profile keys.
NOT_USER_LANGUAGE = re.compile(r"edgeq\.|\w+\.py\b|PowerConfig|open_reader|idle_s|min_seconds|rate_hz")


def tree(base: Path, *families: str) -> Path:
    """The emulator's sysfs tree with only these sensor families, no writer (values stay as built)."""
    return Path(EmulatedSensors(base, families=families).build().sysfs)


@pytest.fixture
def running_board(tmp_path: Path) -> Iterator[EmulatedSensors]:
    """Every emulated family, kept alive by the writer (the vcgencmd stand-in needs its state)."""
    with EmulatedSensors(tmp_path / "emu") as emu:
        yield emu


# --------------------------------------------------------------------------------------------------
# the registry


def test_every_module_has_the_fixed_surface_and_is_registered_by_its_name() -> None:
    assert len(SENSORS) == len(MODULES) == 6
    for file_name, (name, module) in zip(MODULES, SENSORS.items(), strict=True):
        assert module.__name__.endswith("." + file_name) and name == module.NAME
        assert isinstance(module.NEEDS, str) and module.NEEDS and "\n" not in module.NEEDS
        assert module.PRIORITY is None or isinstance(module.PRIORITY, int)
        for fn in ("options", "open_reader", "detect"):
            assert callable(getattr(module, fn)), (name, fn)
        assert registry.sensor_module(name) is module
    assert ("none", "auto", *SENSORS, "hwmon") == SOURCES
    assert registry.sensor_module("hwmon") is SENSORS["ina2xx"]
    with pytest.raises(KeyError):
        registry.sensor_module("auto")


def test_source_modules_need_only_the_standard_library() -> None:
    """detect() must work where NumPy is missing: no sensor module (nor the registry) imports it."""
    for path in (REPO / "edgeq" / "runner" / "sensors").glob("*.py"):
        tree_ = ast.parse(path.read_text(), feature_version=(3, 8))
        imported = {
            (node.module or "") if isinstance(node, ast.ImportFrom) else alias.name
            for node in ast.walk(tree_)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        }
        assert not {m for m in imported if m.split(".")[0] in ("numpy", "edgeq")}, (path.name, imported)


def test_the_auto_order_follows_the_declared_priorities(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared = sorted((m.PRIORITY, n) for n, m in SENSORS.items() if m.PRIORITY is not None)
    assert auto_order() == [n for _, n in declared]
    assert "external" not in auto_order()  # PRIORITY None: never guessed
    assert auto_order()[-1] == "rapl"  # the CPU package only: the last resort

    # A board with both an INA3221 and an INA219: auto opens whichever is declared first.
    root = tree(tmp_path / "emu", "ina2xx", "ina3221")
    auto = PowerConfig({"source": "auto"})
    reader = open_reader(auto, str(root), NO_VCGENCMD)
    assert reader is not None and reader.source == "ina3221"
    monkeypatch.setattr(SENSORS["ina2xx"], "PRIORITY", SENSORS["ina3221"].PRIORITY - 1)
    assert auto_order()[:2] == ["ina2xx", "ina3221"]
    reader = open_reader(auto, str(root), NO_VCGENCMD)
    assert reader is not None and reader.source == "ina2xx"
    assert probe_sensors(str(root), NO_VCGENCMD)["power"]["auto"] == "ina2xx"
    monkeypatch.setattr(SENSORS["ina2xx"], "PRIORITY", None)
    assert "ina2xx" not in auto_order()


def test_auto_with_nothing_present_says_what_it_tried_and_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SensorError) as info:
        open_reader(PowerConfig({}), str(tmp_path), NO_VCGENCMD)
    assert info.value.status == ABSENT
    assert all(name in info.value.message for name in auto_order())
    assert "power_source" in info.value.hint and "--power-source" in info.value.hint
    assert open_reader(PowerConfig({"source": "none"}), str(tmp_path), NO_VCGENCMD) is None


def test_power_config_accepts_the_union_of_the_sources_own_keys() -> None:
    cfg = PowerConfig({"source": "ina3221", "rails": "VDD_SOC", "idle_s": 0.5})
    assert cfg.options["rails"] == ["VDD_SOC"] and cfg.idle_s == 0.5
    assert cfg.as_dict()["rails"] == ["VDD_SOC"]
    # The external meter's own defaults show only when it is the source.
    assert "unit" not in PowerConfig({"source": "rapl"}).as_dict()
    assert PowerConfig({"source": "external", "command": "meter"}).as_dict()["unit"] == "W"
    with pytest.raises(RunnerError, match="unknown key voltage") as info:
        PowerConfig({"source": "rapl", "voltage": 5})
    assert info.value.kind == "bad_input"
    assert all(k in info.value.hint for k in ("rails", "domains", "command", "sensor", "idle_s"))
    with pytest.raises(RunnerError, match="domains must be a list of strings"):
        PowerConfig({"source": "auto", "domains": 3})


# --------------------------------------------------------------------------------------------------
# each source's detect() on emulated sysfs trees: present, absent, unreadable


@pytest.mark.parametrize(
    "source, family, detail",
    [
        ("ina2xx", "ina2xx", "ina219 at "),
        ("ina3221", "ina3221", "ina3221 rails VDD_IN (of VDD_CPU_GPU_CV, VDD_IN, VDD_SOC)"),
        ("jetson-iio", "iio", "ina3221x rails POM_5V_IN (of POM_5V_CPU, POM_5V_GPU, POM_5V_IN)"),
        ("rapl", "rapl", "RAPL intel-rapl:0 readable (package-0)"),
    ],
)
def test_a_sysfs_source_is_present_on_its_tree_and_absent_on_the_others(
    source: str, family: str, detail: str, tmp_path: Path
) -> None:
    if source == "rapl" and os.geteuid() != 0:
        missing_prerequisite("the emulated energy_uj is 0400 root, as on kernels >= 5.10: run as root")
    mine = tree(tmp_path / "mine", family)
    found = availability(source, str(mine), NO_VCGENCMD)
    assert (found.present, found.status, found.hint) == (True, OK, "")
    assert detail in found.detail
    others = tree(tmp_path / "others", *({"ina2xx", "ina3221", "iio", "rapl", "thermal"} - {family}))
    gone = availability(source, str(others), NO_VCGENCMD)
    assert (gone.present, gone.status) == (False, ABSENT)
    assert gone.detail and gone.hint and not NOT_USER_LANGUAGE.search(gone.hint)
    empty = availability(source, str(tmp_path / "no-sysfs-here"), NO_VCGENCMD)
    assert (empty.present, empty.status) == (False, ABSENT)


def test_ina2xx_that_cannot_be_read_is_unreadable_not_absent(tmp_path: Path) -> None:
    attrs = hwmon(tmp_path, 0, "ina226", {"update_interval": 35})
    (attrs / "power1_input").mkdir()  # exists, but reading it fails (EISDIR), as a broken driver would
    found = availability("ina2xx", str(tmp_path), NO_VCGENCMD)
    assert (found.present, found.status) == (False, UNREADABLE)
    assert "cannot be read" in found.detail and "Is a directory" in found.detail
    assert "root" in found.hint and not NOT_USER_LANGUAGE.search(found.hint)


def test_rapl_readable_by_root_only_is_unreadable_with_the_chmod_hint() -> None:
    """The emulated energy_uj is 0400 root (Linux >= 5.10); a probe run as nobody must say so."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        missing_prerequisite("needs root and setpriv to probe as an unprivileged user")
    base = Path(tempfile.mkdtemp(prefix="edgeq-rapl-"))
    try:
        root = tree(base / "emu", "rapl")
        for p in [base, *base.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        code = "import json, sys; from edgeq.runner.sensors import probe_sensors; print(json.dumps(probe_sensors(sys.argv[1])))"
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code, str(root)],
            capture_output=True, text=True, cwd=REPO, timeout=60, check=True,
        )  # fmt: skip
        as_root = availability("rapl", str(root), NO_VCGENCMD)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    rapl = json.loads(out.stdout)["power"]["sources"]["rapl"]
    assert (rapl["present"], rapl["status"]) == (False, UNREADABLE)
    assert "Permission denied" in rapl["detail"] and "energy_uj" in rapl["detail"]
    assert "chmod o+r" in rapl["hint"] and "5.10" in rapl["hint"]
    assert as_root.present  # the same tree, read by root


def test_rpi5_pmic_present_when_vcgencmd_answers_absent_when_missing_or_not_a_pi5(
    running_board: EmulatedSensors, tmp_path: Path
) -> None:
    root = str(running_board.sysfs)
    found = availability("rpi5-pmic", root, str(running_board.vcgencmd))
    assert found.present and "vcgencmd pmic_read_adc: 12 rails read" in found.detail
    missing = availability("rpi5-pmic", root, str(tmp_path / "no-vcgencmd"))
    assert (missing.present, missing.status) == (False, ABSENT) and "command not found" in missing.detail
    assert "libraspberrypi-bin" in missing.hint
    pi4 = script(
        tmp_path / "pi4" / "vcgencmd",
        "import sys\nprint('error=2 error_msg=\"Command not registered\"')\nsys.exit(255)\n",
    )
    assert availability("rpi5-pmic", root, str(pi4)).status == ABSENT


def test_rpi5_pmic_whose_vcgencmd_fails_is_unreadable(tmp_path: Path) -> None:
    # Built but never started: the vcgencmd stand-in has no state, and fails as the real one does
    # without access to /dev/vcio ("VCHI initialization failed").
    emu = EmulatedSensors(tmp_path / "emu", families=("thermal",)).build()
    found = availability("rpi5-pmic", str(emu.sysfs), str(emu.vcgencmd))
    assert (found.present, found.status) == (False, UNREADABLE)
    assert "VCHI initialization failed" in found.detail and "video group" in found.hint


def test_an_external_meter_cannot_be_detected_and_says_how_to_configure_it(tmp_path: Path) -> None:
    found = availability("external", str(tmp_path), NO_VCGENCMD)
    assert (found.present, found.status) == (False, UNKNOWN)
    assert "--power-config" in found.hint and '"source": "external"' in found.hint


def test_detect_never_raises_on_a_tree_nothing_expected(tmp_path: Path) -> None:
    """Files where directories belong and the reverse: every source reports, none raises."""
    put(tmp_path / "class" / "powercap", "not a directory")
    (tmp_path / "class" / "hwmon" / "hwmon0" / "name").mkdir(parents=True)
    put(tmp_path / "class" / "hwmon" / "hwmon1" / "name", "ina3221")
    (tmp_path / "class" / "hwmon" / "hwmon1" / "in1_input").mkdir()
    put(tmp_path / "class" / "hwmon" / "hwmon1" / "curr1_input", "garbage")
    put(tmp_path / "bus" / "iio" / "devices" / "iio:device0" / "rail_name_0", "VDD_IN")
    (tmp_path / "bus" / "iio" / "devices" / "iio:device0" / "in_power0_input").mkdir()
    broken_vcgencmd = script(tmp_path / "vcgencmd", "print('  VDD_CORE_A current(7)=nanA')\n")
    for name in SENSORS:
        found = availability(name, str(tmp_path), str(broken_vcgencmd))
        assert isinstance(found, Availability) and not found.present, (name, found)
        assert found.status in (ABSENT, UNREADABLE, UNKNOWN) and found.detail


def test_availability_is_consistent() -> None:
    with pytest.raises(ValueError):
        Availability(True, "x", "", UNREADABLE)
    assert Availability(False, "gone").status == ABSENT
    assert Availability(True, "here").as_dict() == {
        "present": True,
        "status": OK,
        "detail": "here",
        "hint": "",
    }


# --------------------------------------------------------------------------------------------------
# probe_sensors


def test_probe_reports_every_source_the_zones_and_the_governors(running_board: EmulatedSensors) -> None:
    root, vcgencmd = str(running_board.sysfs), str(running_board.vcgencmd)
    probe = probe_sensors(root, vcgencmd)
    assert json.loads(json.dumps(probe)) == probe  # JSON as it is
    sources = probe["power"]["sources"]
    assert list(sources) == list(SENSORS)
    for name, entry in sources.items():
        assert set(entry) == {"present", "status", "detail", "hint", "needs", "priority"}
        assert entry["needs"] == SENSORS[name].NEEDS and entry["priority"] == SENSORS[name].PRIORITY
    expected_present = {"ina2xx", "ina3221", "jetson-iio", "rpi5-pmic"} | (
        {"rapl"} if os.geteuid() == 0 else set()
    )
    assert {n for n, e in sources.items() if e["present"]} == expected_present
    assert sources["external"]["status"] == UNKNOWN
    assert probe["power"]["auto_order"] == auto_order() and probe["power"]["auto"] == "ina3221"
    assert "configured" not in probe["power"]
    zones = probe["thermal"]["zones"]
    assert [(z["zone"], z["type"]) for z in zones] == [
        ("thermal_zone0", "cpu-thermal"),
        ("thermal_zone1", "gpu-thermal"),
    ]
    assert all(30.0 < z["temp_c"] < 80.0 for z in zones)
    (policy,) = probe["cpufreq"]["policies"]
    assert policy["policy"] == "policy0" and policy["governor"] == "schedutil"
    assert "performance" in policy["available_governors"] and policy["cpus"]


def test_probe_checks_the_configured_power_source_exactly_as_a_run_opens_it(
    running_board: EmulatedSensors,
) -> None:
    root, vcgencmd = str(running_board.sysfs), str(running_board.vcgencmd)
    hwmon_cfg = probe_sensors(root, vcgencmd, {"source": "hwmon", "sensor": "ina219"})["power"]["configured"]
    assert hwmon_cfg["present"] and hwmon_cfg["reader"] == "ina2xx" and "ina219" in hwmon_cfg["detail"]
    auto = probe_sensors(root, vcgencmd, {"source": "auto"})["power"]["configured"]
    assert auto["present"] and auto["reader"] == "ina3221"
    wrong = probe_sensors(root, vcgencmd, {"source": "ina3221", "rails": ["VDD_GPU"]})["power"]["configured"]
    assert not wrong["present"] and "no rail VDD_GPU" in wrong["detail"]
    assert '"rails" in --power-config' in wrong["hint"] and "VDD_SOC" in wrong["hint"]
    none = probe_sensors(root, vcgencmd, {"source": "none"})["power"]["configured"]
    assert none["source"] == "none" and not none["present"]
    with pytest.raises(RunnerError, match="source"):
        probe_sensors(root, vcgencmd, {"source": "volts"})


def test_probe_on_a_machine_without_sensors_is_all_absent(tmp_path: Path) -> None:
    probe = probe_sensors(str(tmp_path), NO_VCGENCMD)
    assert probe["power"]["auto"] is None
    assert not any(e["present"] for e in probe["power"]["sources"].values())
    assert probe["thermal"] == {"zones": []} and probe["cpufreq"] == {"policies": []}
    for entry in probe["power"]["sources"].values():
        assert not NOT_USER_LANGUAGE.search(entry["hint"]), entry


def test_an_unreadable_zone_is_listed_with_its_error(tmp_path: Path) -> None:
    emu = EmulatedSensors(tmp_path / "emu", families=("thermal",)).build()
    temp = emu.sysfs / "class" / "thermal" / "thermal_zone1" / "temp"
    temp.unlink()
    temp.mkdir()
    zones = probe_sensors(str(emu.sysfs), NO_VCGENCMD)["thermal"]["zones"]
    assert zones[0]["temp_c"] == 40.0 and zones[1]["temp_c"] is None and "Is a directory" in zones[1]["error"]


def test_the_sensors_ship_in_runner_pyz_and_probe_without_numpy(tmp_path: Path) -> None:
    """The registry loads its modules by name inside the zipapp (package edgeq_runner), with no NumPy."""
    from edgeq.runner_zip import runner_pyz_bytes

    pyz = tmp_path / "runner.pyz"
    pyz.write_bytes(runner_pyz_bytes())
    root = tree(tmp_path / "emu", "ina2xx")
    code = (
        "import json, sys\nsys.path.insert(0, sys.argv[1])\n"
        "from edgeq_runner.sensors import probe_sensors\n"
        "print(json.dumps([probe_sensors(sys.argv[2], '/nonexistent/vcgencmd'), 'numpy' in sys.modules]))\n"
    )
    # -S: no site-packages, so NumPy cannot be imported at all.
    out = subprocess.run(
        [sys.executable, "-S", "-c", code, str(pyz), str(root)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    probe, numpy_loaded = json.loads(out.stdout)
    assert probe["power"]["auto"] == "ina2xx" and not numpy_loaded


# --------------------------------------------------------------------------------------------------
# SensorSession from a MeasureSpec


def test_sensor_session_from_a_measure_spec(tmp_path: Path) -> None:
    spec = MeasureSpec(
        power={"source": "hwmon", "sensor": "ina226", "idle_s": 0.5},
        thermal={"set_governor": "performance"},
        sysfs_root=str(tmp_path),
        vcgencmd="/opt/vc/bin/vcgencmd",
    )
    session = SensorSession.from_spec(spec, None)
    assert session.active and session.root == str(tmp_path) and session.vcgencmd == "/opt/vc/bin/vcgencmd"
    assert session.power_cfg is not None and session.power_cfg.options["sensor"] == "ina226"
    assert session.power_cfg.idle_s == 0.5
    assert session.thermal_cfg is not None and session.thermal_cfg.set_governor == "performance"
    plain = SensorSession.from_spec(MeasureSpec(), None)
    assert not plain.active and plain.root == "/sys" and plain.vcgencmd == "vcgencmd"
    with pytest.raises(RunnerError, match="idle_s") as info:
        SensorSession.from_spec(MeasureSpec(power={"source": "rapl", "idle_s": -1}), None)
    assert info.value.kind == "bad_input"
    with pytest.raises(RunnerError, match="unknown key zone"):
        SensorSession.from_spec(MeasureSpec(thermal={"zone": "cpu-thermal"}), None)


def test_a_session_from_a_spec_measures_the_emulated_sensor(running_board: EmulatedSensors) -> None:
    spec = MeasureSpec(
        power={"source": "ina2xx", "idle_s": 0.1, "settle_s": 0, "min_window_s": 0.2, "min_samples": 5},
        sysfs_root=str(running_board.sysfs),
    )
    session = SensorSession.from_spec(spec, None)
    with session:
        session.prepare()
        session.measure_start()
        time.sleep(session.min_seconds(None) or 0.2)
        session.measure_end(100)
    power = session.result()["power"]
    assert power["available"] and power["source"] == "ina2xx" and power["sensor"]["name"] == "ina219"
    # P = 2 W + 4 W x (the whole machine's CPU use): the figures lie between, whatever else runs here.
    assert 1950 < power["power_mw"]["idle"] < 6050 and 1950 < power["power_mw"]["active_mean"] < 6050
    assert power["config"]["source"] == "ina2xx" and power["config"]["idle_s"] == 0.1


# --------------------------------------------------------------------------------------------------
# edgeq.testing's own rule


def test_edgeq_testing_imports_only_the_standard_library_numpy_and_the_runner() -> None:
    allowed_edgeq = ("edgeq.runner", "edgeq.testing")
    stdlib = set(sys.stdlib_module_names)
    for path in (REPO / "edgeq" / "testing").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                ok = top in stdlib or top == "numpy" or name.startswith(allowed_edgeq)
                assert ok, f"{path.name} imports {name}"


def test_the_emulator_runs_as_a_module_from_anywhere(tmp_path: Path) -> None:
    """``python -m edgeq.testing.emulated_sensors``: build prints where the tree is (cwd elsewhere)."""
    out = subprocess.run(
        [sys.executable, "-m", "edgeq.testing.emulated_sensors", "build", "--dir", str(tmp_path / "emu"),
         "--families", "ina3221,thermal"],
        capture_output=True, text=True, check=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    info = json.loads(out.stdout)
    assert availability("ina3221", info["sysfs_root"], info["vcgencmd"]).present
    assert not availability("ina2xx", info["sysfs_root"], info["vcgencmd"]).present
