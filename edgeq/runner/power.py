"""Power sources on the device, sampling, and energy per inference.

Device side: standard library + NumPy, Python 3.8 syntax.

Two kinds of reader (units are part of each reader's contract):

* ``power`` readers return the instantaneous power in **mW** (hwmon ``ina2xx`` and ``ina3221``,
  Jetson JetPack 4 iio rails, Raspberry Pi 5 PMIC via ``vcgencmd``, an external meter printing W);
* ``energy`` readers return cumulative counters in **µJ**, one per domain (Intel RAPL powercap,
  an external meter printing J). Counters are differenced, with wrap-around handled per domain.

A :class:`PowerMeter` samples the reader on a background thread (timestamps from
``time.monotonic_ns``), while the main thread marks the idle baseline and the measured window.
:func:`summarize` turns the trace into ``power_mw`` {idle, active_mean, active_p95},
``energy_mj_per_inference`` (net of idle) and its uncertainty.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sensors import (
    ConfigReader,
    PeriodicSampler,
    SensorError,
    Warnings,
    list_dir,
    numbered,
    os_error_text,
    read_number,
    run_command,
    sys_path,
    try_read_number,
    try_read_text,
)

SOURCES = ("none", "auto", "ina2xx", "hwmon", "ina3221", "jetson-iio", "rpi5-pmic", "rapl", "external")
# hwmon ``name`` values of the chips the ina2xx driver family serves (ina238 has its own driver with
# the same attributes and units).
INA2XX_NAMES = ("ina219", "ina220", "ina226", "ina230", "ina231", "ina209", "ina238", "ina237")
# Rails that already are the whole module's input: summing them with the others would double count.
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN_SYS_5V0", "VIN")
SYSFS_RATE_HZ = 100.0
# Each vcgencmd / meter call forks a process: at 100 Hz that alone would load a small board.
PROCESS_RATE_HZ = 10.0

RPI5_SCOPE = (
    "sum of the PMIC's rails (SoC core, memory, I/O): it undercounts the 5 V input, which also "
    "feeds USB, the fan and conversion losses"
)
RAPL_HINT = (
    "since Linux 5.10 (CVE-2020-8694) energy_uj is readable by root only: run the runner as root, or "
    "grant read access with 'sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj' (until reboot; "
    "a systemd-tmpfiles line 'z /sys/class/powercap/intel-rapl:0/energy_uj 0444 - - -' makes it stick)"
)


# --------------------------------------------------------------------------------------------------
# readers


class Reader:
    """A power source. ``kind`` says what ``read()`` returns: ``"power"`` → mW, ``"energy"`` → µJ tuple."""

    kind = "power"
    source = ""
    update_interval_s: Optional[float] = None  # how often the sensor produces a new value, if it says
    spawns_process = False
    sampled = True  # energy counters read only at the window edges set this False
    max_range_uj: Tuple[Optional[float], ...] = ()  # energy readers: where each counter wraps

    def read(self) -> Any:
        raise NotImplementedError

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind}

    def check(self) -> None:
        """Read once now, so a sensor that exists but cannot be read fails at open, not mid-run."""
        try:
            self.read()
        except OSError as exc:
            raise SensorError(
                "%s sensor cannot be read: %s" % (self.source, os_error_text(exc)),
                "check the file's permissions (or run the runner as root)",
            ) from None


def _hwmon_dirs(root: str) -> List[Tuple[str, str]]:
    """(attribute directory, name) of every hwmon device, in hwmonN order.

    Attributes live in ``hwmonN/``; kernels before 3.x kept them in ``hwmonN/device/``.
    """
    base = sys_path(root, "class", "hwmon")
    out = []
    for _, entry in numbered(list_dir(base), "hwmon"):
        d = os.path.join(base, entry)
        for attrs in (d, os.path.join(d, "device")):
            name = try_read_text(os.path.join(attrs, "name"))
            if name is not None:
                out.append((attrs, name))
                break
    return out


def _update_interval_s(directory: str) -> Optional[float]:
    ms = try_read_number(os.path.join(directory, "update_interval"))  # hwmon ABI: milliseconds
    return ms / 1000.0 if ms and ms > 0 else None


def _pick_rails(available: Sequence[str], wanted: Optional[Sequence[str]], what: str) -> List[str]:
    if wanted:
        by_upper = {a.upper(): a for a in available}
        missing = [w for w in wanted if w.upper() not in by_upper]
        if missing:
            raise SensorError(
                "%s has no rail %s (it has: %s)" % (what, ", ".join(missing), ", ".join(available) or "none"),
                "set rails to some of: %s" % ", ".join(available),
            )
        return [by_upper[w.upper()] for w in wanted]
    totals = [a for a in available if a.upper() in TOTAL_RAILS]
    return totals[:1] if totals else list(available)


class Ina2xx(Reader):
    """hwmon ``ina2xx`` (INA219/220/226/230/231...): the board's input as the shunt sees it.

    ``power1_input`` µW; ``in1_input`` bus voltage mV (``in0_input`` is the shunt voltage);
    ``curr1_input`` mA; ``update_interval`` ms (INA226 family only). ``hwmonN`` changes across
    boots, so the device is found by its ``name`` file.
    """

    source = "ina2xx"

    def __init__(self, root: str, sensor: Optional[str] = None, match: Optional[str] = None) -> None:
        names = (sensor,) if sensor else INA2XX_NAMES
        found = [(d, n) for d, n in _hwmon_dirs(root) if n in names]
        if match:
            found = [(d, n) for d, n in found if match in os.path.realpath(d)]
        if not found:
            raise SensorError(
                "no hwmon device named %s under %s" % ("/".join(names), sys_path(root, "class", "hwmon")),
                "is the ina2xx driver bound? 'cat /sys/class/hwmon/hwmon*/name' lists the sensors; "
                "set sensor to the right name",
            )
        self.dir, self.name = found[0]
        self.power_path = os.path.join(self.dir, "power1_input")
        self.volt_path = os.path.join(self.dir, "in1_input")
        self.curr_path = os.path.join(self.dir, "curr1_input")
        self.has_power = os.path.exists(self.power_path)
        if not self.has_power and not (os.path.exists(self.volt_path) and os.path.exists(self.curr_path)):
            raise SensorError(
                "%s (%s) has neither power1_input nor in1_input + curr1_input" % (self.name, self.dir)
            )
        self.update_interval_s = _update_interval_s(self.dir)
        self.check()

    def read(self) -> float:
        if self.has_power:
            return read_number(self.power_path) / 1000.0  # µW → mW
        return read_number(self.volt_path) * read_number(self.curr_path) / 1000.0  # mV·mA = µW → mW

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "path": self.dir,
            "attribute": "power1_input" if self.has_power else "in1_input*curr1_input",
            "scope": "what flows through the sensor's shunt (usually the board's input)",
        }


class Ina3221(Reader):
    """hwmon ``ina3221`` (Jetson Orin/Xavier on JetPack 5/6): three rails per chip.

    ``in[1-3]_input`` bus voltage mV, ``curr[1-3]_input`` mA, ``in[1-3]_label`` rail name,
    ``in[1-3]_enable``; ``update_interval`` ms. Rail power = mV·mA/1000 mW; the chosen rails are
    summed. By default a whole-input rail (VDD_IN) alone, else every rail.
    """

    source = "ina3221"

    def __init__(self, root: str, rails: Optional[Sequence[str]] = None) -> None:
        channels: Dict[str, Tuple[str, str]] = {}
        intervals = []
        chips = [d for d, n in _hwmon_dirs(root) if n == "ina3221"]
        for d in chips:
            for ch in (1, 2, 3):
                volt = os.path.join(d, "in%d_input" % ch)
                curr = os.path.join(d, "curr%d_input" % ch)
                if not (os.path.exists(volt) and os.path.exists(curr)):
                    continue
                if try_read_text(os.path.join(d, "in%d_enable" % ch)) == "0":
                    continue
                label = try_read_text(os.path.join(d, "in%d_label" % ch)) or "%s:in%d" % (
                    os.path.basename(d),
                    ch,
                )
                channels[label] = (volt, curr)
            ui = _update_interval_s(d)
            if ui:
                intervals.append(ui)
        if not channels:
            raise SensorError(
                "no enabled ina3221 channel under %s" % sys_path(root, "class", "hwmon"),
                "on JetPack 5/6 the INA3221 is an hwmon device named ina3221; on JetPack 4 use jetson-iio",
            )
        self.rails = _pick_rails(list(channels), rails, "the ina3221")
        self.available = sorted(channels)
        self.paths = [channels[r] for r in self.rails]
        self.chips = chips
        self.update_interval_s = max(intervals) if intervals else None
        self.check()

    def read(self) -> float:
        total = 0.0
        for volt, curr in self.paths:
            total += read_number(volt) * read_number(curr) / 1000.0  # mV·mA = µW → mW
        return total

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "name": "ina3221",
            "path": self.chips,
            "rails": self.rails,
            "available": self.available,
        }


class JetsonIio(Reader):
    """Jetson JetPack 4 (``ina3221x`` iio driver): ``in_power<N>_input`` mW per rail ``rail_name_<N>``.

    (``in_current<N>_input`` mA and ``in_voltage<N>_input`` mV exist too; power is read directly.)
    """

    source = "jetson-iio"

    def __init__(self, root: str, rails: Optional[Sequence[str]] = None) -> None:
        dirs = []
        seen = set()
        candidates = [sys_path(root, "bus", "iio", "devices")]
        drivers = sys_path(root, "bus", "i2c", "drivers", "ina3221x")
        candidates += [os.path.join(drivers, e) for e in list_dir(drivers)]
        for base in candidates:
            for _, entry in numbered(list_dir(base), "iio:device"):
                d = os.path.join(base, entry)
                real = os.path.realpath(d)
                if real not in seen:
                    seen.add(real)
                    dirs.append(d)
        channels: Dict[str, str] = {}
        for d in dirs:
            for entry in list_dir(d):
                m = re.match(r"^rail_name_(\d+)$", entry)
                power = os.path.join(d, "in_power%s_input" % m.group(1)) if m else ""
                if m and os.path.exists(power):
                    name = try_read_text(os.path.join(d, entry)) or entry
                    channels[name] = power
        if not channels:
            raise SensorError(
                "no iio device with rail_name_* / in_power*_input under %s" % candidates[0],
                "this is JetPack 4's ina3221x driver; on JetPack 5/6 use ina3221",
            )
        self.rails = _pick_rails(sorted(channels), rails, "the Jetson's ina3221x")
        self.available = sorted(channels)
        self.paths = [channels[r] for r in self.rails]
        self.check()

    def read(self) -> float:
        return sum(read_number(p) for p in self.paths)  # mW

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "name": "ina3221x", "rails": self.rails, "available": self.available}


_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\((\d+)\)=(\S+?)([AV])\s*$")


def parse_pmic_read_adc(text: str) -> Dict[str, Dict[str, float]]:
    """``vcgencmd pmic_read_adc`` (Raspberry Pi 5) → {rail: {"current_a", "volt_v"}}.

    Lines look like ``  VDD_CORE_A current(7)=2.34567000A`` and ``  VDD_CORE_V volt(15)=0.78000000V``;
    a rail's current and voltage have different ADC channel numbers, so they pair by name. Some
    rails have a voltage only (``EXT5V_V``, ``BATT_V``); unreadable values (``nanV``) are skipped.
    """
    rails: Dict[str, Dict[str, float]] = {}
    for line in text.splitlines():
        m = _PMIC_LINE.match(line)
        if not m:
            continue
        rail, suffix, what, _channel, raw, unit = m.groups()
        if (suffix, what, unit) not in (("A", "current", "A"), ("V", "volt", "V")):
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isnan(value) or math.isinf(value):
            continue
        rails.setdefault(rail, {})["current_a" if suffix == "A" else "volt_v"] = value
    return rails


def pmic_power_mw(rails: Dict[str, Dict[str, float]], chosen: Optional[Sequence[str]] = None) -> float:
    """Σ V·A over the rails that have both (or the chosen ones), in mW."""
    total = 0.0
    for name, r in rails.items():
        if chosen is not None and name not in chosen:
            continue
        if "current_a" in r and "volt_v" in r:
            total += r["current_a"] * r["volt_v"] * 1000.0  # A·V = W → mW
    return total


class RpiPmic(Reader):
    """Raspberry Pi 5: the PMIC's ADC through ``vcgencmd pmic_read_adc`` (A and V per rail).

    Every rail with a current and a voltage is parsed; power is the sum over the chosen rails
    (default: all). This undercounts the board: the 5 V input (``EXT5V_V``) has no current reading.
    """

    source = "rpi5-pmic"
    spawns_process = True

    def __init__(self, vcgencmd: str, rails: Optional[Sequence[str]] = None, timeout_s: float = 2.0) -> None:
        self.argv = [vcgencmd, "pmic_read_adc"]
        self.timeout_s = timeout_s
        try:
            parsed = parse_pmic_read_adc(run_command(self.argv, timeout_s))
        except SensorError as exc:
            raise SensorError(
                "Raspberry Pi 5 PMIC not available: %s" % exc.message,
                "needs a Pi 5 with vcgencmd (libraspberrypi-bin) and a user in the video group",
            ) from None
        paired = sorted(n for n, r in parsed.items() if "current_a" in r and "volt_v" in r)
        if not paired:
            raise SensorError("vcgencmd pmic_read_adc printed no rail with both current and voltage", "")
        self.available = paired
        self.rails = list(paired) if not rails else _pick_rails(paired, rails, "the PMIC")

    def read(self) -> float:
        return pmic_power_mw(parse_pmic_read_adc(run_command(self.argv, self.timeout_s)), self.rails)

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "name": "pmic_read_adc", "rails": self.rails, "scope": RPI5_SCOPE}


class Rapl(Reader):
    """Intel RAPL through powercap: ``intel-rapl:<N>/energy_uj``, cumulative µJ.

    The counter wraps at ``max_energy_range_uj`` (µJ) — every ~60 s at full load on some parts —
    so readings are differenced with wrap handling. Default domains: the top-level packages
    (``intel-rapl:0``, ``intel-rapl:1``...), not their subzones (core, uncore, dram), which the
    package already contains. Readable by root only on kernels since 5.10.
    """

    kind = "energy"
    source = "rapl"

    def __init__(self, root: str, domains: Optional[Sequence[str]] = None) -> None:
        base = sys_path(root, "class", "powercap")
        entries = list_dir(base)
        if domains:
            chosen = list(domains)
            missing = [d for d in chosen if d not in entries]
            if missing:
                raise SensorError(
                    "no RAPL domain %s under %s" % (", ".join(missing), base),
                    "available: %s" % ", ".join(e for e in entries if e.startswith("intel-rapl:")),
                )
        else:
            chosen = [e for e in entries if re.match(r"^intel-rapl:\d+$", e)]
        if not chosen:
            raise SensorError(
                "no RAPL domain under %s" % base,
                "RAPL needs an Intel (or recent AMD) x86 CPU and the intel_rapl_msr module",
            )
        self.domains = chosen
        self.paths = [os.path.join(base, d, "energy_uj") for d in chosen]
        self.names = [try_read_text(os.path.join(base, d, "name")) or d for d in chosen]
        ranges = [try_read_number(os.path.join(base, d, "max_energy_range_uj")) for d in chosen]
        self.max_range_uj = tuple(ranges)
        try:
            self.read()
        except PermissionError as exc:
            raise SensorError("cannot read %s: %s" % (exc.filename, exc.strerror), RAPL_HINT) from None
        except OSError as exc:
            raise SensorError("cannot read RAPL energy: %s" % os_error_text(exc), RAPL_HINT) from None

    def read(self) -> Tuple[float, ...]:
        return tuple(read_number(p) for p in self.paths)  # µJ, cumulative

    def describe(self) -> Dict[str, Any]:
        return {
            "kind": self.kind,
            "domains": self.domains,
            "names": self.names,
            "max_energy_range_uj": list(self.max_range_uj),
            "scope": "CPU package(s) only: not memory, storage or the rest of the board",
        }


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class External(Reader):
    """A meter behind a user's command (a USB power meter's CLI, a smart plug's API...).

    ``unit`` ``"W"``: each call prints the present power in watts (sampled like a sensor);
    ``"J"``: each call prints a cumulative energy in joules, read at the window edges (and sampled
    only if ``sample`` is set), wrapping at ``wrap_j`` if the meter does. The first number in the
    output is taken.
    """

    source = "external"
    spawns_process = True

    def __init__(
        self, command: Sequence[str], unit: str, sample: bool, wrap_j: Optional[float], timeout_s: float
    ) -> None:
        self.argv = list(command)
        self.unit = unit
        self.timeout_s = timeout_s
        if unit == "J":
            self.kind = "energy"
            self.sampled = sample
            self.max_range_uj = (wrap_j * 1e6 if wrap_j else None,)
        try:
            self.read()
        except SensorError as exc:
            raise SensorError(
                "external meter: %s" % exc.message, "check the command in the power config"
            ) from None

    def _value(self) -> float:
        out = run_command(self.argv, self.timeout_s)
        m = _NUMBER.search(out)
        if not m:
            raise SensorError("%s printed no number: %r" % (self.argv[0], out.strip()[:80]))
        return float(m.group(0))

    def read(self) -> Any:
        value = self._value()
        if self.kind == "energy":
            return (value * 1e6,)  # J → µJ
        return value * 1000.0  # W → mW

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "command": self.argv, "unit": self.unit}


# --------------------------------------------------------------------------------------------------
# config


class PowerConfig:
    """The power part of the runner's sensor config (``--power-config JSON``)."""

    KEYS = (
        "source",
        "sensor",
        "match",
        "rails",
        "domains",
        "command",
        "unit",
        "sample",
        "wrap_j",
        "timeout_s",
        "rate_hz",
        "idle_s",
        "settle_s",
        "min_samples",
        "min_window_s",
        "lag_ms",
        "trace",
        "trace_max_points",
    )

    def __init__(self, data: Dict[str, Any], option: str = "--power-config") -> None:
        c = ConfigReader(data, option, self.KEYS)
        self.source = c.string("source", "auto", SOURCES) or "auto"
        self.sensor = c.string("sensor", None)
        self.match = c.string("match", None)
        self.rails = c.strings("rails")
        self.domains = c.strings("domains")
        command = data.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if command is not None and (
            not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command)
        ):
            raise c._bad("command", "a command line (string or list of strings)")
        self.command: Optional[List[str]] = command
        self.unit = c.string("unit", "W", ("W", "J")) or "W"
        self.sample = bool(c.flag("sample", False))
        self.wrap_j = c.number("wrap_j", None, positive=True)
        self.timeout_s = c.number("timeout_s", 2.0, positive=True) or 2.0
        self.rate_hz = c.number("rate_hz", None, positive=True)
        self.idle_s = c.number("idle_s", 2.0) or 0.0
        self.settle_s = c.number("settle_s", None)
        self.min_samples = int(c.number("min_samples", 20, minimum=1) or 20)
        self.min_window_s = c.number("min_window_s", 1.0) or 0.0
        self.lag_ms = c.number("lag_ms", None)
        self.trace = bool(c.flag("trace", True))
        self.trace_max_points = int(c.number("trace_max_points", 2000, minimum=10) or 2000)
        if self.source == "external" and not self.command:
            raise c._bad("command", "given when source is external")
        if self.source == "hwmon" and not self.sensor:
            self.source = "ina2xx"  # hwmon without a name: any chip of the ina2xx family

    def as_dict(self) -> Dict[str, Any]:
        out = {}
        for k in self.KEYS:
            v = getattr(self, k)
            if v is None or (k in ("unit", "sample", "wrap_j") and self.source != "external"):
                continue
            out[k] = v
        return out


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Optional[Reader]:
    """The configured sensor, checked by one read; None for ``none``. SensorError when it is not there."""
    source = cfg.source
    if source == "none":
        return None
    if source in ("ina2xx", "hwmon"):
        return Ina2xx(root, cfg.sensor, cfg.match)
    if source == "ina3221":
        return Ina3221(root, cfg.rails)
    if source == "jetson-iio":
        return JetsonIio(root, cfg.rails)
    if source == "rpi5-pmic":
        return RpiPmic(vcgencmd, cfg.rails, cfg.timeout_s)
    if source == "rapl":
        return Rapl(root, cfg.domains)
    if source == "external":
        assert cfg.command is not None
        return External(cfg.command, cfg.unit, cfg.sample, cfg.wrap_j, cfg.timeout_s)
    # auto: the most specific sensor first; RAPL (CPU package only) last.
    tried = []
    for name in ("ina3221", "jetson-iio", "ina2xx", "rpi5-pmic", "rapl"):
        try:
            sub = PowerConfig(dict(cfg.as_dict(), source=name))
            return open_reader(sub, root, vcgencmd)
        except SensorError as exc:
            tried.append("%s (%s)" % (name, exc.message))
    raise SensorError(
        "no power sensor found; tried " + "; ".join(tried),
        "set the profile's power_source to the board's sensor, or 'none'",
    )


# --------------------------------------------------------------------------------------------------
# sampling


class PowerTrace:
    """What a PowerMeter recorded: readings (t monotonic ns, value) and named marks (t ns)."""

    def __init__(self) -> None:
        self.times: List[int] = []
        self.values: List[Any] = []
        self.marks: Dict[str, int] = {}
        self.errors = 0
        self.first_error: Optional[BaseException] = None


class PowerMeter:
    """The PowerSource of one run: ``start()``, ``mark(name)`` from the main thread, ``stop() -> PowerTrace``.

    Energy counters are also read synchronously at each mark, so a window's energy is an exact
    difference of two readings rather than an interpolation.
    """

    def __init__(self, reader: Reader, cfg: PowerConfig) -> None:
        self.reader = reader
        self.cfg = cfg
        default = PROCESS_RATE_HZ if reader.spawns_process else SYSFS_RATE_HZ
        self.requested_hz = cfg.rate_hz or default
        rate = self.requested_hz
        if reader.update_interval_s:
            # Sampling faster than the sensor converts only repeats its last value.
            rate = min(rate, 1.0 / reader.update_interval_s)
        self.target_hz = rate
        self._sampler = PeriodicSampler(reader.read, 1.0 / rate, "edgeq-power")
        self._mark_readings: List[Tuple[int, Any]] = []
        self.trace = PowerTrace()
        self._started = False

    @property
    def sampled(self) -> bool:
        return self.reader.sampled

    def start(self) -> None:
        if self.sampled:
            self._sampler.start()
        self._started = True

    def mark(self, name: str) -> int:
        if self.reader.kind == "energy":
            try:
                t, value = self._sampler.read_now()
                self._mark_readings.append((t, value))
                self.trace.marks[name] = t
                return t
            except Exception as exc:
                self.trace.errors += 1
                if self.trace.first_error is None:
                    self.trace.first_error = exc
        t = time.monotonic_ns()
        self.trace.marks[name] = t
        return t

    def samples_between(self, a: str, b: str) -> int:
        ta, tb = self.trace.marks.get(a), self.trace.marks.get(b)
        if ta is None or tb is None:
            return 0
        return sum(1 for t in list(self._sampler.times) if ta <= t <= tb)

    def achieved_hz(self, a: str, b: str) -> Optional[float]:
        ta, tb = self.trace.marks.get(a), self.trace.marks.get(b)
        if not self.sampled or ta is None or tb is None or tb <= ta:
            return None
        return self.samples_between(a, b) / ((tb - ta) / 1e9)

    def lag_s(self) -> float:
        """How far readings trail the power they describe: a sensor averages over its conversion time."""
        if self.cfg.lag_ms is not None:
            return self.cfg.lag_ms / 1000.0
        if self.reader.kind == "power" and self.reader.update_interval_s:
            return self.reader.update_interval_s
        return 0.0

    def settle_s(self) -> float:
        if self.cfg.settle_s is not None:
            return self.cfg.settle_s
        period = 1.0 / self.target_hz
        return max(0.2, 3 * max(period, self.reader.update_interval_s or 0.0))

    def tail_s(self) -> float:
        return self.lag_s() + (3.0 / self.target_hz if self.sampled else 0.0)

    def required_window_s(self, idle_hz: Optional[float]) -> float:
        """Shortest measured window that gives ``min_samples`` independent readings (and ``min_window_s``)."""
        need = self.cfg.min_window_s
        if self.sampled:
            rate = idle_hz if idle_hz else self.target_hz
            rate = min(rate, self.target_hz)
            need = max(need, 1.1 * self.cfg.min_samples / max(rate, 1e-6))
        return need

    def stop(self) -> PowerTrace:
        if self._started and self.sampled:
            self._sampler.stop()
        s = self._sampler
        readings = list(zip(s.times, s.values)) + self._mark_readings  # noqa: B905 (3.8: no strict=)
        readings.sort(key=lambda tv: tv[0])
        self.trace.times = [t for t, _ in readings]
        self.trace.values = [v for _, v in readings]
        self.trace.errors += s.errors
        if self.trace.first_error is None:
            self.trace.first_error = s.first_error
        return self.trace


# --------------------------------------------------------------------------------------------------
# analysis


def unwrap_counter(values: Sequence[float], max_range: Optional[float]) -> Tuple[np.ndarray, int, int]:
    """Cumulative counter readings → energy since the first reading; also (wraps, resets).

    A reading below its predecessor is a wrap when the counter's range is known and the drop is
    more than half of it (the kernel counts modulo ``max_energy_range_uj``, give or take one LSB),
    so wraps must be rarer than readings: RAPL's ~60 s worst case against readings every 10 ms.
    Any other step back is a reset: a drop to near zero counts the new reading as the energy since
    the reset; a small step back (a glitch) is skipped, and later readings compare with the last good one.
    """
    v = [float(x) for x in values]
    if not v:
        return np.zeros(0), 0, 0
    cum = [0.0]
    total = 0.0
    ref = v[0]  # the last reading taken at face value
    wraps = resets = 0
    for x in v[1:]:
        step = x - ref
        if step >= 0:
            total += step
            ref = x
        elif max_range and -step > max_range / 2.0:
            total += step + max_range
            ref = x
            wraps += 1
        else:
            resets += 1
            if x < -step:  # back to about zero: a reset, x is what came since
                total += x
                ref = x
            # else a glitch: ignore this reading, keep comparing with ref
        cum.append(total)
    return np.asarray(cum), wraps, resets


def integrate_mj(t_s: np.ndarray, p_mw: np.ndarray, a: float, b: float) -> float:
    """∫ p dt over [a, b] (s) of the piecewise-linear trace: mW·s = mJ. Edges are interpolated."""
    inside = (t_s > a) & (t_s < b)
    xs = np.concatenate([[a], t_s[inside], [b]])
    ys = np.concatenate([[np.interp(a, t_s, p_mw)], p_mw[inside], [np.interp(b, t_s, p_mw)]])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def batch_mean_se(values: np.ndarray, batches: int = 10) -> Optional[float]:
    """Standard error of a mean of autocorrelated samples, by batch means.

    Consecutive power readings are not independent (sensor averaging, slow load changes), so the
    naive std/√n is too optimistic; the spread of up to ``batches`` contiguous batch means is not.
    """
    n = int(values.size)
    if n < 2:
        return None
    nb = min(batches, n // 2)
    if nb < 3:
        return float(np.std(values, ddof=1) / math.sqrt(n))
    means = np.array([b.mean() for b in np.array_split(values, nb)])
    return float(np.std(means, ddof=1) / math.sqrt(nb))


def _r(x: Optional[float], nd: int = 3) -> Optional[float]:
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), nd)


def _downsample(t: np.ndarray, p: np.ndarray, limit: int) -> Tuple[np.ndarray, np.ndarray]:
    if t.size <= limit:
        return t, p
    parts = np.array_split(np.arange(t.size), limit)
    return np.array([t[i].mean() for i in parts]), np.array([p[i].mean() for i in parts])


def summarize(meter: PowerMeter, trace: PowerTrace, invokes: int, warnings: Warnings) -> Dict[str, Any]:
    """The ``power`` object of the result.

    Marks used: ``start`` (sampling began; trace times count from it), ``idle_start`` (after the
    settle time) and ``idle_end`` (the idle baseline), ``measure_start`` / ``measure_end``.
    """
    reader, cfg = meter.reader, meter.cfg
    m = trace.marks
    out: Dict[str, Any] = {"available": True, "source": reader.source, "sensor": reader.describe()}
    if reader.source == "rpi5-pmic":
        out["note"] = RPI5_SCOPE
    lag = meter.lag_s()
    t0 = m.get("start", trace.times[0] if trace.times else 0)
    a_ns, b_ns = m.get("measure_start"), m.get("measure_end")
    i0_ns, i1_ns = m.get("idle_start"), m.get("idle_end")
    out["rate_hz"] = {
        "requested": _r(meter.requested_hz, 2),
        "target": _r(meter.target_hz, 2),
        "achieved": _r(meter.achieved_hz("measure_start", "measure_end"), 2),
    }
    if reader.update_interval_s:
        out["sensor"]["update_interval_ms"] = _r(reader.update_interval_s * 1000, 3)
    failed = None
    if trace.errors:
        first = trace.first_error
        failed = "the %s power sensor failed %d of %d reads (%s)" % (
            reader.source,
            trace.errors,
            trace.errors + len(trace.times),
            os_error_text(first) if first is not None else "?",
        )
    if a_ns is None or b_ns is None or len(trace.times) < 2:
        reason = "the %s power sensor gave no usable readings" % reader.source
        if failed:
            reason += ": " + failed
        warnings.warn("power.read_failed" if failed else "power.no_data", reason, "check the sensor")
        out["available"] = False
        out["reason"] = reason
        return out
    if failed:
        warnings.warn("power.read_failed", failed, "the figures use the reads that worked")

    t_s = (np.asarray(trace.times, dtype=np.int64) - t0) / 1e9
    a, b = (a_ns - t0) / 1e9, (b_ns - t0) / 1e9
    idle_a = (i0_ns - t0) / 1e9 if i0_ns is not None else None
    idle_b = (i1_ns - t0) / 1e9 if i1_ns is not None else None
    duration = b - a
    wraps = resets = 0
    quantum_mj = 0.0
    if reader.kind == "energy":
        values = trace.values
        ndom = len(values[0])
        total = np.zeros(len(values))
        for k in range(ndom):
            rng = reader.max_range_uj[k] if k < len(reader.max_range_uj) else None
            cum, w, r = unwrap_counter([v[k] for v in values], rng)
            total += cum
            wraps += w
            resets += r
        e_mj = total / 1000.0  # µJ → mJ, since the first reading
        steps = np.diff(e_mj)
        positive = steps[steps > 0]
        quantum_mj = float(positive.min()) if positive.size else 0.0
        dt = np.diff(t_s)
        ok = dt > 0
        p_t = ((t_s[1:] + t_s[:-1]) / 2.0)[ok]
        p_mw = (steps[ok] / dt[ok]) if ok.any() else np.zeros(0)  # mJ/s = mW
        energy_active = float(np.interp(b, t_s, e_mj) - np.interp(a, t_s, e_mj))
        if idle_a is not None and idle_b is not None and idle_b > idle_a:
            idle_mw: Optional[float] = float(
                (np.interp(idle_b, t_s, e_mj) - np.interp(idle_a, t_s, e_mj)) / (idle_b - idle_a)
            )
        else:
            idle_mw = None
        if resets:
            warnings.warn(
                "power.counter_reset",
                "the energy counter went backwards %d time(s) without wrapping" % resets,
                "set wrap_j for a meter that wraps, or check that nothing resets it during a run",
            )
    else:
        p_t = t_s - lag  # a reading describes the power ~lag earlier
        p_mw = np.asarray(trace.values, dtype=np.float64)
        energy_active = integrate_mj(p_t, p_mw, a, b)
        idle_mw = None
        if idle_a is not None and idle_b is not None:
            sel = (p_t >= idle_a) & (p_t <= idle_b)
            if sel.any():
                idle_mw = float(p_mw[sel].mean())

    in_window = (p_t >= a) & (p_t <= b)
    active = p_mw[in_window]
    idle_sel = (p_t >= idle_a) & (p_t <= idle_b) if idle_a is not None and idle_b is not None else None
    idle_vals = p_mw[idle_sel] if idle_sel is not None else np.zeros(0)
    n_active = int(active.size)
    active_mean = energy_active / duration if duration > 0 else None
    if idle_mw is None:
        warnings.warn(
            "power.no_idle_baseline",
            "no idle baseline (idle_s = %g): energy per inference is gross, not net of idle" % cfg.idle_s,
            "set idle_s (seconds) in the power config",
        )
    net_mj = energy_active - (idle_mw or 0.0) * duration
    per_inf = net_mj / invokes if invokes else None

    # Uncertainty (1 sigma) of the net energy: spread of the active and idle means (batch means, so
    # autocorrelated readings are not counted as independent) times the window length, plus the
    # window edges, each known only to within one sensor period (uniform: sigma = period/sqrt(12)),
    # plus one counter LSB per difference for energy counters. Terms add in quadrature.
    se_active = batch_mean_se(active) if meter.sampled else None
    se_idle = batch_mean_se(idle_vals) if meter.sampled and idle_mw is not None else None
    period = max(1.0 / meter.target_hz, reader.update_interval_s or 0.0)
    if reader.kind == "energy":
        period = 0.0 if not meter.sampled else 1e-3  # edges are read exactly; counters tick ~1 ms
    delta_p = abs((active_mean or 0.0) - (idle_mw or 0.0))
    terms = [
        (se_active or 0.0) * duration,
        (se_idle or 0.0) * duration,
        delta_p * period * math.sqrt(2.0 / 12.0),
        quantum_mj * math.sqrt(2.0),
    ]
    sigma_mj = math.sqrt(sum(x * x for x in terms))
    if not meter.sampled:
        method = "counter read at the window edges only: sigma is the counter resolution, no spread known"
    else:
        method = (
            "1 sigma: batch-means standard error of the active and idle mean power times the window, "
            "window edges uncertain by one sensor period, counter resolution; added in quadrature"
        )

    if meter.sampled and n_active < cfg.min_samples:
        warnings.warn(
            "power.too_few_samples",
            "only %d power samples in the measured window (want >= %d): energy figures are coarse"
            % (n_active, cfg.min_samples),
            "raise min_seconds / runs, or the sensor's rate",
        )
    if per_inf is not None and net_mj <= 0:
        warnings.warn(
            "power.below_idle",
            "active power (%.1f mW) is not above idle (%.1f mW): the model's energy is lost in the noise"
            % (active_mean or 0.0, idle_mw or 0.0),
            "measure longer (min_seconds), or check what else runs on the device",
        )
    elif per_inf is not None and sigma_mj > 0.25 * abs(net_mj):
        warnings.warn(
            "power.imprecise",
            "energy per inference is uncertain by %.0f %%" % (100.0 * sigma_mj / abs(net_mj)),
            "measure longer (min_seconds) or idle longer (idle_s)",
        )

    p95 = float(np.percentile(active, 95)) if n_active else None
    out.update(
        {
            "power_mw": {"idle": _r(idle_mw, 2), "active_mean": _r(active_mean, 2), "active_p95": _r(p95, 2)},
            "energy_mj_per_inference": _r(per_inf, 6),
            "energy_mj_per_inference_sigma": _r(sigma_mj / invokes if invokes else None, 6),
            "energy_uncertainty": method,
            "energy_mj": {
                "measure": _r(energy_active, 4),
                "net": _r(net_mj, 4),
                "sigma": _r(sigma_mj, 4),
            },
            "samples": {
                "total": len(trace.values),
                "idle": int(idle_vals.size),
                "measure": n_active,
                "failed": trace.errors,
            },
            "window": {
                "t0_monotonic_ns": int(t0),
                "idle_s": _r(idle_b - idle_a, 4) if idle_a is not None and idle_b is not None else None,
                "settle_s": _r(meter.settle_s(), 4),
                "measure_s": _r(duration, 6),
                "invokes": invokes,
                "lag_ms": _r(lag * 1000, 3),
            },
        }
    )
    if reader.kind == "energy":
        out["sensor"]["wraps"] = wraps
        out["sensor"]["resolution_mj"] = _r(quantum_mj, 6)
    if cfg.trace:
        tt, pp = _downsample(p_t, p_mw, cfg.trace_max_points)
        marks_ms = {}
        for name, (s, e) in (
            ("idle", ("idle_start", "idle_end")),
            ("warmup", ("idle_end", "measure_start")),
            ("measure", ("measure_start", "measure_end")),
        ):
            if s in m and e in m:
                marks_ms[name] = [round((m[s] - t0) / 1e6, 1), round((m[e] - t0) / 1e6, 1)]
        out["trace"] = {
            "t_ms": [round(float(x) * 1000, 1) for x in tt],
            "mw": [round(float(x), 1) for x in pp],
            "marks_ms": marks_ms,
            "downsampled_from": int(p_t.size) if p_t.size > tt.size else None,
        }
    return out


def unavailable(source: str, reason: str) -> Dict[str, Any]:
    return {"available": False, "source": source, "reason": reason}
