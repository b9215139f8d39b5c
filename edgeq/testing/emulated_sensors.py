"""Emulated power and thermal sensors for machines that have none (CI, the test farm, this box).

    python -m edgeq.testing.emulated_sensors start --dir D [--util-source proc-stat|cgroup:PATH] [...]
    python -m edgeq.testing.emulated_sensors stop --dir D
    python -m edgeq.testing.emulated_sensors run --dir D    # in the foreground, Ctrl-C stops it

``D/sys`` becomes a sysfs tree with the kernel's file names and units, and ``D/bin/vcgencmd`` a
stand-in for the Raspberry Pi tool; point the runner at them with ``--sysfs-root D/sys --vcgencmd
D/bin/vcgencmd``. ``start`` prints one JSON line: {"sysfs_root", "vcgencmd", "pid"}.

What the tree holds (paths relative to D/sys, as on a board relative to /sys):

* ``class/hwmon/hwmonN`` → ``devices/.../hwmon/hwmonN`` symlinks, as the kernel makes them:
  a decoy (``cpu_thermal``) first, so the sensors must be found by ``name``;
  ``ina219`` (or ``ina226``): power1_input µW, in0_input shunt mV, in1_input bus mV, curr1_input mA,
  shunt_resistor µΩ; update_interval ms for ina226 only (as the ina2xx driver does);
  ``ina3221``: in[1-3]_label (VDD_IN, VDD_CPU_GPU_CV, VDD_SOC), in[1-3]_input mV,
  curr[1-3]_input mA, in[1-3]_enable, update_interval ms, samples;
* ``bus/iio/devices/iio:device0`` (JetPack 4's ``ina3221x``): rail_name_[0-2] (POM_5V_IN,
  POM_5V_GPU, POM_5V_CPU), in_power[0-2]_input mW, in_current[0-2]_input mA, in_voltage[0-2]_input mV;
* ``class/powercap/intel-rapl:0`` (package-0) and ``intel-rapl:0:0`` (core): energy_uj cumulative µJ
  wrapping at max_energy_range_uj (settable small for tests), mode 0400 as on kernels >= 5.10;
* ``class/thermal/thermal_zoneN``: type, temp m°C; heated by the load through a first-order model;
* ``devices/system/cpu/cpufreq/policy0``: kHz frequencies, a writable scaling_governor that the
  writer obeys (performance → max, powersave → min, others follow the load), and a
  scaling_max_freq the writer lowers when a zone passes ``throttle_c`` (thermal capping);
* ``D/bin/vcgencmd``: ``pmic_read_adc [RAIL]``, ``get_throttled``, ``measure_temp`` in the real
  output formats, from state the writer keeps in ``D/run/state.json``.

The writer process samples CPU utilisation (from /proc/stat, the whole machine — what a board's
sensor sees — or from one cgroup's CPU time, a "board" carved out of a shared machine) every tick
and turns it into power: P = idle_mw + load_mw · utilisation + noise. Each sensor publishes the
average power over its own update interval (as an INA's averaging does). Every file is replaced
atomically (written elsewhere, renamed in), so a reader never sees a half-written value. The
writer stops on SIGTERM, and in the Python API also when its parent dies: nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INA3221_RAILS = ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")
IIO_RAILS = ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU")
# Raspberry Pi 5 PMIC rails: (name, current ADC channel, voltage ADC channel, volts, idle amps).
# Channel numbers and idle levels follow a real capture of `vcgencmd pmic_read_adc`.
PMIC_RAILS = (
    ("3V7_WL_SW", 0, 8, 3.6998, 0.0937),
    ("3V3_SYS", 1, 9, 3.3100, 0.0878),
    ("1V8_SYS", 2, 10, 1.8051, 0.1805),
    ("DDR_VDD2", 3, 11, 1.1048, 0.0225),
    ("DDR_VDDQ", 4, 12, 0.6015, 0.0000),
    ("1V1_SYS", 5, 13, 1.1103, 0.1757),
    ("0V8_SW", 6, 14, 0.8015, 0.3767),
    ("VDD_CORE", 7, 15, 0.7200, 0.7500),
    ("3V3_DAC", 17, 20, 3.3132, 0.0001),
    ("3V3_ADC", 18, 21, 3.3068, 0.0004),
    ("0V8_AON", 16, 19, 0.8003, 0.0031),
    ("HDMI", 22, 23, 5.0866, 0.0242),
)
PMIC_VOLT_ONLY = (("EXT5V", 24, 5.0907), ("BATT", 25, 0.0))
PMIC_SHARE = 0.8  # the rails see ~80 % of the 5 V input: USB, fan and conversion losses are missing
MODULE = "edgeq.testing.emulated_sensors"  # run as python -m MODULE (the writer too)
GOVERNORS = ("conservative", "ondemand", "userspace", "powersave", "performance", "schedutil")


@dataclass
class EmulatorConfig:
    """Everything the writer needs; saved as D/run/config.json."""

    ina2xx: str = "ina219"  # hwmon name; "ina226" also gets an update_interval file
    ina2xx_update_ms: float = 35.0  # only for ina226 (the driver's default averaging: 35 ms)
    ina3221_update_ms: float = 20.0
    tick_ms: float = 10.0  # the writer's period (INA219 and iio publish every tick)
    idle_mw: float = 2000.0  # board input at utilisation 0
    load_mw: float = 4000.0  # added at utilisation 1 (every CPU busy)
    noise_mw: float = 5.0  # per-tick Gaussian noise
    rapl_idle_mw: float = 3000.0
    rapl_load_mw: float = 12000.0
    rapl_max_uj: int = 262143328850  # a real package's range; tests set it small to force wraps
    ambient_c: float = 40.0
    heat_c: float = 30.0  # the hottest zone's rise above ambient at utilisation 1
    tau_s: float = 5.0  # thermal time constant
    initial_c: float | None = None  # start temperature (default: ambient)
    throttle_c: float | None = None  # cap the CPU frequency above this temperature
    zones: tuple[str, ...] = ("cpu-thermal", "gpu-thermal")
    zone_gains: tuple[float, ...] = (1.0, 0.6)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    governor: str = "schedutil"
    min_khz: int = 600000
    max_khz: int = 2400000
    throttled_bits: int = 0  # extra get_throttled bits to report (e.g. 0x50005 for under-voltage)
    util_source: str = "proc-stat"  # or "cgroup:/sys/fs/cgroup/cpuacct/NAME"
    families: tuple[str, ...] = ("ina2xx", "ina3221", "iio", "rapl", "thermal", "cpufreq")
    seed: int = 0
    truth_log: bool = False  # D/run/truth.jsonl: every tick's true power and RAPL total (for tests)
    python: str = sys.executable  # the vcgencmd stand-in's interpreter
    watch_parent: int | None = None  # exit when this process is gone

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        fields = dict(data)
        for key in ("zones", "zone_gains", "families"):
            if key in fields:
                fields[key] = tuple(fields[key])
        return cls(**fields)


# ----------------------------------------------------------------------------------------------
# the tree


def _write(path: Path, value: Any, mode: int = 0o444) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")
    path.chmod(mode)


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))


class Tree:
    """Paths of the emulated files (real ones under devices/, class/ symlinks pointing at them)."""

    def __init__(self, base: Path, cfg: EmulatorConfig) -> None:
        self.base = base
        self.sys = base / "sys"
        self.bin = base / "bin"
        self.run = base / "run"
        self.tmp = base / "run" / "tmp"
        self.cfg = cfg
        devices = self.sys / "devices"
        self.decoy = devices / "virtual" / "thermal" / "thermal_zone0" / "hwmon0"
        self.ina2xx = devices / "platform" / "soc" / "fe804000.i2c" / "i2c-1" / "1-0040" / "hwmon" / "hwmon1"
        self.ina3221 = (
            devices / "platform" / "bus@0" / "c240000.i2c" / "i2c-1" / "1-0041" / "hwmon" / "hwmon2"
        )
        self.iio = devices / "platform" / "7000c400.i2c" / "i2c-6" / "6-0040" / "iio:device0"
        self.rapl = devices / "virtual" / "powercap" / "intel-rapl" / "intel-rapl:0"
        self.rapl_core = self.rapl / "intel-rapl:0:0"
        self.zones = [devices / "virtual" / "thermal" / f"thermal_zone{i}" for i in range(len(cfg.zones))]
        self.policy = devices / "system" / "cpu" / "cpufreq" / "policy0"
        self.state = self.run / "state.json"
        self.truth = self.run / "truth.jsonl"
        self.pidfile = self.run / "writer.pid"
        self.ready = self.run / "ready"

    def build(self) -> None:
        cfg = self.cfg
        for d in (self.sys, self.bin, self.run, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        fam = set(cfg.families)
        hwmon_class = self.sys / "class" / "hwmon"
        hwmon_class.mkdir(parents=True, exist_ok=True)
        _write(self.decoy / "name", "cpu_thermal")
        _write(self.decoy / "temp1_input", int(cfg.ambient_c * 1000))
        _link(hwmon_class / "hwmon0", self.decoy)
        if "ina2xx" in fam:
            d = self.ina2xx
            _write(d / "name", cfg.ina2xx)
            _write(d / "shunt_resistor", 100000)  # µΩ: 0.1 Ω
            for f in ("power1_input", "in0_input", "in1_input", "curr1_input"):
                _write(d / f, 0)
            if cfg.ina2xx != "ina219":
                _write(d / "update_interval", int(cfg.ina2xx_update_ms), 0o644)
            _link(hwmon_class / "hwmon1", d)
        if "ina3221" in fam:
            d = self.ina3221
            _write(d / "name", "ina3221")
            _write(d / "update_interval", int(cfg.ina3221_update_ms), 0o644)
            _write(d / "samples", 4, 0o644)
            for ch, label in enumerate(INA3221_RAILS, start=1):
                _write(d / f"in{ch}_label", label)
                _write(d / f"in{ch}_enable", 1, 0o644)
                _write(d / f"in{ch}_input", 0)
                _write(d / f"curr{ch}_input", 0)
                _write(d / f"shunt{ch}_resistor", 5000, 0o644)
            _link(hwmon_class / "hwmon2", d)
        if "iio" in fam:
            d = self.iio
            _write(d / "name", "ina3221x")
            for ch, rail in enumerate(IIO_RAILS):
                _write(d / f"rail_name_{ch}", rail)
                for f in ("in_power", "in_current", "in_voltage"):
                    _write(d / f"{f}{ch}_input", 0)
            _link(self.sys / "bus" / "iio" / "devices" / "iio:device0", d)
            _link(self.sys / "bus" / "i2c" / "drivers" / "ina3221x" / "6-0040", d.parent)
        if "rapl" in fam:
            _write(self.rapl.parent / "enabled", 1, 0o644)
            for d, name in ((self.rapl, "package-0"), (self.rapl_core, "core")):
                _write(d / "name", name)
                _write(d / "enabled", 1, 0o644)
                _write(d / "max_energy_range_uj", cfg.rapl_max_uj)
                _write(d / "energy_uj", 0, 0o400)  # root only, as since Linux 5.10
            _link(self.sys / "class" / "powercap" / "intel-rapl", self.rapl.parent)
            _link(self.sys / "class" / "powercap" / "intel-rapl:0", self.rapl)
            _link(self.sys / "class" / "powercap" / "intel-rapl:0:0", self.rapl_core)
        if "thermal" in fam:
            start = cfg.ambient_c if cfg.initial_c is None else cfg.initial_c
            for i, (d, kind) in enumerate(zip(self.zones, cfg.zones, strict=True)):
                _write(d / "type", kind)
                _write(d / "temp", int(round(start * 1000)))
                _write(d / "mode", "enabled", 0o644)
                _write(d / "policy", "step_wise", 0o644)
                _link(self.sys / "class" / "thermal" / f"thermal_zone{i}", d)
        if "cpufreq" in fam:
            d = self.policy
            cpus = " ".join(str(i) for i in range(cfg.cpus))
            _write(d / "affected_cpus", cpus)
            _write(d / "related_cpus", cpus)
            _write(d / "cpuinfo_min_freq", cfg.min_khz)
            _write(d / "cpuinfo_max_freq", cfg.max_khz)
            _write(d / "cpuinfo_transition_latency", 355000)
            _write(d / "scaling_min_freq", cfg.min_khz, 0o644)
            _write(d / "scaling_max_freq", cfg.max_khz, 0o644)
            _write(d / "scaling_cur_freq", cfg.min_khz)
            _write(d / "scaling_driver", "cpufreq-dt")
            _write(d / "scaling_available_governors", " ".join(GOVERNORS))
            _write(d / "scaling_governor", cfg.governor, 0o644)
            for i in range(cfg.cpus):
                _link(self.sys / "devices" / "system" / "cpu" / f"cpu{i}" / "cpufreq", d)
        self._write_vcgencmd()
        (self.run / "config.json").write_text(json.dumps(asdict(cfg)))

    def _write_vcgencmd(self) -> None:
        script = self.bin / "vcgencmd"
        script.write_text(
            VCGENCMD_TEMPLATE.replace("@PYTHON@", self.cfg.python).replace("@STATE@", str(self.state))
        )
        script.chmod(0o755)


VCGENCMD_TEMPLATE = '''#!@PYTHON@
"""A stand-in for the Raspberry Pi's vcgencmd, written by edgeq.testing.emulated_sensors.

Prints the real output formats from the emulator's state: pmic_read_adc [RAIL], get_throttled,
measure_temp. Any other command fails like the real tool does for an unknown one.
"""
import json
import sys

STATE = "@STATE@"


def main(argv):
    try:
        with open(STATE) as f:
            state = json.load(f)
    except (OSError, ValueError):
        print("VCHI initialization failed", file=sys.stderr)
        return 255
    cmd = argv[0] if argv else ""
    if cmd == "pmic_read_adc":
        lines = []
        for name, ch_a, _ch_v, _volt, amps in state["pmic_current"]:
            lines.append(("%s_A" % name, "%12s current(%d)=%.8fA" % ("%s_A" % name, ch_a, amps)))
        for name, ch_v, volt in state["pmic_volt"]:
            lines.append(("%s_V" % name, "%12s volt(%d)=%.8fV" % ("%s_V" % name, ch_v, volt)))
        if len(argv) > 1:
            lines = [kv for kv in lines if kv[0] == argv[1]]
        for _key, line in lines:
            print(line)
        return 0
    if cmd == "get_throttled":
        print("throttled=0x%x" % state["throttled"])
        return 0
    if cmd == "measure_temp":
        print("temp=%.1f\\'C" % state["temp_c"])
        return 0
    print("vc_gencmd_read_response returned -1")
    print('error=1 error_msg="Command not registered"')
    return 254


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


# ----------------------------------------------------------------------------------------------
# the writer


class ProcStat:
    """Whole-machine utilisation from /proc/stat (USER_HZ ticks: noisy per tick, unbiased on average)."""

    def __init__(self) -> None:
        self.prev = self._read()

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            parts = f.readline().split()
        vals = [int(x) for x in parts[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (vals + [0] * 8)[:8]
        busy = user + nice + system + irq + softirq + steal
        return busy, busy + idle + iowait

    def utilisation(self, dt_s: float) -> float:
        busy, total = self._read()
        db, dt = busy - self.prev[0], total - self.prev[1]
        self.prev = (busy, total)
        return min(1.0, max(0.0, db / dt)) if dt > 0 else 0.0


class CgroupCpu:
    """One cgroup's CPU time as a share of all CPUs: cgroup v1 cpuacct.usage (ns) or v2 cpu.stat (µs)."""

    def __init__(self, path: str, cpus: int) -> None:
        self.path = Path(path)
        self.cpus = cpus
        self.prev = self._read()

    def _read(self) -> float:
        v1 = self.path / "cpuacct.usage"
        if v1.exists():
            return int(v1.read_text()) / 1e9
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            if key == "usage_usec":
                return int(value) / 1e6
        raise RuntimeError(f"no CPU usage in {self.path}")

    def utilisation(self, dt_s: float) -> float:
        now = self._read()
        used, self.prev = now - self.prev, now
        return min(1.0, max(0.0, used / (dt_s * self.cpus))) if dt_s > 0 else 0.0


class Writer:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.cfg = tree.cfg
        cfg = self.cfg
        self.rng = random.Random(cfg.seed)
        if cfg.util_source.startswith("cgroup:"):
            self.util_reader: ProcStat | CgroupCpu = CgroupCpu(cfg.util_source[len("cgroup:") :], cfg.cpus)
        else:
            self.util_reader = ProcStat()
        start = cfg.ambient_c if cfg.initial_c is None else cfg.initial_c
        self.temps = [start] * len(cfg.zones)
        self.rapl_uj = 0.0
        self.rapl_core_uj = 0.0
        self.rapl_total_uj = 0.0
        self.cap_khz = cfg.max_khz
        self.cap_changed_at = 0.0
        self.throttled = cfg.throttled_bits
        self.util = 0.0
        self.power_mw = cfg.idle_mw
        # per-sensor averaging: [energy mJ, seconds] since the sensor last published
        self.acc = {"ina2xx": [0.0, 0.0], "ina3221": [0.0, 0.0]}
        self.last_pub = {"ina2xx": 0.0, "ina3221": 0.0, "slow": 0.0, "state": 0.0}
        self.fam = set(cfg.families)
        self.truth = open(tree.truth, "a", buffering=1) if cfg.truth_log else None  # noqa: SIM115 (line-buffered: readable while running)

    def put(self, path: Path, value: Any) -> None:
        tmp = self.tree.tmp / path.name
        with open(tmp, "w") as f:
            f.write(f"{value}\n")
        mode = 0o400 if path.name == "energy_uj" else 0o444
        os.chmod(tmp, mode)
        os.replace(tmp, path)

    def tick(self, now: float, dt: float) -> None:
        cfg = self.cfg
        u = self.util_reader.utilisation(dt)
        self.util = u
        p = cfg.idle_mw + cfg.load_mw * u + self.rng.gauss(0.0, cfg.noise_mw)
        self.power_mw = p
        for key in self.acc:
            self.acc[key][0] += p * dt
            self.acc[key][1] += dt
        if "ina2xx" in self.fam:
            interval = cfg.tick_ms / 1000.0 if cfg.ina2xx == "ina219" else cfg.ina2xx_update_ms / 1000.0
            if now - self.last_pub["ina2xx"] >= interval * 0.999:
                self._publish_ina2xx()
                self.last_pub["ina2xx"] = now
        if "ina3221" in self.fam and now - self.last_pub["ina3221"] >= cfg.ina3221_update_ms / 1000.0 * 0.999:
            self._publish_ina3221()
            self.last_pub["ina3221"] = now
        if "iio" in self.fam:
            self._publish_iio(p, u)
        if "rapl" in self.fam:
            pkg = cfg.rapl_idle_mw + cfg.rapl_load_mw * u
            core = 0.3 * cfg.rapl_idle_mw + cfg.rapl_load_mw * u * 0.9
            add = pkg * dt * 1000.0  # mW·s = mJ → µJ
            self.rapl_total_uj += add
            self.rapl_uj = (self.rapl_uj + add) % cfg.rapl_max_uj
            self.rapl_core_uj = (self.rapl_core_uj + core * dt * 1000.0) % cfg.rapl_max_uj
            self.put(self.tree.rapl / "energy_uj", int(self.rapl_uj))
            self.put(self.tree.rapl_core / "energy_uj", int(self.rapl_core_uj))
        # thermal, first order: T → ambient + gain·heat·u with time constant tau
        alpha = 1.0 - math.exp(-dt / max(cfg.tau_s, 1e-3))
        for i, gain in enumerate(cfg.zone_gains[: len(self.temps)]):
            target = cfg.ambient_c + gain * cfg.heat_c * u
            self.temps[i] += (target - self.temps[i]) * alpha
        if now - self.last_pub["slow"] >= 0.05:
            self.last_pub["slow"] = now
            self._publish_thermal_and_freq(now)
        if now - self.last_pub["state"] >= 0.05:
            self.last_pub["state"] = now
            self._publish_state()
        if self.truth is not None:
            self.truth.write(
                json.dumps(
                    {"t_ns": time.monotonic_ns(), "mw": round(p, 3), "rapl_total_uj": self.rapl_total_uj}
                )
                + "\n"
            )

    def _publish_ina2xx(self) -> None:
        e, s = self.acc["ina2xx"]
        self.acc["ina2xx"] = [0.0, 0.0]
        p_mw = e / s if s > 0 else self.power_mw
        bus_mv = 5100.0 - 40.0 * self.util  # the supply sags a little under load
        curr_ma = p_mw / bus_mv * 1000.0
        d = self.tree.ina2xx
        self.put(d / "power1_input", int(round(p_mw * 1000.0)))  # µW
        self.put(d / "in1_input", int(round(bus_mv)))  # mV
        self.put(d / "curr1_input", int(round(curr_ma)))  # mA
        self.put(d / "in0_input", round(curr_ma * 0.1, 2))  # shunt mV over 0.1 Ω

    def _publish_ina3221(self) -> None:
        e, s = self.acc["ina3221"]
        self.acc["ina3221"] = [0.0, 0.0]
        p_mw = e / s if s > 0 else self.power_mw
        d = self.tree.ina3221
        # VDD_IN carries everything; the CPU/GPU rail the load; the SoC rail a steady share.
        cpu_mw = 0.55 * (p_mw - self.cfg.idle_mw) + 0.2 * self.cfg.idle_mw
        soc_mw = 0.25 * self.cfg.idle_mw
        for ch, (mw, mv) in enumerate(((p_mw, 5080.0), (cpu_mw, 5064.0), (soc_mw, 5072.0)), start=1):
            self.put(d / f"in{ch}_input", int(round(mv)))
            self.put(d / f"curr{ch}_input", int(round(mw / mv * 1000.0)))

    def _publish_iio(self, p_mw: float, u: float) -> None:
        d = self.tree.iio
        rails = (p_mw, 0.1 * self.cfg.idle_mw, 0.3 * self.cfg.idle_mw + 0.7 * self.cfg.load_mw * u)
        for ch, mw in enumerate(rails):
            mv = 5000.0
            self.put(d / f"in_power{ch}_input", int(round(mw)))  # mW
            self.put(d / f"in_voltage{ch}_input", int(mv))  # mV
            self.put(d / f"in_current{ch}_input", int(round(mw / mv * 1000.0)))  # mA

    def _governor(self) -> str:
        try:
            text = (self.tree.policy / "scaling_governor").read_text().strip()
        except OSError:
            return self.cfg.governor
        return text or self.cfg.governor

    def _publish_thermal_and_freq(self, now: float) -> None:
        cfg = self.cfg
        if "thermal" in self.fam:
            for d, t in zip(self.tree.zones, self.temps, strict=False):
                if (d / "temp").is_file():  # a test may have broken it on purpose
                    self.put(d / "temp", int(round(t * 1000.0)))
        hottest = max(self.temps) if self.temps else cfg.ambient_c
        bits = cfg.throttled_bits
        if cfg.throttle_c is not None:
            soft = cfg.throttle_c - 5.0
            if hottest >= soft:
                bits |= 0x8 | 0x80000
            if hottest >= cfg.throttle_c and now - self.cap_changed_at >= 0.2:
                self.cap_khz = max(cfg.min_khz, self.cap_khz - (cfg.max_khz - cfg.min_khz) // 6)
                self.cap_changed_at = now
            elif hottest < cfg.throttle_c - 5.0 and now - self.cap_changed_at >= 0.2:
                self.cap_khz = min(cfg.max_khz, self.cap_khz + (cfg.max_khz - cfg.min_khz) // 6)
                self.cap_changed_at = now
            if self.cap_khz < cfg.max_khz:
                bits |= 0x2 | 0x4 | 0x20000 | 0x40000
        self.throttled |= bits & 0xF0000  # sticky since "boot"
        self.throttled = (self.throttled & 0xF0000) | (bits & 0xF)
        if "cpufreq" in self.fam:
            d = self.tree.policy
            if int((d / "scaling_max_freq").read_text() or cfg.max_khz) != self.cap_khz:
                self.put(d / "scaling_max_freq", self.cap_khz)
            gov = self._governor()
            cur: float
            if gov == "performance":
                cur = self.cap_khz
            elif gov == "powersave":
                cur = cfg.min_khz
            else:
                cur = cfg.min_khz + (self.cap_khz - cfg.min_khz) * min(1.0, 1.25 * self.util)
            self.put(d / "scaling_cur_freq", int(min(cur, self.cap_khz)))

    def _publish_state(self) -> None:
        cfg = self.cfg
        rails_mw = self.power_mw * PMIC_SHARE
        fixed_mw = sum(v * a for name, _, _, v, a in PMIC_RAILS if name != "VDD_CORE") * 1000.0
        core_v = 0.72 + 0.14 * self.util
        core_a = max(0.0, (rails_mw - fixed_mw) / 1000.0 / core_v)
        current = []
        for name, ch_a, ch_v, volt, amps in PMIC_RAILS:
            if name == "VDD_CORE":
                volt, amps = core_v, core_a
            current.append([name, ch_a, ch_v, volt, amps])
        volts = [[name, ch_v, volt] for name, _, ch_v, volt, _ in current]
        volts += [
            [name, ch, v - (0.04 * self.util if name == "EXT5V" else 0.0)] for name, ch, v in PMIC_VOLT_ONLY
        ]
        state = {
            "pmic_current": current,
            "pmic_volt": volts,
            "pmic_rails_mw": rails_mw,
            "throttled": self.throttled,
            "temp_c": max(self.temps) if self.temps else cfg.ambient_c,
            "util": self.util,
            "power_mw": self.power_mw,
        }
        self.put(self.tree.state, json.dumps(state))

    def run(self) -> None:
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        signal.signal(signal.SIGINT, lambda *_: stop.append(1))
        period = self.cfg.tick_ms / 1000.0
        prev = time.monotonic()
        self.tick(prev, period)
        self.tree.ready.write_text(str(os.getpid()))
        deadline = prev
        while not stop:
            deadline += period
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                deadline = time.monotonic()
            now = time.monotonic()
            self.tick(now, now - prev)
            prev = now
            if self.cfg.watch_parent is not None and os.getppid() != self.cfg.watch_parent:
                break
        if self.truth is not None:
            self.truth.close()


# ----------------------------------------------------------------------------------------------
# start / stop


class EmulatedSensors:
    """``with EmulatedSensors(tmp_path / "emu", ina2xx="ina226") as emu:`` → emu.sysfs, emu.vcgencmd."""

    def __init__(self, base: Path, **options: Any) -> None:
        self.base = Path(base).resolve()
        self.cfg = EmulatorConfig(**options)
        self.tree = Tree(self.base, self.cfg)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def sysfs(self) -> Path:
        return self.tree.sys

    @property
    def vcgencmd(self) -> Path:
        return self.tree.bin / "vcgencmd"

    def build(self) -> EmulatedSensors:
        self.tree.build()
        return self

    def start(
        self, watch_parent: bool = True, timeout_s: float = 15.0, rebuild: bool = True
    ) -> EmulatedSensors:
        """Build the tree (unless ``rebuild`` is False: keep what build() made) and start the writer."""
        if watch_parent:
            self.cfg.watch_parent = os.getpid()
        if rebuild or not (self.tree.run / "config.json").exists():
            self.tree.build()
        else:
            (self.tree.run / "config.json").write_text(json.dumps(asdict(self.cfg)))
        self.tree.ready.unlink(missing_ok=True)
        log = open(self.tree.run / "writer.log", "ab")  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "_writer", "--dir", str(self.base)],
                env=_env_finding_edgeq(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=not watch_parent,
            )
        finally:
            log.close()
        self.tree.pidfile.write_text(str(self.proc.pid))
        t0 = time.monotonic()
        while not self.tree.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the sensor writer exited: {(self.tree.run / 'writer.log').read_text()[-500:]}"
                )
            if time.monotonic() - t0 > timeout_s:
                self.stop()
                raise RuntimeError("the sensor writer did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc.pid, self.proc)
            self.proc = None
        self.tree.pidfile.unlink(missing_ok=True)
        self.tree.ready.unlink(missing_ok=True)

    def state(self) -> dict[str, Any]:
        return json.loads(self.tree.state.read_text())

    def truth(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.tree.truth.read_text().splitlines() if line.strip()]

    def __enter__(self) -> EmulatedSensors:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _env_finding_edgeq() -> dict[str, str]:
    """The environment for ``python -m MODULE``: edgeq importable even when it is not installed."""
    env = dict(os.environ)
    top = str(Path(__file__).resolve().parents[2])  # the directory holding the edgeq package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (top, env.get("PYTHONPATH", "")) if p)
    return env


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None = None, grace_s: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    t0 = time.monotonic()
    while time.monotonic() - t0 < grace_s:
        if proc is not None:
            if proc.poll() is not None:
                return
        else:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


# ----------------------------------------------------------------------------------------------
# a "board" cgroup on a shared machine


def make_board_cgroup(name: str) -> str | None:
    """A cgroup whose CPU time stands for the board's load; None when cgroups are not writable here."""
    for base in (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
        if not (base / "cgroup.procs").exists():
            continue
        path = base / name
        try:
            path.mkdir(exist_ok=True)
        except OSError:
            continue
        if (path / "cpuacct.usage").exists() or (path / "cpu.stat").exists():
            return str(path)
        with contextlib.suppress(OSError):
            path.rmdir()
    return None


def join_cgroup(path: str, pid: int | None = None) -> None:
    (Path(path) / "cgroup.procs").write_text(str(pid or os.getpid()))


def remove_board_cgroup(path: str) -> None:
    """Move every process back to the parent cgroup, then remove the directory."""
    p = Path(path)
    with contextlib.suppress(OSError):
        for pid in (p / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (p.parent / "cgroup.procs").write_text(pid)
        p.rmdir()


# ----------------------------------------------------------------------------------------------
# CLI


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for key in (
        "ina2xx",
        "tick_ms",
        "idle_mw",
        "load_mw",
        "noise_mw",
        "rapl_max_uj",
        "tau_s",
        "ambient_c",
        "heat_c",
        "initial_c",
        "throttle_c",
        "governor",
        "util_source",
        "python",
    ):
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    if getattr(args, "families", None):
        opts["families"] = tuple(f.strip() for f in args.families.split(",") if f.strip())
    return opts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="emulated power/thermal sensors (fake sysfs + writer)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "run", "stop", "_writer", "build"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, type=Path)
        if name in ("start", "run", "build"):
            p.add_argument("--ina2xx", choices=("ina219", "ina226"))
            p.add_argument("--tick-ms", type=float)
            p.add_argument("--idle-mw", type=float)
            p.add_argument("--load-mw", type=float)
            p.add_argument("--noise-mw", type=float)
            p.add_argument("--rapl-max-uj", type=int)
            p.add_argument("--tau-s", type=float)
            p.add_argument("--ambient-c", type=float)
            p.add_argument("--heat-c", type=float)
            p.add_argument("--initial-c", type=float)
            p.add_argument("--throttle-c", type=float)
            p.add_argument("--governor", choices=GOVERNORS)
            p.add_argument("--util-source", help="proc-stat (default) or cgroup:PATH")
            p.add_argument(
                "--families", help="comma-separated subset of: " + ",".join(EmulatorConfig().families)
            )
            p.add_argument(
                "--python", help="interpreter for the vcgencmd stand-in (e.g. a chroot's /usr/bin/python3)"
            )
    args = parser.parse_args(argv)
    base = args.dir.resolve()
    if args.command == "_writer":
        cfg = EmulatorConfig.from_dict(json.loads((base / "run" / "config.json").read_text()))
        Writer(Tree(base, cfg)).run()
        return 0
    if args.command == "stop":
        pidfile = base / "run" / "writer.pid"
        if not pidfile.exists():
            print(f"no emulator running in {base}", file=sys.stderr)
            return 1
        _terminate(int(pidfile.read_text()))
        pidfile.unlink(missing_ok=True)
        (base / "run" / "ready").unlink(missing_ok=True)
        return 0
    emu = EmulatedSensors(base, **_options(args))
    if args.command == "build":
        emu.build()
        print(json.dumps({"sysfs_root": str(emu.sysfs), "vcgencmd": str(emu.vcgencmd)}))
        return 0
    if args.command == "start":
        emu.start(watch_parent=False)
        assert emu.proc is not None
        print(json.dumps({"sysfs_root": str(emu.sysfs), "vcgencmd": str(emu.vcgencmd), "pid": emu.proc.pid}))
        return 0
    emu.start(watch_parent=True)
    print(json.dumps({"sysfs_root": str(emu.sysfs), "vcgencmd": str(emu.vcgencmd)}), flush=True)
    try:
        while emu.proc is not None and emu.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
