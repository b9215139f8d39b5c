"""One run's sensors: power sampling and thermal state around the measured window.

The runner's ``run`` drives a :class:`SensorSession` through fixed steps::

    with session:                      # open sensors; set the governor (restored on exit, always)
        session.prepare()              # cool down, then the idle baseline (sampling starts here)
        ... warm-up ...
        min_s = session.min_seconds(args.min_seconds)   # lengthened so the sensor can resolve it
        session.measure_start(); ... timed invokes ...; session.measure_end(invokes)
    result.update(session.result())    # power, thermal, warnings

Without power / thermal settings (the spec's ``power`` and ``thermal``) every step is a no-op and the result only gains
an empty ``warnings`` list. A missing or unreadable sensor is one warning, never a failed run.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from .power import PowerMeter, summarize, unavailable
from .protocol import Emitter, Progress, one_line
from .sensors import PowerConfig, open_reader
from .sensors.common import DEFAULT_SYSFS_ROOT, DEFAULT_VCGENCMD, SensorError, Warnings, parse_json_object
from .thermal import ThermalConfig, ThermalMonitor

if TYPE_CHECKING:
    from .measure_spec import MeasureSpec


def _interrupt(signum: int, frame: Any) -> None:
    # SSH sends TERM to the process group on a timeout or Ctrl-C: unwind through the finally
    # blocks (which restore the governor) instead of dying on the spot.
    raise KeyboardInterrupt("signal %d" % signum)


class SensorSession:
    def __init__(
        self,
        power: Optional[PowerConfig],
        thermal: Optional[ThermalConfig],
        sysfs_root: str = DEFAULT_SYSFS_ROOT,
        vcgencmd: str = DEFAULT_VCGENCMD,
        emitter: Optional[Emitter] = None,
    ) -> None:
        self.power_cfg = power
        self.thermal_cfg = thermal
        self.root = sysfs_root
        self.vcgencmd = vcgencmd
        self.emitter = emitter
        self.warnings = Warnings(emitter)
        self.meter: Optional[PowerMeter] = None
        self.thermal: Optional[ThermalMonitor] = None
        self.power_result: Optional[Dict[str, Any]] = None
        self.thermal_result: Optional[Dict[str, Any]] = None
        self.idle_hz: Optional[float] = None
        self.required_s: Optional[float] = None
        self.user_min_seconds: Optional[float] = None
        self._handlers: Dict[int, Any] = {}
        self._running = False
        self._cpu0: Optional[float] = None
        self.window_cpu_s: Optional[float] = None

    @classmethod
    def from_spec(cls, spec: MeasureSpec, emitter: Optional[Emitter]) -> SensorSession:
        """From a MeasureSpec's ``power`` / ``thermal`` / ``sysfs_root`` / ``vcgencmd``.

        A malformed power or thermal setting is bad input (RunnerError), raised here, before anything
        is measured; ``None`` leaves that part out.
        """
        return cls(
            PowerConfig(spec.power, "--power-config") if spec.power is not None else None,
            ThermalConfig(spec.thermal, "thermal settings") if spec.thermal is not None else None,
            spec.sysfs_root or DEFAULT_SYSFS_ROOT,
            spec.vcgencmd or DEFAULT_VCGENCMD,
            emitter,
        )

    @classmethod
    def from_args(cls, args: Any, emitter: Optional[Emitter]) -> SensorSession:
        """From ``--power-config`` / ``--thermal-config`` JSON; malformed config is bad input.

        The runner's command line before MeasureSpec; goes once ``run`` takes a spec (use from_spec).
        """
        power = parse_json_object(getattr(args, "power_config", None), "--power-config")
        thermal = parse_json_object(getattr(args, "thermal_config", None), "--thermal-config")
        return cls(
            PowerConfig(power) if power is not None else None,
            ThermalConfig(thermal) if thermal is not None else None,
            getattr(args, "sysfs_root", None) or DEFAULT_SYSFS_ROOT,
            getattr(args, "vcgencmd", None) or DEFAULT_VCGENCMD,
            emitter,
        )

    @property
    def active(self) -> bool:
        return self.power_cfg is not None or self.thermal_cfg is not None

    # lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> SensorSession:
        if self.thermal_cfg is not None:
            self.thermal = ThermalMonitor(self.thermal_cfg, self.root, self.vcgencmd, self.warnings)
            self.thermal.open()
            self._catch_signals()
            self.thermal.check_and_set_governor()
        if self.power_cfg is not None:
            try:
                reader = open_reader(self.power_cfg, self.root, self.vcgencmd)
            except SensorError as exc:
                self.warnings.warn("power.unavailable", exc.message, exc.hint)
                self.power_result = unavailable(self.power_cfg.source, exc.message)
            else:
                if reader is None:
                    reason = "this device has no power sensor (power_source = none)"
                    self.warnings.warn(
                        "power.none",
                        "power and energy are not measured: " + reason,
                        "pass --power-source NAME (ina2xx, ina3221, jetson-iio, rpi5-pmic, rapl, external) "
                        "or set power_source in the device profile",
                    )
                    self.power_result = unavailable("none", reason)
                else:
                    self.meter = PowerMeter(reader, self.power_cfg)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._running:
                self._stop_sampling()
        finally:
            try:
                if self.thermal is not None:
                    self.thermal.restore_governor()
            finally:
                self._restore_signals()

    def _catch_signals(self) -> None:
        for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if sig is None:
                continue
            with contextlib.suppress(ValueError, OSError):  # not the main thread: nothing to do
                self._handlers[sig] = signal.signal(sig, _interrupt)

    def _restore_signals(self) -> None:
        for sig, old in self._handlers.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(sig, old)
        self._handlers = {}

    # steps -------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Cool down (if asked), then start sampling and take the idle baseline."""
        if self.thermal is not None:
            if self.thermal_cfg is not None and self.thermal_cfg.cool_down_below_c is not None:
                progress: Optional[Progress] = None
                if self.emitter is not None:
                    progress = Progress(
                        self.emitter, "cooldown", int(max(1, self.thermal_cfg.cool_down_timeout_s))
                    )
                self.thermal.cool_down(progress.update if progress is not None else None)
                if progress is not None:
                    progress.finish(int((self.thermal.cooldown or {}).get("waited_s") or 0))
            self.thermal.start()
            self.thermal.mark("start")
        self._running = True
        meter = self.meter
        if meter is None:
            return
        cfg = meter.cfg
        meter.start()
        t_start = meter.mark("start")
        if self.thermal is not None:
            self.thermal.marks["start"] = t_start  # one time origin for both traces
        progress = Progress(self.emitter, "idle", 1) if self.emitter is not None and cfg.idle_s else None
        time.sleep(meter.settle_s())
        if cfg.idle_s:
            meter.mark("idle_start")
            time.sleep(cfg.idle_s)
            meter.mark("idle_end")
            self.idle_hz = meter.achieved_hz("idle_start", "idle_end")
        if progress is not None:
            progress.finish(1)

    def min_seconds(self, user_min_seconds: Optional[float]) -> Optional[float]:
        """The measured phase's minimum duration: the user's, or longer if the sensor needs it."""
        self.user_min_seconds = user_min_seconds
        if self.meter is None:
            return user_min_seconds
        self.required_s = self.meter.required_window_s(self.idle_hz)
        if user_min_seconds is None or user_min_seconds < self.required_s:
            return self.required_s
        return user_min_seconds

    def measure_start(self) -> None:
        self.warnings.flush()
        self._cpu0 = time.process_time()
        if self.thermal is not None:
            self.thermal.mark("measure_start")
        if self.meter is not None:
            self.meter.mark("measure_start")

    def measure_end(self, invokes: int) -> None:
        if self.meter is not None:
            self.meter.mark("measure_end")
        if self._cpu0 is not None:
            self.window_cpu_s = time.process_time() - self._cpu0
        if self.thermal is not None:
            self.thermal.mark("measure_end")
        if self.meter is not None:
            time.sleep(self.meter.tail_s())  # the sensor's last readings of the window
        self._stop_sampling(invokes)

    def _stop_sampling(self, invokes: Optional[int] = None) -> None:
        self._running = False
        if self.meter is not None:
            trace = self.meter.stop()
            if invokes is not None:
                try:
                    self.power_result = summarize(self.meter, trace, invokes, self.warnings)
                except Exception as exc:  # a bug here must not cost the user the latency figures
                    traceback.print_exc(file=sys.stderr)
                    self.warnings.warn(
                        "power.analysis_failed",
                        "the power figures could not be computed: %s: %s"
                        % (type(exc).__name__, one_line(exc)),
                        "the traceback is on the runner's stderr; please report it",
                    )
                    self.power_result = unavailable(self.meter.reader.source, "analysis failed")
                window = self.power_result.get("window")
                if isinstance(window, dict):
                    window["required_s"] = None if self.required_s is None else round(self.required_s, 3)
                    window["lengthened"] = bool(
                        self.required_s is not None
                        and (self.user_min_seconds is None or self.user_min_seconds < self.required_s)
                    )
                    # CPU time of this process (all threads) in the window: beside measure_s it
                    # shows how much of the window the runner actually ran (contention, throttling).
                    if self.window_cpu_s is not None:
                        window["process_cpu_s"] = round(self.window_cpu_s, 4)
                self.power_result["config"] = self.meter.cfg.as_dict()
        if self.thermal is not None:
            self.thermal.stop()
            if invokes is not None:
                self.thermal_result = self._thermal_summary()
        self.warnings.flush()

    def _thermal_summary(self) -> Dict[str, Any]:
        assert self.thermal is not None
        try:
            return self.thermal.summary()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.warnings.warn(
                "thermal.analysis_failed",
                "the thermal summary could not be computed: %s: %s" % (type(exc).__name__, one_line(exc)),
                "the traceback is on the runner's stderr; please report it",
            )
            return {
                "zones": [],
                "cpufreq": [],
                "governor": {},
                "throttling": {"detected": None, "reasons": []},
            }

    def result(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.power_cfg is not None:
            out["power"] = self.power_result or unavailable(self.power_cfg.source, "not measured")
        if self.thermal is not None:
            if self.thermal_result is None:
                self.thermal_result = self._thermal_summary()
            self.thermal_result["governor"]["restored"] = self.thermal.governor_restored
            if self.thermal_cfg is not None:
                self.thermal_result["config"] = self.thermal_cfg.as_dict()
            out["thermal"] = self.thermal_result
        self.warnings.flush()
        warnings: List[Dict[str, str]] = list(self.warnings.items)
        out["warnings"] = warnings
        return out
