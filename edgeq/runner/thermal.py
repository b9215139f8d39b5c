"""Thermal state around a measurement: zones, CPU frequencies, throttling, governor, cool-down.

Device side: standard library + NumPy, Python 3.8 syntax. Paths are relative to the sysfs root:

* ``class/thermal/thermal_zone<N>/{type,temp}`` — temp in m°C;
* ``devices/system/cpu/cpufreq/policy<N>/`` — ``scaling_{cur,min,max}_freq`` and
  ``cpuinfo_{min,max}_freq`` in kHz, ``scaling_governor``, ``scaling_available_governors``,
  ``affected_cpus``;
* Raspberry Pi: ``vcgencmd get_throttled`` → ``throttled=0x50005`` (bits decoded below).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .sensors.common import (
    ConfigReader,
    PeriodicSampler,
    SensorError,
    Warnings,
    os_error_text,
    read_text,
    run_command,
    sys_path,
    try_read_text,
)
from .sensors.zones import Policy, Zone, list_policies, list_zones, read_temp_c

# vcgencmd get_throttled: bit → meaning (Raspberry Pi firmware documentation).
THROTTLED_BITS = {
    0: "under-voltage detected",
    1: "arm frequency capped",
    2: "currently throttled",
    3: "soft temperature limit active",
    16: "under-voltage has occurred",
    17: "arm frequency capping has occurred",
    18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}
NOW_MASK = 0xF
SINCE_BOOT_MASK = 0xF0000
# Governors that hold the frequency where it was put: a drop under them is not the governor's doing.
FIXED_GOVERNORS = ("performance", "userspace")
GOVERNOR_HINT = (
    "run the runner as root, or beforehand: "
    "echo performance | sudo tee /sys/devices/system/cpu/cpufreq/policy*/scaling_governor"
)


def parse_get_throttled(text: str) -> int:
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        raise SensorError("unexpected get_throttled output: %r" % text.strip()[:80])
    return int(m.group(1), 0)


def decode_throttled(value: int) -> Dict[str, Any]:
    """``0x50005`` → {"raw": "0x50005", "now": [...], "since_boot": [...]} (names of the set bits)."""
    now = [THROTTLED_BITS[b] for b in sorted(THROTTLED_BITS) if b < 16 and value & (1 << b)]
    since = [THROTTLED_BITS[b] for b in sorted(THROTTLED_BITS) if b >= 16 and value & (1 << b)]
    return {"raw": "0x%X" % value, "now": now, "since_boot": since}


def throttled_during(before: Optional[int], after: int) -> List[str]:
    """What the firmware says happened between two readings: bits set now, or sticky bits newly set."""
    reasons = [THROTTLED_BITS[b] for b in sorted(THROTTLED_BITS) if b < 16 and after & (1 << b)]
    new = after & SINCE_BOOT_MASK & ~((before or 0) & SINCE_BOOT_MASK)
    reasons += [THROTTLED_BITS[b] for b in sorted(THROTTLED_BITS) if b >= 16 and new & (1 << b)]
    return reasons


def _mhz(khz: Optional[float]) -> Optional[float]:
    return None if khz is None else round(khz / 1000.0, 1)


def frequency_drops(
    times_ns: Sequence[int],
    freqs_khz: Sequence[Optional[float]],
    window: Tuple[int, int],
    drop_pct: float,
) -> Optional[Dict[str, Any]]:
    """A frequency drop under load: within the window, a reading more than ``drop_pct`` below the
    highest one before it, held for two readings in a row (or at the window's end).
    """
    a, b = window
    series = [(t, f) for t, f in zip(times_ns, freqs_khz) if a <= t <= b and f is not None]  # noqa: B905
    peak: Optional[float] = None
    worst: Optional[Tuple[int, float, float]] = None
    for i, (t, f) in enumerate(series):
        assert f is not None
        if peak is not None and f < peak * (1.0 - drop_pct / 100.0):
            nxt = series[i + 1][1] if i + 1 < len(series) else f
            if nxt is not None and nxt < peak * (1.0 - drop_pct / 100.0) and (worst is None or f < worst[1]):
                worst = (t, f, peak)
        peak = f if peak is None else max(peak, f)
    if worst is None:
        return None
    t, low, high = worst
    return {
        "peak_mhz": _mhz(high),
        "low_mhz": _mhz(low),
        "drop_pct": round(100.0 * (1.0 - low / high), 1),
        "at_s": round((t - a) / 1e9, 3),
    }


class ThermalConfig:
    """The thermal part of the runner's sensor config (``--thermal-config JSON``)."""

    KEYS = (
        "zones",
        "governor",
        "set_governor",
        "cool_down_below_c",
        "cool_down_timeout_s",
        "cool_down_poll_s",
        "rate_hz",
        "drop_pct",
        "get_throttled",
        "trace",
    )

    def __init__(self, data: Dict[str, Any], option: str = "--thermal-config") -> None:
        c = ConfigReader(data, option, self.KEYS)
        self.zones = c.strings("zones")
        self.governor = c.string("governor", "performance") if "governor" in data else "performance"
        self.set_governor = c.string("set_governor", None)
        self.cool_down_below_c = c.number("cool_down_below_c", None, minimum=-273.0)
        self.cool_down_timeout_s = c.number("cool_down_timeout_s", 300.0) or 0.0
        self.cool_down_poll_s = c.number("cool_down_poll_s", 1.0, positive=True) or 1.0
        self.rate_hz = c.number("rate_hz", 5.0, positive=True) or 5.0
        self.drop_pct = c.number("drop_pct", 10.0, positive=True) or 10.0
        self.get_throttled = c.raw("get_throttled", "auto")
        if self.get_throttled not in ("auto", True, False):
            raise c.bad("get_throttled", '"auto", true or false')
        self.trace = bool(c.flag("trace", True))

    def as_dict(self) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS if getattr(self, k) is not None}


class ThermalMonitor:
    """Zones and frequencies before, during (sampled) and after a run; governor; cool-down."""

    def __init__(self, cfg: ThermalConfig, root: str, vcgencmd: str, warnings: Warnings) -> None:
        self.cfg = cfg
        self.root = root
        self.vcgencmd = vcgencmd
        self.warnings = warnings
        self.zones: List[Zone] = []
        self.policies: List[Policy] = []
        self.before: Dict[str, Any] = {}
        self.after: Dict[str, Any] = {}
        self.marks: Dict[str, int] = {}
        self.governor_found: Dict[str, Optional[str]] = {}
        self.governor_changed: Dict[str, str] = {}  # policy dir → governor to restore
        self.governor_restored: Optional[bool] = None
        self.governor_run: Dict[str, Optional[str]] = {}  # as read at the end of the measurement
        self.cooldown: Optional[Dict[str, Any]] = None
        self.throttled_before: Optional[int] = None
        self.throttled_after: Optional[int] = None
        self._vcgencmd_ok: Optional[bool] = None
        self._sampler: Optional[PeriodicSampler] = None
        self._broken: Dict[str, str] = {}

    # discovery ---------------------------------------------------------------------------------

    def open(self) -> None:
        zones = list_zones(self.root)
        if self.cfg.zones:
            wanted = set(self.cfg.zones)
            missing = sorted(wanted - {z.type for z in zones} - {z.name for z in zones})
            if missing:
                self.warnings.warn(
                    "thermal.zone_missing",
                    "no thermal zone of type %s (the device has: %s)"
                    % (", ".join(missing), ", ".join(sorted({z.type for z in zones})) or "none"),
                    "fix thermal_zones in the device profile: cat /sys/class/thermal/thermal_zone*/type",
                )
            zones = [z for z in zones if z.type in wanted or z.name in wanted]
        elif not zones:
            self.warnings.warn(
                "thermal.no_zones",
                "no thermal zone under %s: temperatures are not recorded"
                % sys_path(self.root, "class", "thermal"),
                "normal in VMs and containers without /sys/class/thermal",
            )
        self.zones = zones
        self.policies = list_policies(self.root)
        if not self.policies:
            self.warnings.warn(
                "thermal.no_cpufreq",
                "no cpufreq policy under %s: CPU frequencies and the governor are not known"
                % sys_path(self.root, "devices", "system", "cpu", "cpufreq"),
                "normal in VMs; on a board, the cpufreq driver is missing",
            )

    def _temps(self) -> List[Optional[float]]:
        out: List[Optional[float]] = []
        for z in self.zones:
            try:
                out.append(read_temp_c(z))
            except (OSError, SensorError) as exc:
                if z.name not in self._broken:
                    self._broken[z.name] = os_error_text(exc)
                    self.warnings.warn(
                        "thermal.zone_unreadable:%s" % z.name,
                        "thermal zone %s (%s) cannot be read: %s" % (z.name, z.type, os_error_text(exc)),
                        "some drivers refuse reads while a sensor is off; it is left out",
                    )
                out.append(None)
        return out

    def hottest_c(self) -> Optional[float]:
        temps = [t for t in self._temps() if t is not None]
        return max(temps) if temps else None

    def _snapshot(self) -> Dict[str, Any]:
        snap: Dict[str, Any] = {"temps": self._temps(), "t": time.monotonic_ns()}
        snap["cur"] = [p.khz("scaling_cur_freq") for p in self.policies]
        snap["max"] = [p.khz("scaling_max_freq") for p in self.policies]
        return snap

    # governor ----------------------------------------------------------------------------------

    def check_and_set_governor(self) -> None:
        for p in self.policies:
            self.governor_found[p.name] = try_read_text(p.attr("scaling_governor"))
        want = self.cfg.set_governor
        if want:
            for p in self.policies:
                old = self.governor_found.get(p.name)
                if old == want:
                    continue
                available = (try_read_text(p.attr("scaling_available_governors")) or "").split()
                if available and want not in available:
                    self.warnings.warn(
                        "thermal.governor_unavailable",
                        "%s has no governor %r (available: %s)" % (p.name, want, ", ".join(available)),
                        "pick one of the available governors",
                    )
                    continue
                try:
                    with open(p.attr("scaling_governor"), "w") as f:
                        f.write(want)
                except OSError as exc:
                    self.warnings.warn(
                        "thermal.governor_not_set",
                        "cannot set the %s governor on %s: %s" % (want, p.name, os_error_text(exc)),
                        GOVERNOR_HINT,
                    )
                    continue
                if old:
                    self.governor_changed[p.dir] = old
        expected = want or self.cfg.governor
        if expected:
            off = {}
            for p in self.policies:
                now = try_read_text(p.attr("scaling_governor"))
                if now != expected:
                    off[p.name] = now
            if off:
                self.warnings.warn(
                    "thermal.governor",
                    "cpufreq governor is not %s (%s): latency and energy vary with the frequency it picks"
                    % (expected, ", ".join("%s=%s" % kv for kv in sorted(off.items()))),
                    "pass --set-governor %s (the old one is restored afterwards), or %s"
                    % (expected, GOVERNOR_HINT),
                )

    def restore_governor(self) -> None:
        if not self.governor_changed:
            return
        ok = True
        for d, old in self.governor_changed.items():
            try:
                with open(os.path.join(d, "scaling_governor"), "w") as f:
                    f.write(old)
            except OSError as exc:
                ok = False
                self.warnings.warn(
                    "thermal.governor_not_restored",
                    "cannot restore the %s governor in %s: %s" % (old, d, os_error_text(exc)),
                    "restore it by hand: echo %s | sudo tee %s/scaling_governor" % (old, d),
                )
        self.governor_changed = {}
        self.governor_restored = ok

    # cool-down ---------------------------------------------------------------------------------

    def cool_down(self, progress: Optional[Callable[[int, int], None]] = None) -> None:
        below = self.cfg.cool_down_below_c
        if below is None:
            return
        start = self.hottest_c()
        rec: Dict[str, Any] = {
            "below_c": below,
            "timeout_s": self.cfg.cool_down_timeout_s,
            "start_c": start,
            "end_c": start,
            "waited_s": 0.0,
            "reached": None,
        }
        self.cooldown = rec
        if start is None:
            self.warnings.warn(
                "thermal.cooldown_skipped",
                "cool-down below %g °C skipped: no readable thermal zone" % below,
                "",
            )
            return
        t0 = time.monotonic()
        current: Optional[float] = start
        total = int(max(1, round(self.cfg.cool_down_timeout_s)))
        while current is not None and current >= below:
            waited = time.monotonic() - t0
            if waited >= self.cfg.cool_down_timeout_s:
                break
            if progress is not None:
                progress(int(waited), total)
            time.sleep(min(self.cfg.cool_down_poll_s, max(0.0, self.cfg.cool_down_timeout_s - waited)))
            current = self.hottest_c()
        rec["end_c"] = current
        rec["waited_s"] = round(time.monotonic() - t0, 2)
        rec["reached"] = current is not None and current < below
        if not rec["reached"]:
            self.warnings.warn(
                "thermal.cooldown_timeout",
                "still %s °C after %.0f s of cool-down (wanted below %g °C): measuring anyway"
                % ("?" if current is None else "%.1f" % current, rec["waited_s"], below),
                "improve cooling, or raise --cool-down-below",
            )

    # the run -----------------------------------------------------------------------------------

    def _rpi_throttled(self) -> Optional[int]:
        mode = self.cfg.get_throttled
        if mode is False or self._vcgencmd_ok is False:
            return None
        try:
            value = parse_get_throttled(run_command([self.vcgencmd, "get_throttled"], 2.0))
            self._vcgencmd_ok = True
            return value
        except SensorError as exc:
            self._vcgencmd_ok = False
            if mode is True:
                self.warnings.warn(
                    "thermal.get_throttled",
                    "vcgencmd get_throttled failed: %s" % exc.message,
                    "install libraspberrypi-bin (Raspberry Pi OS has it) or set get_throttled = false",
                )
            return None

    def start(self) -> None:
        """Before snapshot, then sample zones and frequencies at ``rate_hz`` until stop()."""
        self.throttled_before = self._rpi_throttled()
        self.before = self._snapshot()
        if self.zones or self.policies:
            self._sampler = PeriodicSampler(self._sample, 1.0 / self.cfg.rate_hz, "edgeq-thermal")
            self._sampler.start()

    def _sample(self) -> Tuple[List[Optional[float]], List[Optional[float]], List[Optional[float]]]:
        return (
            self._temps(),
            [p.khz("scaling_cur_freq") for p in self.policies],
            [p.khz("scaling_max_freq") for p in self.policies],
        )

    def mark(self, name: str) -> None:
        self.marks[name] = time.monotonic_ns()

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self.after = self._snapshot()
        self.governor_run = {p.name: try_read_text(p.attr("scaling_governor")) for p in self.policies}
        self.throttled_after = self._rpi_throttled() if self.throttled_before is not None else None

    # the result --------------------------------------------------------------------------------

    def summary(self) -> Dict[str, Any]:
        s = self._sampler
        times = list(s.times) if s is not None else []
        samples = list(s.values) if s is not None else []
        before, after = self.before, self.after
        zones = []
        for i, z in enumerate(self.zones):
            during = [v[0][i] for v in samples if v[0][i] is not None]
            first = before.get("temps", [None] * len(self.zones))[i]
            vals = [x for x in [first, *during] if x is not None]
            at_end = after.get("temps", [None] * len(self.zones))[i]
            if at_end is not None:
                vals.append(at_end)
            zones.append(
                {
                    "zone": z.name,
                    "type": z.type,
                    "before_c": _c(before.get("temps", [None] * len(self.zones))[i]),
                    "after_c": _c(at_end),
                    "max_c": _c(max(vals)) if vals else None,
                }
            )
        window = (self.marks.get("measure_start"), self.marks.get("measure_end"))
        policies = []
        drops = []
        capped = []
        for j, p in enumerate(self.policies):
            cur = [v[1][j] for v in samples]
            lo, hi = window
            in_win = [
                f
                for t, f in zip(times, cur)  # noqa: B905 (3.8: no strict=)
                if lo is not None and hi is not None and lo <= t <= hi and f is not None
            ]
            gov = self.governor_run.get(p.name)
            entry = {
                "policy": p.name,
                "cpus": p.cpus,
                "governor": self.governor_found.get(p.name),
                "min_mhz": _mhz(p.khz("scaling_min_freq")),
                "max_mhz": _mhz(before.get("max", [None] * len(self.policies))[j]),
                "hw_min_mhz": _mhz(p.khz("cpuinfo_min_freq")),
                "hw_max_mhz": _mhz(p.khz("cpuinfo_max_freq")),
                "cur_mhz": {
                    "before": _mhz(before.get("cur", [None] * len(self.policies))[j]),
                    "min": _mhz(min(in_win)) if in_win else None,
                    "mean": _mhz(sum(in_win) / len(in_win)) if in_win else None,
                    "max": _mhz(max(in_win)) if in_win else None,
                    "after": _mhz(after.get("cur", [None] * len(self.policies))[j]),
                },
            }
            if gov != entry["governor"]:
                entry["governor_during"] = gov
            policies.append(entry)
            if window[0] is not None and window[1] is not None:
                drop = frequency_drops(times, cur, (window[0], window[1]), self.cfg.drop_pct)
                if drop is not None:
                    running = gov if gov else entry["governor"]
                    drop["policy"] = p.name
                    drop["counted"] = running in FIXED_GOVERNORS
                    if not drop["counted"]:
                        drop["note"] = "governor %s scales the frequency itself" % running
                    drops.append(drop)
            cap0 = before.get("max", [None] * len(self.policies))[j]
            caps = [v[2][j] for v in samples if v[2][j] is not None]
            cap_after = after.get("max", [None] * len(self.policies))[j]
            if cap_after is not None:
                caps.append(cap_after)
            if cap0 is not None and caps and min(caps) < cap0:
                capped.append(
                    {"policy": p.name, "max_mhz_before": _mhz(cap0), "max_mhz_low": _mhz(min(caps))}
                )
        reasons = []
        for c in capped:
            reasons.append(
                "%s: frequency cap lowered from %s to %s MHz"
                % (c["policy"], c["max_mhz_before"], c["max_mhz_low"])
            )
        for d in drops:
            if d["counted"]:
                reasons.append(
                    "%s: %s → %s MHz (-%s %%) under load"
                    % (d["policy"], d["peak_mhz"], d["low_mhz"], d["drop_pct"])
                )
        rpi = None
        if self.throttled_after is not None:
            rpi_reasons = throttled_during(self.throttled_before, self.throttled_after)
            rpi = {
                "before": decode_throttled(self.throttled_before or 0),
                "after": decode_throttled(self.throttled_after),
            }
            reasons += ["firmware: %s" % r for r in rpi_reasons]
        throttling: Dict[str, Any] = {"detected": bool(reasons), "reasons": reasons}
        if drops:
            throttling["frequency_drops"] = drops
        if capped:
            throttling["capped"] = capped
        if rpi is not None:
            throttling["get_throttled"] = rpi
        if reasons:
            self.warnings.warn(
                "thermal.throttled",
                "the device throttled during the measurement: %s" % "; ".join(reasons),
                "cool it better or measure shorter; figures from a throttled run are not comparable",
            )
        hottest = [zz["max_c"] for zz in zones if zz["max_c"] is not None]
        out: Dict[str, Any] = {
            "zones": zones,
            "max_c": max(hottest) if hottest else None,
            "cpufreq": policies,
            "governor": {
                "found": dict(self.governor_found),
                "expected": self.cfg.set_governor or self.cfg.governor,
                "set_to": self.cfg.set_governor,
                "restored": self.governor_restored,
            },
            "throttling": throttling,
            "samples": len(samples),
            "rate_hz": self.cfg.rate_hz,
        }
        if self.cooldown is not None:
            out["cooldown"] = self.cooldown
        if self.cfg.trace and times:
            t0 = self.marks.get("start", times[0])
            hot = []
            for v in samples:
                temps = [x for x in v[0] if x is not None]
                hot.append(round(max(temps), 2) if temps else None)
            out["trace"] = {
                "t_ms": [round((t - t0) / 1e6, 1) for t in times],
                "hottest_c": hot,
                "cur_mhz": {p.name: [_mhz(v[1][j]) for v in samples] for j, p in enumerate(self.policies)},
            }
        return out


def _c(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 2)


def read_governors(root: str) -> Dict[str, str]:
    """{policy: governor} (tests and the host's checks use it)."""
    return {p.name: read_text(p.attr("scaling_governor")) for p in list_policies(root)}
