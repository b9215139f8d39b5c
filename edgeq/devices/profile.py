"""Device profiles: where a device is and what it runs, as validated data.

A profile is a TOML file of flat keys (see ``FIELDS`` and the built-ins in ``device_profiles/``)::

    # ~/edgeq-profiles/lab-pi.toml        (found with --profiles ~/edgeq-profiles or EDGEQ_PROFILES)
    extends = "rpi4"                      # everything the built-in knows about a Raspberry Pi 4
    host = "192.168.1.20"
    user = "pi"
    identity_file = "~/.ssh/id_ed25519"   # or leave it out to use ssh-agent / ~/.ssh/id_*

Lookup (``load_profile``): a path to a ``.toml``, or a name searched in the ``--profiles`` dirs, then
the ``EDGEQ_PROFILES`` dirs (``os.pathsep``-separated), then the built-ins; the first hit wins, so a
user file shadows a built-in of the same name. Built-in board profiles carry the board's facts but no
address: they are templates, to be extended with ``host`` (or given ``--host user@address``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.resources
import json
import os
import platform
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.devices.paths import check_workdir_spec
from edgeq.errors import UserInputError
from edgeq.home import edgeq_home
from edgeq.placement import parse_min_coverage
from edgeq.runner.measure_spec import DELEGATES, MeasureSpec
from edgeq.runner.runtimes import TABLE as RUNTIME_TABLE
from edgeq.runner.sensors import SOURCES as RUNNER_POWER_SOURCES
from edgeq.spec import build_spec

ENV_PROFILES = "EDGEQ_PROFILES"
BUILTIN_PACKAGE = "edgeq.device_profiles"

KINDS = ("ssh", "local")
ARCHES = ("x86_64", "aarch64", "armv7l")
POWER_SOURCES = RUNNER_POWER_SOURCES  # what the device-side runner can read
HOST_KEY_POLICIES = ("strict", "accept-new")
RUNTIME_SOURCES = ("pip", "system")


@dataclass(frozen=True)
class Runtime:
    """An inference runtime a profile can name: its pip distribution and its import name."""

    name: str
    distribution: str
    module: str
    requires: tuple[str, ...] = ()  # extra pins setup installs with it


# The runner's own table of runtimes (the one list of names), as a profile sees them.
RUNTIMES: dict[str, Runtime] = {
    name: Runtime(name, distribution, module, tuple(requires))
    for name, (module, distribution, requires, _install) in RUNTIME_TABLE.items()
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCALAR = (str, int, float, bool)


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """Where a device is and how to get in: pure data (a transport is built from it)."""

    kind: str = "ssh"
    host: str | None = None
    port: int = 22
    user: str | None = None
    identity_file: Path | None = None
    host_key_policy: str = "strict"
    connect_timeout_s: float = 10.0
    connect_retries: int = 4
    retry_delay_s: float = 0.5
    persist_s: float = 60.0
    workdir: str = "~/edgeq"


@dataclass(frozen=True, kw_only=True)
class Board:
    """What a device is: its CPU, Python, runtime, accelerator and sensors."""

    arch: str
    python: str = "python3"
    runtime: str
    runtime_version: str
    runtime_source: str = "pip"
    pip_args: tuple[str, ...] = ()
    delegate: str = "xnnpack"
    delegate_options: tuple[tuple[str, str | int | float | bool], ...] = ()
    power_source: str = "none"
    power_sensor: str = ""
    sysfs_root: str = "/sys"
    vcgencmd: str = "vcgencmd"
    thermal_zones: tuple[str, ...] = ()
    governor: str | None = None
    cooldown_to_c: float | None = None

    @property
    def runtime_info(self) -> Runtime:
        return RUNTIMES[self.runtime]

    @property
    def options(self) -> dict[str, str | int | float | bool]:
        """``delegate_options`` as a dict."""
        return dict(self.delegate_options)


@dataclass(frozen=True, kw_only=True)
class DeviceProfile:
    """One device kind or one device: where it is (``endpoint``), what it is (``board``) and its
    measurement defaults (``measure``: MeasureSpec settings, see :meth:`measure_spec`)."""

    name: str
    description: str = ""
    endpoint: Endpoint = field(default_factory=Endpoint)
    board: Board
    measure: tuple[tuple[str, Any], ...] = ()
    notes: tuple[str, ...] = ()
    # provenance (not from the TOML)
    extends: tuple[str, ...] = ()
    source: str = ""

    @property
    def is_local(self) -> bool:
        return self.endpoint.kind == "local"

    @property
    def is_template(self) -> bool:
        """An SSH profile without a host: a device kind, not a particular device."""
        return self.endpoint.kind == "ssh" and not self.endpoint.host

    @property
    def requirements(self) -> tuple[str, ...]:
        """What ``devices setup`` pip-installs: the runtime pinned, and what it needs pinned."""
        r = self.board.runtime_info
        return (f"{r.distribution}=={self.board.runtime_version}", *r.requires)

    @property
    def address(self) -> str:
        e = self.endpoint
        if self.is_local:
            return "local"
        if not e.host:
            return "(no host)"
        user = f"{e.user}@" if e.user else ""
        host = f"[{e.host}]" if ":" in e.host else e.host
        return f"{user}{host}" + (f":{e.port}" if e.port != 22 else "")

    @property
    def template_hint(self) -> str:
        """What to do with a board template (a profile without a host)."""
        return (
            f'make a profile with extends = "{self.name}" and host = "<address>" in a --profiles '
            "directory, or pass --host user@address"
        )

    def require_address(self) -> None:
        """Raise UserInputError unless the profile says where the device is."""
        if self.is_template:
            raise UserInputError(
                f"device profile '{self.name}' has no host: it describes a kind of device "
                f"({self.description or self.name}), not a particular one",
                self.template_hint,
            )

    def with_target(self, target: str) -> DeviceProfile:
        """The profile pointed at ``[user@]host[:port]`` (``[v6addr]:port`` for IPv6)."""
        if self.is_local:
            raise UserInputError("the local device has no host to set", "drop --host, or use an SSH profile")
        m = re.fullmatch(
            r"(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]\s]+)\]|(?P<host>[^:@\s\[\]]+))(?::(?P<port>\d+))?",
            target,
        )
        if not m or not (m["v6"] or m["host"]):
            raise UserInputError(
                f"cannot read --host {target!r}", "write it as host, user@host or user@host:port"
            )
        changes: dict[str, Any] = {"host": m["v6"] or m["host"]}
        if m["user"]:
            changes["user"] = m["user"]
        if m["port"]:
            changes["port"] = int(m["port"])
            if not 0 < changes["port"] < 65536:
                raise UserInputError(f"port {m['port']} out of range in --host {target!r}", "use 1..65535")
        _check_host(changes["host"], "--host")
        return dataclasses.replace(self, endpoint=dataclasses.replace(self.endpoint, **changes))

    def measure_spec(self, overrides: Mapping[str, Any] | None = None) -> MeasureSpec:
        """The measurement, resolved once: built-in defaults < this profile < ``overrides``.

        ``overrides`` are MeasureSpec settings. ``power`` may also be True (this board's sensor), a
        source name, or a table without ``source`` (this board's sensor with those settings);
        ``thermal`` True / False, or a table of settings on top of this board's zones, governor and
        cool-down. Thermal state is recorded whenever power is measured, unless thermal is False.
        """
        b = self.board
        data: dict[str, Any] = {
            "runtime": b.runtime,
            "delegate": b.delegate,
            "delegate_options": b.options,
            "sysfs_root": b.sysfs_root,
            "vcgencmd": b.vcgencmd,
            **dict(self.measure),
        }
        o = dict(overrides or {})
        power = o.pop("power", None)
        thermal = o.pop("thermal", None)
        data.update(o)
        if power is True:
            power = {}
        elif isinstance(power, str):
            power = {"source": power}
        if isinstance(power, Mapping):
            power = dict(power)
            power.setdefault("source", b.power_source)
            if b.power_sensor and power["source"] == b.power_source:
                power.setdefault("sensor", b.power_sensor)
        if thermal is None and power:
            thermal = True
        if thermal is True:
            thermal = {}
        if isinstance(thermal, Mapping):
            base: dict[str, Any] = {"governor": b.governor or "performance"}
            if b.thermal_zones:
                base["zones"] = list(b.thermal_zones)
            if b.cooldown_to_c is not None:
                base["cool_down_below_c"] = b.cooldown_to_c
            thermal = {**base, **thermal}
        data["power"] = power or None
        data["thermal"] = thermal if isinstance(thermal, dict) else None
        return build_spec(data, f"device {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The profile as its TOML keys (flat), JSON-able (paths as strings, tuples as lists)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for part in (self.endpoint, self.board):
            for f in dataclasses.fields(part):
                out[f.name] = getattr(part, f.name)
        for key, spec_name in MEASURE_KEYS.items():
            if spec_name in dict(self.measure):
                out[key] = dict(self.measure)[spec_name]
        out.update(notes=self.notes, extends=self.extends, source=self.source)
        for k, v in list(out.items()):
            if isinstance(v, Path):
                out[k] = str(v)
            elif k == "delegate_options":
                out[k] = dict(v)
            elif isinstance(v, tuple):
                out[k] = list(v)
        return out

    def digest(self) -> str:
        """sha256 of what the profile says about the device and the measurement (not notes, not
        provenance): the ``profile`` hash a result carries. ``persist_s`` (how long a connection is
        kept) is left out too: it says nothing about either, and results from before it existed
        keep their hash."""
        data = self.to_dict()
        for k in ("notes", "description", "source", "extends", "persist_s"):
            data.pop(k)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# Profile keys that are measurement defaults -> the MeasureSpec setting each one sets.
MEASURE_KEYS = {
    "runs": "runs",
    "warmup_runs": "warmup",
    "threads": "threads",
    "min_seconds": "min_seconds",
    "run_timeout_s": "timeout_s",
    "min_delegate_coverage": "min_delegate_coverage",
}
_ENDPOINT_KEYS = tuple(f.name for f in dataclasses.fields(Endpoint))
_BOARD_KEYS = tuple(f.name for f in dataclasses.fields(Board))


@dataclass(frozen=True)
class _Field:
    types: tuple[type, ...]
    doc: str
    choices: tuple[str, ...] = ()
    item: type | None = None  # for lists


def _f(
    types: type | tuple[type, ...], doc: str, choices: Sequence[str] = (), item: type | None = None
) -> _Field:
    return _Field(types if isinstance(types, tuple) else (types,), doc, tuple(choices), item)


# Every key a profile file may contain. Floats accept integers; lists give their item type.
FIELDS: dict[str, _Field] = {
    "name": _f(str, "the profile's name; must equal the file name without .toml"),
    "extends": _f(str, "a profile (name or path relative to this file) whose keys this one starts from"),
    "kind": _f(str, "ssh (a device reached over SSH) or local (this machine)", KINDS),
    "description": _f(str, "one line for `edgeq devices list`"),
    "host": _f(str, "address of the device (name or IP); absent in board templates"),
    "port": _f(int, "SSH port"),
    "user": _f(str, "login user on the device (default: your local user name, like ssh)"),
    "identity_file": _f(str, "private key file (~ expands; relative to this file); absent = agent/~/.ssh"),
    "host_key_policy": _f(
        str,
        "strict: unknown host keys need --trust-new-host; accept-new: pin on first use",
        HOST_KEY_POLICIES,
    ),
    "connect_timeout_s": _f((float, int), "seconds to wait for TCP + SSH handshake"),
    "connect_retries": _f(int, "connection attempts before giving up (with exponential backoff)"),
    "retry_delay_s": _f((float, int), "first backoff delay; doubles per attempt"),
    "persist_s": _f(
        (float, int),
        "seconds the SSH connection is kept for the next command (OpenSSH's ControlPersist); 0: never",
    ),
    "workdir": _f(str, "edgeq's directory on the device: absolute or ~/..."),
    "arch": _f(str, "CPU architecture as uname -m prints it (auto: only for kind=local)", (*ARCHES, "auto")),
    "python": _f(str, "the device's Python (>= 3.8) used to create the venv and run the runner"),
    "runtime": _f(str, "inference runtime", tuple(RUNTIMES)),
    "runtime_version": _f(str, "pinned version of the runtime"),
    "runtime_source": _f(
        str, "pip: devices setup installs it; system: it comes with the OS image", RUNTIME_SOURCES
    ),
    "pip_args": _f(list, "extra pip arguments for setup (e.g. a local index for offline boards)", item=str),
    "delegate": _f(str, "accelerator delegate", DELEGATES),
    "delegate_options": _f(dict, 'delegate settings (e.g. device = "NPU" for OpenVINO)'),
    "threads": _f(int, "interpreter threads (default 1)"),
    "min_delegate_coverage": _f(
        (str, float, int), 'share of ops that must run on the delegate: "all" or a fraction 0..1'
    ),
    "power_source": _f(str, "how power is measured on the device", POWER_SOURCES),
    "power_sensor": _f(str, "hwmon name of the power sensor when power_source = hwmon"),
    "sysfs_root": _f(str, "where the runner reads sensors (/sys; another root for an emulated tree)"),
    "vcgencmd": _f(str, "the vcgencmd program (Raspberry Pi PMIC and throttling)"),
    "thermal_zones": _f(list, "thermal zone types to record (/sys/class/thermal/*/type)", item=str),
    "governor": _f(str, "cpufreq governor wanted for stable numbers (check warns otherwise)"),
    "warmup_runs": _f(int, "default warm-up invocations"),
    "runs": _f(int, "default timed invocations"),
    "min_seconds": _f((float, int), "default minimum timed duration"),
    "run_timeout_s": _f((float, int), "default timeout for one profiling run on the device"),
    "cooldown_to_c": _f((float, int), "wait until the hottest zone is below this before measuring"),
    "notes": _f(list, "facts a user needs (shown by devices list --json and check)", item=str),
}
REQUIRED = ("arch", "runtime", "runtime_version")
_FORBIDDEN = re.compile(r"pass(word|phrase)|secret", re.IGNORECASE)


def _where(source: str) -> str:
    return f"device profile {source}"


def _bad(source: str, msg: str, hint: str) -> UserInputError:
    return UserInputError(f"{_where(source)}: {msg}", hint)


def _type_name(v: Any) -> str:
    return {
        str: "a string",
        bool: "true/false",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
    }.get(type(v), type(v).__name__)


def _check_host(host: str, source: str) -> None:
    if not host or any(c.isspace() for c in host) or host.startswith("-") or "\x00" in host:
        raise _bad(
            source, f"host {host!r} is not a host name or address", "write a name like pi.local or an IP"
        )
    if "@" in host:
        raise _bad(source, f"host {host!r} contains '@'", 'put the login name in user = "..." instead')


def _validate_raw(raw: Mapping[str, Any], source: str) -> None:
    """Key names and value types of one file, before any merging."""
    for key, value in raw.items():
        if _FORBIDDEN.search(key):
            raise _bad(
                source,
                f"key '{key}' is not allowed: edgeq connects with SSH keys or ssh-agent only",
                "remove it; install your public key on the device (ssh-copy-id) and set identity_file",
            )
        spec = FIELDS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else "known keys: " + ", ".join(FIELDS)
            raise _bad(source, f"unknown key '{key}'", hint)
        ok = isinstance(value, spec.types) and not (isinstance(value, bool) and bool not in spec.types)
        if not ok:
            want = " or ".join(_type_name(t()) for t in spec.types if t is not float or int not in spec.types)
            raise _bad(source, f"key '{key}' must be {want}, got {_type_name(value)} {value!r}", spec.doc)
        if spec.item is not None:
            for v in value:
                if not isinstance(v, spec.item):
                    raise _bad(
                        source, f"key '{key}' must hold {_type_name(spec.item())[2:]}s, got {v!r}", spec.doc
                    )
        if spec.choices and value not in spec.choices:
            raise _bad(source, f"key '{key}' = {value!r} is not one of: {', '.join(spec.choices)}", spec.doc)
    for key, value in (raw.get("delegate_options") or {}).items():
        if not isinstance(value, _SCALAR):
            raise _bad(source, f"delegate_options.{key} must be a string, number or true/false", "")


def _finish(raw: dict[str, Any], source: str, base_dir: Path | None, builtin: bool) -> DeviceProfile:
    """Checks that need the merged profile; returns the dataclass."""
    kind = raw.get("kind", "ssh")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise _bad(
            source,
            f"missing required key '{missing[0]}'",
            f'add {missing[0]} = ... ({FIELDS[missing[0]].doc}), or extends = "<a built-in>"',
        )
    data = dict(raw)
    if kind == "local":
        for k in ("host", "user", "identity_file"):
            if k in data:
                raise _bad(source, f"key '{k}' makes no sense for kind = \"local\"", "remove it")
        if data.get("arch") == "auto":
            data["arch"] = platform.machine()
        if data.get("python", "auto") == "auto":
            data["python"] = sys.executable
        data.setdefault("workdir", str(edgeq_home() / "devices" / "local"))
        data["workdir"] = str(Path(data["workdir"]).expanduser())
    else:
        if data.get("arch") == "auto":
            raise _bad(source, 'arch = "auto" is only for kind = "local"', "write the device's uname -m")
        if data.get("python") == "auto":
            raise _bad(
                source, 'python = "auto" is only for kind = "local"', "write the device's python3 path"
            )
        if "host" in data:
            _check_host(data["host"], source)
    try:
        check_workdir_spec(data.get("workdir", "~/edgeq"))
    except UserInputError as exc:
        raise _bad(source, exc.message, FIELDS["workdir"].doc) from None
    port = data.get("port", 22)
    if not 0 < port < 65536:
        raise _bad(source, f"key 'port' = {port} is out of range", "use 1..65535")
    if data.get("connect_retries", 1) < 1:
        raise _bad(source, f"key 'connect_retries' must be at least 1, got {data['connect_retries']}", "")
    for k in ("connect_timeout_s", "retry_delay_s", "persist_s"):
        if k in data and data[k] < 0:
            raise _bad(source, f"key '{k}' must not be negative, got {data[k]}", FIELDS[k].doc)
    if not str(data["runtime_version"]).strip():
        raise _bad(source, "key 'runtime_version' is empty", 'pin the runtime\'s version, e.g. "2.14.0"')
    if data.get("power_source") == "hwmon" and not data.get("power_sensor"):
        raise _bad(
            source,
            'power_source = "hwmon" needs power_sensor',
            'set power_sensor to the hwmon name, e.g. "ina219"',
        )
    if "identity_file" in data:
        p = Path(data["identity_file"]).expanduser()
        if not p.is_absolute() and base_dir is not None and not builtin:
            p = base_dir / p
        data["identity_file"] = p
    for k in ("pip_args", "thermal_zones", "notes"):
        if k in data:
            data[k] = tuple(data[k])
    if "delegate_options" in data:
        data["delegate_options"] = tuple(sorted(data["delegate_options"].items()))
    for k in ("connect_timeout_s", "retry_delay_s", "persist_s", "cooldown_to_c"):
        if k in data:
            data[k] = float(data[k])
    measure = {MEASURE_KEYS[k]: data.pop(k) for k in list(data) if k in MEASURE_KEYS}
    if measure.get("min_seconds") == 0:
        measure["min_seconds"] = None  # 0 in a profile: no minimum time
    if "min_delegate_coverage" in measure:
        measure["min_delegate_coverage"] = parse_min_coverage(
            measure["min_delegate_coverage"], _where(source)
        )
    build_spec(measure, _where(source), {v: k for k, v in MEASURE_KEYS.items()})  # bad values fail here
    data.pop("extends", None)
    return DeviceProfile(
        name=data.pop("name"),
        description=data.pop("description", ""),
        notes=data.pop("notes", ()),
        endpoint=Endpoint(**{k: data.pop(k) for k in _ENDPOINT_KEYS if k in data}),
        board=Board(**{k: data.pop(k) for k in _BOARD_KEYS if k in data}),
        measure=tuple(sorted(measure.items())),
    )


# ---------------------------------------------------------------------------------------- lookup


@dataclass(frozen=True)
class _Found:
    name: str
    source: str  # a path, or "builtin:NAME.toml"
    text: str
    base_dir: Path | None
    builtin: bool


def profile_dirs(dirs: Sequence[Path | str] = ()) -> list[Path]:
    """Where user profiles are looked for: ``dirs`` (from --profiles), then EDGEQ_PROFILES."""
    out: list[Path] = []
    for d in dirs:
        p = Path(d).expanduser()
        if not p.is_dir():
            raise UserInputError(
                f"--profiles {d}: no such directory", "give a directory holding NAME.toml files"
            )
        out.append(p)
    for d in os.environ.get(ENV_PROFILES, "").split(os.pathsep):
        if not d:
            continue
        p = Path(d).expanduser()
        if not p.is_dir():
            raise UserInputError(
                f"{ENV_PROFILES} names {d}, which is not a directory", f"fix or unset {ENV_PROFILES}"
            )
        out.append(p)
    return out


def builtin_names() -> list[str]:
    root = importlib.resources.files(BUILTIN_PACKAGE)
    return sorted(e.name[: -len(".toml")] for e in root.iterdir() if e.name.endswith(".toml"))


def _builtin(name: str) -> _Found | None:
    entry = importlib.resources.files(BUILTIN_PACKAGE) / f"{name}.toml"
    if not entry.is_file():
        return None
    return _Found(name, f"builtin:{name}.toml", entry.read_text(encoding="utf-8"), None, True)


def _from_path(path: Path) -> _Found:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"device profile {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read device profile {path}: {exc}", "check the file") from None
    return _Found(path.stem, str(path), text, path.parent, False)


def _find(name: str, dirs: Sequence[Path], after: str = "") -> _Found | None:
    """The first ``name`` in ``dirs`` then the built-ins; with ``after``, only what comes after that
    source in this order (so ``rpi4.toml`` extending "rpi4" finds the next rpi4 down, not itself)."""
    candidates: list[str] = []
    for d in dirs:
        p = str(d / f"{name}.toml")
        if p not in candidates:
            candidates.append(p)
    candidates.append(f"builtin:{name}.toml")
    if after in candidates:
        candidates = candidates[candidates.index(after) + 1 :]
    for c in candidates:
        if c.startswith("builtin:"):
            return _builtin(name)
        if Path(c).is_file():
            return _from_path(Path(c))
    return None


def _looks_like_path(s: str) -> bool:
    return s.endswith(".toml") or "/" in s or os.sep in s


def _parse(found: _Found) -> dict[str, Any]:
    try:
        raw = tomllib.loads(found.text)
    except tomllib.TOMLDecodeError as exc:
        raise _bad(found.source, f"is not valid TOML: {exc}", "fix the syntax (https://toml.io)") from None
    _validate_raw(raw, found.source)
    name = raw.get("name", found.name)
    if name != found.name:
        raise _bad(
            found.source,
            f"name = {name!r} differs from the file name {found.name!r}.toml",
            "rename the file or the name: lookup by name uses the file name",
        )
    return raw


def _resolve(
    found: _Found, dirs: Sequence[Path], chain: tuple[str, ...]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The merged raw keys of ``found`` and the sources it extends (nearest first)."""
    if found.source in chain:
        raise _bad(
            found.source,
            "extends itself (cycle: " + " -> ".join((*chain, found.source)) + ")",
            "break the cycle",
        )
    if len(chain) > 8:
        raise _bad(found.source, "extends too deeply (more than 8 levels)", "flatten the profiles")
    raw = _parse(found)
    parent_ref = raw.get("extends")
    if parent_ref is None:
        return dict(raw), ()
    parent: _Found | None
    if _looks_like_path(parent_ref):
        base = found.base_dir or Path.cwd()
        parent = _from_path((base / Path(parent_ref).expanduser()).resolve())
    else:
        # Names are looked up beside this file first, then in the usual order. A user's rpi4.toml may
        # extend "rpi4": that means the next one down that order.
        order = list(dirs)
        in_order = any(found.source == str(d / f"{found.name}.toml") for d in dirs)
        if found.base_dir is not None and not (parent_ref == found.name and in_order):
            order.insert(0, found.base_dir)
        parent = _find(parent_ref, order, after=found.source)
        if parent is None:
            raise _bad(found.source, f"extends unknown profile {parent_ref!r}", _known_hint(parent_ref, dirs))
    merged, ancestors = _resolve(parent, dirs, (*chain, found.source))
    merged.pop("name", None)
    options = {**merged.get("delegate_options", {}), **raw.get("delegate_options", {})}
    merged.update(raw)
    if options:
        merged["delegate_options"] = options
    return merged, (parent.source, *ancestors)


def _visible_names(dirs: Sequence[Path]) -> list[str]:
    names = {p.stem for d in dirs for p in Path(d).glob("*.toml")}
    return sorted(names | set(builtin_names()))


def _known_hint(name: str, dirs: Sequence[Path]) -> str:
    names = _visible_names(dirs)
    close = difflib.get_close_matches(name, names, n=3)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "? (edgeq devices list shows all)"
    return "known: " + ", ".join(names)


def load_profile(name_or_path: str | Path, search_dirs: Sequence[Path | str] = ()) -> DeviceProfile:
    """Load and validate a profile: a path to a .toml, or a name (``--profiles`` dirs, EDGEQ_PROFILES,
    built-ins, in that order).

    ``load_profile("rpi4").runtime`` → ``"tflite-runtime"``; ``load_profile("./lab/pi.toml")``.
    """
    return _load(name_or_path, profile_dirs(search_dirs))


def _load(name_or_path: str | Path, dirs: Sequence[Path]) -> DeviceProfile:
    ref = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(ref):
        found = _from_path(Path(ref).expanduser())
    else:
        if not _NAME.match(ref):
            raise UserInputError(
                f"{ref!r} is not a device name",
                "names are letters, digits, '.', '_' and '-'; or give a .toml path",
            )
        hit = _find(ref, dirs)
        if hit is None:
            where = ", ".join(str(d) for d in dirs) + (", " if dirs else "") + "built-ins"
            raise UserInputError(f"unknown device {ref!r} (looked in {where})", _known_hint(ref, dirs))
        found = hit
    raw, ancestors = _resolve(found, dirs, ())
    raw["name"] = found.name
    profile = _finish(raw, found.source, found.base_dir, found.builtin)
    return dataclasses.replace(profile, source=found.source, extends=ancestors)


@dataclass(frozen=True)
class ProfileEntry:
    """A profile as ``devices list`` shows it; ``error`` is set when it does not load."""

    name: str
    source: str
    profile: DeviceProfile | None = None
    error: str = ""
    shadows: tuple[str, ...] = field(default=())


def list_profiles(search_dirs: Sequence[Path | str] = ()) -> list[ProfileEntry]:
    """Every profile visible by name, user dirs first; a broken file is listed with its error."""
    dirs = profile_dirs(search_dirs)
    seen: dict[str, list[str]] = {}
    order: list[str] = []
    for d in [*dirs, None]:
        names = builtin_names() if d is None else sorted(p.stem for p in Path(d).glob("*.toml"))
        for n in names:
            src = f"builtin:{n}.toml" if d is None else str(Path(d) / f"{n}.toml")
            if n not in seen:
                order.append(n)
                seen[n] = []
            seen[n].append(src)
    out: list[ProfileEntry] = []
    for n in order:
        try:
            prof = _load(n, dirs) if _NAME.match(n) else None
            err = "" if prof else f"{n!r} is not a valid device name"
        except UserInputError as exc:
            prof, err = None, exc.message
        out.append(ProfileEntry(n, seen[n][0], prof, err, tuple(seen[n][1:])))
    return out
