"""Power sources on the device: one module per source, picked by name, and what they share.

Every source module here has the same small surface (``ina2xx.py`` is a short example)::

    NAME        the name users write: --power-source NAME, power_source = "NAME" in a device profile
    NEEDS       one line: what the device must have for this source
    PRIORITY    the order ``auto`` tries it in (lower first); None: never guessed
    options(c, chosen) -> dict
                its own keys of the power config, read and checked through the ConfigReader ``c``
                (``chosen``: it is the configured source, so keys it cannot do without must be there)
    open_reader(cfg, root, vcgencmd) -> Reader
                open it as configured (a :class:`PowerConfig`); SensorError when it is not there
    detect(root, vcgencmd) -> Availability
                is it here and readable? Never raises; standard library only (no NumPy)

Adding a power source: a module with that surface, and its name in ``MODULES`` below.

Besides the modules' names, a power source can be ``none`` (not measured), ``auto`` (the first source
that opens, in ``PRIORITY`` order) or ``hwmon`` (an hwmon power sensor named by the profile's
``power_sensor``, read like ``ina2xx``). Device side: standard library only, Python 3.8 syntax.
"""

from __future__ import annotations

import importlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..protocol import one_line
from .common import (
    ABSENT,
    DEFAULT_SYSFS_ROOT,
    DEFAULT_VCGENCMD,
    UNREADABLE,
    Availability,
    ConfigReader,
    Reader,
    SensorError,
    os_error_text,
)

# One line per power source: the module's file name in this package.
MODULES = (
    "ina2xx",
    "ina3221",
    "jetson_iio",
    "rpi5_pmic",
    "rapl",
    "external",
)

_SURFACE = ("NAME", "NEEDS", "PRIORITY", "options", "open_reader", "detect")
# Names that are no module: ``hwmon`` reads like ina2xx (an hwmon power sensor named by the profile's
# power_sensor); ``none`` and ``auto`` are handled by open_reader.
ALIASES = {"hwmon": "ina2xx"}


def _load(modules: Tuple[str, ...]) -> Dict[str, Any]:
    registry: Dict[str, Any] = {}
    for file_name in modules:
        module = importlib.import_module("%s.%s" % (__name__, file_name))
        missing = [a for a in _SURFACE if not hasattr(module, a)]
        if missing:
            raise ImportError("power source module %s lacks %s" % (file_name, ", ".join(missing)))
        if module.NAME in registry or module.NAME in ("none", "auto") or module.NAME in ALIASES:
            raise ImportError("power source name %r is taken" % module.NAME)
        registry[module.NAME] = module
    return registry


SENSORS = _load(MODULES)  # name -> module, in MODULES order
SOURCES: Tuple[str, ...] = ("none", "auto", *SENSORS, *ALIASES)


def auto_order() -> List[str]:
    """The sources ``auto`` tries, in their modules' declared PRIORITY order (lowest first)."""
    ranked = [(m.PRIORITY, n) for n, m in SENSORS.items() if m.PRIORITY is not None]
    return [n for _, n in sorted(ranked)]


def sensor_module(source: str) -> Any:
    """The module of a source name (or alias); KeyError for none, auto and unknown names."""
    return SENSORS[ALIASES.get(source, source)]


# --------------------------------------------------------------------------------------------------
# the power config


class PowerConfig:
    """The power part of a measurement (the spec's ``power``, the runner's ``--power-config JSON``).

    Common keys are read here; each source module reads its own (``options``), and the config
    accepts the union, so ``{"source": "ina3221", "rails": ["VDD_CPU_GPU_CV"]}`` works and a key no
    source knows is bad input. A source's own settings are in :attr:`options`.
    """

    def __init__(self, data: Mapping[str, Any], option: str = "--power-config") -> None:
        data = dict(data)
        c = ConfigReader(data, option)
        self.source = c.string("source", "auto", SOURCES) or "auto"
        self.timeout_s = c.number("timeout_s", 2.0, positive=True) or 2.0  # for sources that run a command
        self.rate_hz = c.number("rate_hz", None, positive=True)
        self.idle_s = c.number("idle_s", 2.0) or 0.0
        self.settle_s = c.number("settle_s", None)
        self.min_samples = int(c.number("min_samples", 20, minimum=1) or 20)
        self.min_window_s = c.number("min_window_s", 1.0) or 0.0
        self.lag_ms = c.number("lag_ms", None)
        self.trace = bool(c.flag("trace", True))
        self.trace_max_points = int(c.number("trace_max_points", 2000, minimum=10) or 2000)
        common = set(c.seen)
        chosen = ALIASES.get(self.source, self.source)
        self.options: Dict[str, Any] = {}
        self._owners: Dict[str, List[str]] = {}
        for name, module in SENSORS.items():
            for key, value in module.options(c, name == chosen).items():
                self.options.setdefault(key, value)  # a key shared by sources means the same to each
                self._owners.setdefault(key, []).append(name)
        c.reject_unknown()
        self._common = sorted(common)
        self._given = set(data)

    def as_dict(self) -> Dict[str, Any]:
        """The settings in effect: common ones, and a source's own when it is the chosen one or given."""
        out: Dict[str, Any] = {"source": self.source}
        for key in self._common:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        chosen = ALIASES.get(self.source, self.source)
        for key, value in self.options.items():
            if value is not None and (key in self._given or chosen in self._owners[key]):
                out[key] = value
        return out


def open_reader(cfg: PowerConfig, root: str, vcgencmd: str) -> Optional[Reader]:
    """The configured source, checked by one read; None for ``none``. SensorError when it is not there."""
    if cfg.source == "none":
        return None
    if cfg.source != "auto":
        return sensor_module(cfg.source).open_reader(cfg, root, vcgencmd)
    tried = []
    for name in auto_order():
        try:
            return SENSORS[name].open_reader(cfg, root, vcgencmd)
        except SensorError as exc:
            tried.append("%s (%s)" % (name, exc.message))
    raise SensorError(
        "no power sensor found; tried " + "; ".join(tried),
        'set power_source in the device profile (or pass --power-source) to the board\'s sensor, or "none"; '
        "edgeq devices check lists what the device has",
        status=ABSENT,
    )


# --------------------------------------------------------------------------------------------------
# what this device has


def availability(
    source: str, root: str = DEFAULT_SYSFS_ROOT, vcgencmd: str = DEFAULT_VCGENCMD
) -> Availability:
    """One source's ``detect``, guarded: never raises (KeyError only for a name that is no source)."""
    module = sensor_module(source)
    try:
        return module.detect(root, vcgencmd)
    except Exception as exc:  # a module bug must not take the probe down
        return _failed(exc)


def _failed(exc: BaseException) -> Availability:
    return Availability(
        False, "%s: %s" % (type(exc).__name__, one_line(exc)), "please report this", UNREADABLE
    )


def probe_sensors(
    root: str = DEFAULT_SYSFS_ROOT,
    vcgencmd: str = DEFAULT_VCGENCMD,
    power: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Every power source's availability, the thermal zones and the cpufreq governors (JSON-able).

    ``power`` (a power config, e.g. the profile's ``{"source": "hwmon", "sensor": "ina226"}``) adds
    ``power.configured``: whether the runner would open that exact config, and what it would read.
    A malformed ``power`` raises RunnerError (bad_input); nothing else raises.
    Example (abridged)::

        {"sysfs_root": "/sys",
         "power": {"auto": "ina2xx", "auto_order": ["ina3221", "jetson-iio", "ina2xx", "rpi5-pmic", "rapl"],
                   "sources": {"ina2xx": {"present": true, "status": "ok", "detail": "ina219 at ... reads 2034.1 mW",
                                          "hint": "", "needs": "...", "priority": 30}, ...},
                   "configured": {"source": "auto", "reader": "ina2xx", "present": true, ...}},
         "thermal": {"zones": [{"zone": "thermal_zone0", "type": "cpu-thermal", "temp_c": 45.1}]},
         "cpufreq": {"policies": [{"policy": "policy0", "cpus": "0 1 2 3", "governor": "schedutil",
                                   "available_governors": ["performance", ...]}]}}
    """
    sources: Dict[str, Dict[str, Any]] = {}
    for name, module in SENSORS.items():
        entry = availability(name, root, vcgencmd).as_dict()
        entry.update({"needs": module.NEEDS, "priority": module.PRIORITY})
        sources[name] = entry
    order = auto_order()
    auto = next((n for n in order if sources[n]["present"]), None)
    power_out: Dict[str, Any] = {"sources": sources, "auto_order": order, "auto": auto}
    if power is not None:
        power_out["configured"] = _check_config(PowerConfig(power, "power"), root, vcgencmd)
    out: Dict[str, Any] = {"sysfs_root": root, "vcgencmd": vcgencmd, "power": power_out}
    out.update(_thermal_facts(root))
    return out


def _check_config(cfg: PowerConfig, root: str, vcgencmd: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {"source": cfg.source, "reader": None}
    if cfg.source == "none":
        out.update(Availability(False, "power is not measured (power source none)", "").as_dict())
        return out
    try:
        reader = open_reader(cfg, root, vcgencmd)
        assert reader is not None
        out["reader"] = reader.source
        out.update(Availability(True, reader.summary()).as_dict())
    except SensorError as exc:
        status = exc.status if exc.status == ABSENT else UNREADABLE
        out.update(Availability(False, exc.message, exc.hint, status).as_dict())
    except Exception as exc:
        out.update(_failed(exc).as_dict())
    return out


def _thermal_facts(root: str) -> Dict[str, Any]:
    from .zones import list_policies, list_zones, read_temp_c

    zones = []
    for z in list_zones(root):
        entry: Dict[str, Any] = {"zone": z.name, "type": z.type, "temp_c": None}
        try:
            entry["temp_c"] = round(read_temp_c(z), 2)
        except SensorError as exc:
            entry["error"] = exc.message
        except OSError as exc:
            entry["error"] = os_error_text(exc)
        zones.append(entry)
    policies = []
    for p in list_policies(root):
        policies.append(
            {
                "policy": p.name,
                "cpus": p.cpus,
                "governor": p.governor(),
                "available_governors": p.available_governors(),
            }
        )
    return {"thermal": {"zones": zones}, "cpufreq": {"policies": policies}}


__all__ = [
    "ALIASES",
    "MODULES",
    "SENSORS",
    "SOURCES",
    "Availability",
    "PowerConfig",
    "auto_order",
    "availability",
    "open_reader",
    "probe_sensors",
    "sensor_module",
]
