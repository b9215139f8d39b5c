"""Sampling a power source through a run, and energy per inference from what it recorded.

Device side: standard library + NumPy, Python 3.8 syntax. The sources themselves (what to read,
in which unit) are the modules of :mod:`.sensors`; a source's reader is either

* ``power``: ``read()`` returns the instantaneous power in **mW**, or
* ``energy``: ``read()`` returns cumulative counters in **µJ**, one per domain, differenced here with
  wrap-around handled per domain.

A :class:`PowerMeter` samples the reader on a background thread (timestamps from
``time.monotonic_ns``), while the main thread marks the idle baseline and the measured window.
:func:`summarize` turns the trace into ``power_mw`` {idle, active_mean, active_p95},
``energy_mj_per_inference`` (net of idle) and its uncertainty.
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .sensors import PowerConfig
from .sensors.common import PeriodicSampler, Reader, Warnings, os_error_text

SYSFS_RATE_HZ = 100.0
# Each vcgencmd / meter call forks a process: at 100 Hz that alone would load a small board.
PROCESS_RATE_HZ = 10.0

__all__ = [
    "PowerConfig",
    "PowerMeter",
    "PowerTrace",
    "batch_mean_se",
    "integrate_mj",
    "summarize",
    "unavailable",
    "unwrap_counter",
]


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
    if reader.note:
        out["note"] = reader.note
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
        warnings.warn(
            "power.read_failed" if failed else "power.no_data",
            reason,
            "edgeq devices check shows what the device's sensors read",
        )
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
                'set "wrap_j" in --power-config for a meter that wraps, or check that nothing resets it during a run',
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
            "no idle baseline (idle of %g s): energy per inference is gross, not net of idle" % cfg.idle_s,
            "pass --power-idle SECONDS",
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
            "raise --min-seconds (or --runs), or --power-rate if the sensor updates faster",
        )
    if per_inf is not None and net_mj <= 0:
        warnings.warn(
            "power.below_idle",
            "active power (%.1f mW) is not above idle (%.1f mW): the model's energy is lost in the noise"
            % (active_mean or 0.0, idle_mw or 0.0),
            "measure longer (--min-seconds), or check what else runs on the device",
        )
    elif per_inf is not None and sigma_mj > 0.25 * abs(net_mj):
        warnings.warn(
            "power.imprecise",
            "energy per inference is uncertain by %.0f %%" % (100.0 * sigma_mj / abs(net_mj)),
            "measure longer (--min-seconds) or idle longer (--power-idle)",
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
