"""``edgeq devices list / check / setup`` as an API (the CLI only renders what these return).

Everything on the device runs as fixed ``python -c`` programs whose inputs are argv elements, through
any Transport (LocalTransport for the ``local`` device, SSHTransport otherwise).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeq.devices.known_hosts import KnownHosts
from edgeq.devices.profiles import RUNTIMES, DeviceProfile, ProfileEntry, list_profiles
from edgeq.devices.ssh import SSHTransport
from edgeq.devices.transport import CommandResult, LocalTransport, Transport
from edgeq.errors import DeviceError, UserInputError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
MIN_PYTHON = (3, 8)  # the device-side runner's floor
VENV = "venv"
_PROBE_TIMEOUT_S = 120.0
_PIP_TIMEOUT_S = 1800.0

# Python versions the pinned runtime wheels exist for: (runtime, version prefix) -> (lowest, highest).
_WHEEL_PYTHONS: dict[tuple[str, str], tuple[tuple[int, int], tuple[int, int]]] = {
    ("ai-edge-litert", "2."): ((3, 10), (3, 14)),
    ("tflite-runtime", "2.14"): ((3, 8), (3, 11)),
    ("openvino", "2022.3"): ((3, 7), (3, 10)),
}

# What the device reports about itself. argv: [1] runtime module, [2] delegate, [3] workdir,
# [4] comma-separated distributions to report versions of. Must run on Python 3.7 (Mendel) and up.
PROBE_PROGRAM = r"""
import glob, json, os, platform, shutil, sys, time
mod, delegate, workdir, dists = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
out = {"python": platform.python_version(), "executable": sys.executable, "machine": platform.machine(),
       "kernel": platform.release(), "cpu_count": os.cpu_count(), "os": ""}
try:
    for line in open("/etc/os-release"):
        if line.startswith("PRETTY_NAME="):
            out["os"] = line.split("=", 1)[1].strip().strip('"')
except OSError:
    pass
try:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            out["mem_total_mb"] = int(line.split()[1]) // 1024
except OSError:
    pass
p = workdir
while p and not os.path.exists(p):
    p = os.path.dirname(p)
out["workdir_exists"] = os.path.isdir(workdir)
out["workdir_writable"] = bool(p) and os.access(p, os.W_OK)
out["disk_free_mb"] = shutil.disk_usage(p or "/").free // (1 << 20)
try:
    from importlib import metadata as md
    def version(d):
        try:
            return md.version(d)
        except Exception:
            return None
except ImportError:
    import pkg_resources
    def version(d):
        try:
            return pkg_resources.get_distribution(d).version
        except Exception:
            return None
out["packages"] = dict((d, version(d)) for d in dists if d)
t0 = time.time()
try:
    sub = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
    __import__(sub.get(mod, mod))
    out["runtime_import"] = {"ok": True, "seconds": round(time.time() - t0, 3)}
except BaseException as e:
    out["runtime_import"] = {"ok": False, "error": (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]}
deleg = {}
if delegate == "edgetpu":
    import ctypes
    try:
        ctypes.CDLL("libedgetpu.so.1")
        deleg["library"] = True
    except OSError as e:
        deleg["library"] = False
        deleg["error"] = str(e)[:300]
    usb = []
    for d in glob.glob("/sys/bus/usb/devices/*"):
        try:
            ids = open(d + "/idVendor").read().strip() + ":" + open(d + "/idProduct").read().strip()
        except OSError:
            continue
        if ids in ("1a6e:089a", "18d1:9302"):
            usb.append(ids)
    deleg["usb"] = usb
    deleg["pcie"] = os.path.exists("/dev/apex_0")
if delegate == "openvino":
    try:
        import openvino as ov
        deleg["devices"] = list(ov.Core().available_devices)
    except BaseException as e:
        deleg["error"] = (type(e).__name__ + ": " + str(e)).splitlines()[0][:300]
out["delegate"] = deleg
out["hwmon"] = []
for d in sorted(glob.glob("/sys/class/hwmon/hwmon*")):
    try:
        out["hwmon"].append(open(d + "/name").read().strip())
    except OSError:
        pass
zones = []
for d in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
    z = {"zone": os.path.basename(d)}
    try:
        z["type"] = open(d + "/type").read().strip()
        z["temp_c"] = int(open(d + "/temp").read().strip()) / 1000.0
    except (OSError, ValueError):
        pass
    zones.append(z)
out["thermal"] = zones
govs = {}
for f in sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")):
    try:
        govs.setdefault(open(f).read().strip(), []).append(f.split("/")[5])
    except OSError:
        pass
out["governors"] = govs
rapl = "/sys/class/powercap/intel-rapl:0/energy_uj"
out["rapl"] = {"present": os.path.exists(rapl), "readable": os.access(rapl, os.R_OK)}
out["vcgencmd"] = bool(shutil.which("vcgencmd"))
print(json.dumps(out))
"""

# argv[1] = directory: create it (and parents); print "created" or "exists".
MKDIR_PROGRAM = r"""
import os, sys
d = sys.argv[1]
if os.path.isdir(d):
    print("exists")
else:
    os.makedirs(d)
    print("created")
"""

# argv[1:] = distributions: print {dist: version or null} as JSON.
VERSIONS_PROGRAM = r"""
import json, sys
try:
    from importlib import metadata as md
    def version(d):
        try:
            return md.version(d)
        except Exception:
            return None
except ImportError:
    import pkg_resources
    def version(d):
        try:
            return pkg_resources.get_distribution(d).version
        except Exception:
            return None
print(json.dumps(dict((d, version(d)) for d in sys.argv[1:])))
"""

# argv[1] = module to import: exit 0 when it imports; else the error on stderr.
IMPORT_PROGRAM = r"""
import sys
sub = {"ai_edge_litert": "ai_edge_litert.interpreter", "tflite_runtime": "tflite_runtime.interpreter"}
__import__(sub.get(sys.argv[1], sys.argv[1]))
print("ok")
"""


# ----------------------------------------------------------------------------------------- list


@dataclass(frozen=True)
class DeviceRow:
    """One line of ``devices list``."""

    name: str
    arch: str
    runtime: str
    delegate: str
    host: str
    source: str
    description: str = ""
    error: str = ""
    shadows: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shadows"] = list(self.shadows)
        return d


def list_devices(search_dirs: Sequence[Path | str] = ()) -> list[DeviceRow]:
    """Every visible profile (user dirs first, then built-ins); broken files come with their error."""
    rows = []
    for e in list_profiles(search_dirs):
        rows.append(_row(e))
    return rows


def _row(e: ProfileEntry) -> DeviceRow:
    p = e.profile
    if p is None:
        return DeviceRow(e.name, "", "", "", "", e.source, "", e.error, e.shadows)
    host = p.address if not p.is_template else "(set host)"
    return DeviceRow(
        p.name,
        p.arch,
        f"{p.runtime} {p.runtime_version}",
        p.delegate,
        host,
        e.source,
        p.description,
        "",
        e.shadows,
    )


# -------------------------------------------------------------------------------------- helpers


def open_transport(
    profile: DeviceProfile, *, trust_new_host: bool = False, known_hosts: KnownHosts | None = None
) -> Transport:
    """LocalTransport for the local device, SSHTransport (not yet connected) otherwise."""
    if profile.is_local:
        return LocalTransport()
    return SSHTransport.from_profile(profile, trust_new_host=trust_new_host, known_hosts=known_hosts)


def device_workdir(transport: Transport, profile: DeviceProfile) -> str:
    """The profile's workdir as an absolute path on the device (``~`` resolved over SSH)."""
    if isinstance(transport, SSHTransport):
        return transport.workdir
    return str(Path(profile.workdir).expanduser())


def venv_python(workdir: str) -> str:
    return posixpath.join(workdir, VENV, "bin", "python")


def device_python(transport: Transport, profile: DeviceProfile, workdir: str | None = None) -> str:
    """The interpreter the runner should use: the venv ``devices setup`` made, else ``profile.python``."""
    if profile.is_local:
        return profile.python
    vpy = venv_python(workdir or device_workdir(transport, profile))
    res = transport.run([vpy, "-c", "pass"], timeout=_PROBE_TIMEOUT_S)
    return vpy if res.exit_code == 0 else profile.python


def _last_line(res: CommandResult) -> str:
    lines = (res.stderr.strip() or res.stdout.strip()).splitlines()
    return lines[-1][:300] if lines else f"exit code {res.exit_code}"


def _run_json(
    transport: Transport, argv: list[str], timeout: float = _PROBE_TIMEOUT_S
) -> tuple[dict[str, Any] | None, CommandResult]:
    res = transport.run(argv, timeout=timeout)
    if res.exit_code != 0:
        return None, res
    for line in reversed(res.stdout.strip().splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data, res
    return None, res


def _pyver(s: str) -> tuple[int, int]:
    parts = s.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


def _wheel_range(profile: DeviceProfile) -> tuple[tuple[int, int], tuple[int, int]] | None:
    for (runtime, prefix), rng in _WHEEL_PYTHONS.items():
        if profile.runtime == runtime and profile.runtime_version.startswith(prefix):
            return rng
    return None


def _template_hint(profile: DeviceProfile) -> str:
    return (
        f'make a profile with extends = "{profile.name}" and host = "<address>", '
        "or pass --host user@address"
    )


def _fmt(v: tuple[int, int]) -> str:
    return f"{v[0]}.{v[1]}"


_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*((?:[<>=!]=?\s*[A-Za-z0-9.*+!-]+\s*,?\s*)*)$")
_SPEC = re.compile(r"(==|!=|<=|>=|<|>)\s*([A-Za-z0-9.*+!-]+)")


def _req_name(requirement: str) -> str:
    """The distribution name of a simple requirement such as ``numpy<2`` or ``tflite-runtime==2.14.0``."""
    m = _REQ.match(requirement)
    if not m:
        raise UserInputError(
            f"cannot read requirement {requirement!r}",
            "use name, name==version or name<version (comma-separated)",
        )
    return m.group(1)


def _release(v: str) -> tuple[int, ...]:
    nums = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        nums.append(int(m.group()))
        if m.end() != len(part):
            break
    return tuple(nums)


def _cmp(a: str, b: str) -> int:
    ra, rb = _release(a), _release(b)
    n = max(len(ra), len(rb))
    ra, rb = ra + (0,) * (n - len(ra)), rb + (0,) * (n - len(rb))
    return (ra > rb) - (ra < rb)


def _satisfied(requirement: str, versions: dict[str, str | None]) -> bool:
    """Whether an installed version meets a simple requirement (==, !=, <, <=, >, >=; ``==`` exact)."""
    have = versions.get(_req_name(requirement))
    if have is None:
        return False
    m = _REQ.match(requirement)
    assert m is not None
    for op, want in _SPEC.findall(m.group(2)):
        ok = {
            "==": have == want or (_cmp(have, want) == 0 and not re.search(r"[a-z]", have + want)),
            "!=": have != want,
            "<": _cmp(have, want) < 0,
            "<=": _cmp(have, want) <= 0,
            ">": _cmp(have, want) > 0,
            ">=": _cmp(have, want) >= 0,
        }[op]
        if not ok:
            return False
    return True


# ---------------------------------------------------------------------------------------- check


@dataclass(frozen=True)
class CheckItem:
    name: str
    status: str  # OK / WARN / FAIL
    detail: str
    hint: str = ""


@dataclass
class CheckReport:
    device: str
    address: str
    items: list[CheckItem] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # the raw probe answer

    @property
    def ok(self) -> bool:
        return all(i.status != FAIL for i in self.items)

    @property
    def worst(self) -> str:
        s = {i.status for i in self.items}
        return FAIL if FAIL in s else WARN if WARN in s else OK

    def add(self, name: str, status: str, detail: str, hint: str = "") -> None:
        self.items.append(CheckItem(name, status, detail, hint))

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "address": self.address,
            "status": self.worst,
            "items": [asdict(i) for i in self.items],
            "facts": self.facts,
        }


def check_device(
    profile: DeviceProfile,
    *,
    trust_new_host: bool = False,
    transport: Transport | None = None,
    known_hosts: KnownHosts | None = None,
    on_item: Callable[[CheckItem], None] | None = None,
) -> CheckReport:
    """Connect and report what the device has, each item OK / WARN / FAIL with what to do.

    Never raises for a device problem: an unreachable device is a FAIL item. ``on_item`` sees each
    item as it is decided (for progress output).
    """
    report = CheckReport(profile.name, profile.address)

    def add(name: str, status: str, detail: str, hint: str = "") -> None:
        report.add(name, status, detail, hint)
        if on_item is not None:
            on_item(report.items[-1])

    add("profile", OK, f"{profile.name} ({profile.source or 'given'})")
    if profile.is_template:
        add(
            "address",
            FAIL,
            f"profile '{profile.name}' has no host (it describes a kind of device)",
            _template_hint(profile),
        )
        return report
    own = transport is None
    t = transport or open_transport(profile, trust_new_host=trust_new_host, known_hosts=known_hosts)
    try:
        _check_connected(profile, t, add, report)
    finally:
        if own:
            t.close()
    return report


def _check_connected(
    profile: DeviceProfile, t: Transport, add: Callable[..., None], report: CheckReport
) -> None:
    started = time.monotonic()
    try:
        if isinstance(t, SSHTransport):
            t.connect()
            workdir = t.workdir
            pinned = " (host key pinned now)" if t.host_key_outcome == "pinned" else ""
            add("connect", OK, f"{t.target} in {1000 * (time.monotonic() - started):.0f} ms{pinned}")
        else:
            workdir = device_workdir(t, profile)
            add("connect", OK, "local device (no SSH)")
    except (DeviceError, UserInputError) as exc:
        add("connect", FAIL, exc.message, exc.hint)
        return

    runtime = RUNTIMES[profile.runtime]
    dists = sorted({r.distribution for r in RUNTIMES.values()} | {"numpy"})
    vpy = venv_python(workdir)
    has_venv = False
    if not profile.is_local:
        res = t.run([vpy, "-c", "import sys; print(sys.version.split()[0])"], timeout=_PROBE_TIMEOUT_S)
        has_venv = res.exit_code == 0
    python = vpy if has_venv else profile.python
    try:
        facts, res = _run_json(
            t, [python, "-c", PROBE_PROGRAM, runtime.module, profile.delegate, workdir, ",".join(dists)]
        )
    except DeviceError as exc:
        add("probe", FAIL, exc.message, exc.hint)
        return
    if facts is None:
        if res.exit_code == 127:
            add(
                "python",
                FAIL,
                f"{python!r} not found on the device",
                "install python3 or set python in the profile",
            )
        else:
            add(
                "python",
                FAIL,
                f"probe failed with {python}: {_last_line(res)}",
                "check python in the profile",
            )
        return
    report.facts = facts

    arch = facts.get("machine", "?")
    if arch == profile.arch:
        add("arch", OK, arch)
    else:
        add(
            "arch",
            FAIL,
            f"device is {arch}, profile says {profile.arch}",
            "use a profile made for this device",
        )
    add(
        "os",
        OK,
        f"{facts.get('os') or 'unknown'} (kernel {facts.get('kernel')}, {facts.get('cpu_count')} CPUs, "
        f"{facts.get('mem_total_mb', '?')} MB RAM)",
    )

    pyv = _pyver(str(facts.get("python", "0.0")))
    where = f"{facts.get('python')} at {facts.get('executable')}"
    rng = _wheel_range(profile)
    if pyv < MIN_PYTHON:
        add(
            "python",
            FAIL,
            f"{where}: edgeq's runner needs Python >= {_fmt(MIN_PYTHON)}",
            "install a newer python3 and set python in the profile",
        )
    elif rng and not rng[0] <= pyv <= rng[1] and profile.runtime_source == "pip":
        add(
            "python",
            FAIL,
            f"{where}: {profile.runtime} {profile.runtime_version} has wheels for "
            f"Python {_fmt(rng[0])}-{_fmt(rng[1])} only",
            "set python to a matching interpreter, or pick another runtime/version in the profile",
        )
    else:
        add("python", OK, where)

    if not profile.is_local:
        if has_venv:
            add("venv", OK, posixpath.join(workdir, VENV))
        elif profile.runtime_source == "pip":
            add(
                "venv",
                WARN,
                f"no venv at {posixpath.join(workdir, VENV)}",
                f"run: edgeq devices setup {profile.name}",
            )

    pkgs: dict[str, str | None] = facts.get("packages") or {}
    have = pkgs.get(runtime.distribution)
    imp = facts.get("runtime_import") or {}
    setup_hint = (
        f"run: edgeq devices setup {profile.name}"
        if profile.runtime_source == "pip"
        else f"install {runtime.distribution} {profile.runtime_version} with the OS's package manager "
        "(see the profile's notes)"
    )
    if not imp.get("ok"):
        detail = (
            f"{runtime.module} does not import: {imp.get('error', '?')}"
            if have
            else f"{runtime.distribution} is not installed"
        )
        add("runtime", FAIL, detail, setup_hint)
    elif have != profile.runtime_version:
        add(
            "runtime",
            WARN,
            f"{runtime.distribution} {have} installed, profile pins {profile.runtime_version}",
            setup_hint,
        )
    else:
        add("runtime", OK, f"{runtime.distribution} {have} (imports in {imp.get('seconds', 0):.2f} s)")
    others = [f"{d} {v}" for d, v in sorted(pkgs.items()) if v and d not in (runtime.distribution, "numpy")]
    if others:
        add("other runtimes", OK, ", ".join(others))

    numpy = pkgs.get("numpy")
    if numpy is None:
        add("numpy", FAIL, "NumPy is not installed", setup_hint)
    elif "numpy<2" in runtime.requires and _pyver(numpy) >= (2, 0):
        add(
            "numpy",
            FAIL,
            f"NumPy {numpy} with {runtime.distribution}: its Interpreter fails with NumPy 2",
            setup_hint + " (pins numpy<2)",
        )
    else:
        add("numpy", OK, numpy)

    _check_delegate(profile, facts.get("delegate") or {}, add)
    _check_power(profile, facts, add)
    _check_thermal(profile, facts.get("thermal") or [], add)

    govs: dict[str, list[str]] = facts.get("governors") or {}
    if not govs:
        add("governor", WARN, "no cpufreq in /sys (a VM or fixed clocks): the governor cannot be checked")
    elif profile.governor and set(govs) != {profile.governor}:
        now = ", ".join(f"{g} ({len(c)} CPUs)" for g, c in govs.items())
        add(
            "governor",
            WARN,
            f"{now}; profile wants {profile.governor} for stable numbers",
            f"echo {profile.governor} | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
        )
    else:
        add("governor", OK, ", ".join(govs))

    free = facts.get("disk_free_mb", 0)
    if not facts.get("workdir_writable"):
        add(
            "workdir",
            FAIL,
            f"{workdir} is not writable",
            "set workdir in the profile to a directory the user owns",
        )
    elif free < 200:
        add("workdir", WARN, f"{workdir}: only {free} MB free", "free space on the device")
    else:
        state = "exists" if facts.get("workdir_exists") else "will be created by setup/deploy"
        add("workdir", OK, f"{workdir} ({state}, {free} MB free)")


def _check_delegate(profile: DeviceProfile, d: dict[str, Any], add: Callable[..., None]) -> None:
    if profile.delegate == "xnnpack":
        add("delegate", OK, "xnnpack (built into the runtime)")
    elif profile.delegate == "edgetpu":
        if not d.get("library"):
            add(
                "delegate",
                FAIL,
                f"libedgetpu.so.1 does not load: {d.get('error', '')}",
                "install libedgetpu1-std from Coral's apt repository",
            )
        elif not d.get("usb") and not d.get("pcie"):
            add(
                "delegate",
                WARN,
                "libedgetpu.so.1 loads, but no Edge TPU is attached",
                "plug in the Coral USB Accelerator (blue USB 3 port)",
            )
        else:
            found = ", ".join(d.get("usb", [])) or "PCIe /dev/apex_0"
            add("delegate", OK, f"edgetpu: libedgetpu.so.1 loads; device {found}")
    elif profile.delegate == "openvino":
        devices = d.get("devices")
        want = str(profile.options.get("device", "CPU"))
        if devices is None:
            add(
                "delegate",
                FAIL,
                f"OpenVINO does not start: {d.get('error', '?')}",
                f"run: edgeq devices setup {profile.name}",
            )
        elif want not in devices:
            add(
                "delegate",
                FAIL,
                f"OpenVINO device {want} not available (found: {', '.join(devices) or 'none'})",
                "install the device's driver and udev rules (see the profile's notes)",
            )
        else:
            add("delegate", OK, f"openvino: {want} available ({', '.join(devices)})")


def _check_power(profile: DeviceProfile, f: dict[str, Any], add: Callable[..., None]) -> None:
    src = profile.power_source
    hwmon: list[str] = f.get("hwmon") or []
    if src == "none":
        add("power", OK, "not measured (no power sensor in this profile)")
    elif src == "rapl":
        r = f.get("rapl") or {}
        if not r.get("present"):
            add(
                "power",
                WARN,
                "no RAPL (/sys/class/powercap/intel-rapl:0): energy will not be measured",
                "a VM or a CPU without RAPL",
            )
        elif not r.get("readable"):
            add(
                "power",
                WARN,
                "RAPL present but energy_uj is readable by root only",
                "run the device side as root, or chmod o+r energy_uj (udev rule)",
            )
        else:
            add("power", OK, "RAPL package energy readable")
    elif src in ("ina3221", "hwmon"):
        want = profile.power_sensor or "ina3221"
        if any(want in h for h in hwmon):
            add("power", OK, f"hwmon sensor {want} found")
        else:
            add(
                "power",
                WARN,
                f"hwmon sensor {want} not found (hwmon: {', '.join(hwmon) or 'none'})",
                "check the sensor driver is loaded",
            )
    elif src == "rpi5-pmic":
        if f.get("vcgencmd"):
            add("power", OK, "vcgencmd pmic_read_adc available")
        else:
            add("power", WARN, "vcgencmd not found: PMIC power cannot be read", "install libraspberrypi-bin")


def _check_thermal(profile: DeviceProfile, zones: list[dict[str, Any]], add: Callable[..., None]) -> None:
    if not zones:
        add("thermal", WARN, "no thermal zones in /sys/class/thermal: temperatures will not be recorded")
        return
    types = [z.get("type", "?") for z in zones]
    missing = [z for z in profile.thermal_zones if z not in types]
    shown = ", ".join(
        f"{z.get('type', '?')} {z['temp_c']:.1f} C" if "temp_c" in z else z.get("type", "?") for z in zones
    )
    if missing:
        add(
            "thermal",
            WARN,
            f"zones {', '.join(missing)} not found; found: {shown}",
            "set thermal_zones in the profile to the types found",
        )
    else:
        add("thermal", OK, shown)
    temps = [z["temp_c"] for z in zones if "temp_c" in z]
    if temps and max(temps) >= 80:
        add(
            "temperature",
            WARN,
            f"hottest zone at {max(temps):.1f} C: the device may throttle",
            "let it cool down or improve cooling",
        )


# ---------------------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class SetupStep:
    name: str
    status: str  # "done" (changed something), "ok" (already so), "skipped", "failed"
    detail: str
    hint: str = ""


@dataclass
class SetupReport:
    device: str
    steps: list[SetupStep] = field(default_factory=list)
    python: str = ""  # the interpreter the runner should use afterwards

    @property
    def ok(self) -> bool:
        return all(s.status != "failed" for s in self.steps)

    @property
    def changed(self) -> bool:
        return any(s.status == "done" for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "ok": self.ok,
            "changed": self.changed,
            "python": self.python,
            "steps": [asdict(s) for s in self.steps],
        }


def setup_device(
    profile: DeviceProfile,
    *,
    trust_new_host: bool = False,
    transport: Transport | None = None,
    known_hosts: KnownHosts | None = None,
    requirements: Sequence[str] | None = None,
    module: str | None = None,
    on_step: Callable[[SetupStep], None] | None = None,
    on_output: Callable[[str], None] | None = None,
) -> SetupReport:
    """Make the device ready, idempotently: workdir, ``<workdir>/venv`` (``--system-site-packages``,
    so an OS NumPy is usable) and the profile's runtime pinned. What is already right is left alone.

    ``requirements`` / ``module`` replace the profile's pip requirements and import check (offline
    installs from a wheel directory given in ``pip_args``, tests). ``on_output`` sees pip's output lines.
    Device and input errors become failed steps; the report says what to do.
    """
    report = SetupReport(profile.name)

    def step(name: str, status: str, detail: str, hint: str = "") -> bool:
        report.steps.append(SetupStep(name, status, detail, hint))
        if on_step is not None:
            on_step(report.steps[-1])
        return status != "failed"

    if profile.is_template:
        step(
            "address",
            "failed",
            f"profile '{profile.name}' has no host",
            _template_hint(profile),
        )
        return report
    own = transport is None
    t = transport or open_transport(profile, trust_new_host=trust_new_host, known_hosts=known_hosts)
    try:
        _setup(profile, t, step, report, requirements, module, on_output)
    except (DeviceError, UserInputError) as exc:
        step("device", "failed", exc.message, exc.hint)
    finally:
        if own:
            t.close()
    return report


def _setup(
    profile: DeviceProfile,
    t: Transport,
    step: Callable[..., bool],
    report: SetupReport,
    requirements: Sequence[str] | None,
    module: str | None,
    on_output: Callable[[str], None] | None,
) -> None:
    if isinstance(t, SSHTransport):
        t.connect()
        step("connect", "ok", t.target + (" (host key pinned now)" if t.host_key_outcome == "pinned" else ""))
    workdir = device_workdir(t, profile)
    py = profile.python
    res = t.run([py, "-c", MKDIR_PROGRAM, workdir], timeout=_PROBE_TIMEOUT_S)
    if res.exit_code == 127:
        step(
            "python",
            "failed",
            f"{py!r} not found on the device",
            "install python3 or set python in the profile",
        )
        return
    if res.exit_code != 0:
        step(
            "workdir",
            "failed",
            f"cannot create {workdir}: {_last_line(res)}",
            "set workdir to a directory the user can write",
        )
        return
    created = res.stdout.strip().endswith("created")
    step("workdir", "done" if created else "ok", f"{workdir} {'created' if created else 'exists'}")

    res = t.run([py, "-c", "import platform; print(platform.python_version())"], timeout=_PROBE_TIMEOUT_S)
    pyv = _pyver(res.stdout.strip())
    if res.exit_code != 0 or pyv < MIN_PYTHON:
        step(
            "python",
            "failed",
            f"{py} is Python {res.stdout.strip() or '?'}; edgeq's runner needs >= {_fmt(MIN_PYTHON)}",
            "install a newer python3 and set python in the profile",
        )
        return
    step("python", "ok", f"{py} {res.stdout.strip()}")

    runtime = RUNTIMES[profile.runtime]
    mod = module or runtime.module
    if profile.is_local or (profile.runtime_source == "system" and requirements is None):
        # Nothing to install: the runtime comes with edgeq (local) or the OS image (system).
        res = t.run([py, "-c", IMPORT_PROGRAM, mod], timeout=_PROBE_TIMEOUT_S)
        report.python = py
        if res.exit_code == 0:
            step("runtime", "ok", f"{mod} imports with {py} ({profile.runtime_source})")
        else:
            step(
                "runtime",
                "failed",
                f"{mod} does not import with {py}: {_last_line(res)}",
                "install it with the OS's package manager (see the profile's notes)",
            )
        return

    vdir = posixpath.join(workdir, VENV)
    vpy = venv_python(workdir)
    res = t.run([vpy, "-c", "import sys; print(sys.prefix)"], timeout=_PROBE_TIMEOUT_S)
    if res.exit_code == 0:
        step("venv", "ok", f"{vdir} exists")
    else:
        args = [py, "-m", "venv", "--system-site-packages"]
        if res.exit_code != 127:  # a venv directory that does not run: rebuild it in place
            args.append("--clear")
        res = t.run([*args, vdir], timeout=_PIP_TIMEOUT_S)
        if res.exit_code != 0:
            err = _last_line(res)
            hint = (
                "sudo apt-get install python3-venv"
                if "ensurepip" in (res.stdout + res.stderr)
                else "check the device's Python"
            )
            step("venv", "failed", f"cannot create {vdir}: {err}", hint)
            return
        step("venv", "done", f"{vdir} created (--system-site-packages)")
    report.python = vpy

    reqs = list(requirements if requirements is not None else profile.requirements)
    names = [_req_name(r) for r in reqs]
    versions, res = _run_json(t, [vpy, "-c", VERSIONS_PROGRAM, *names])
    versions = versions or {}
    missing = [r for r in reqs if not _satisfied(r, versions)]
    if not missing:
        have = ", ".join(f"{n} {versions.get(n)}" for n in names)
        step("packages", "ok", f"already installed: {have}")
    else:
        cmd = [
            vpy,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *profile.pip_args,
            *reqs,
        ]
        res = t.run(cmd, timeout=_PIP_TIMEOUT_S, on_stdout_line=on_output)
        if res.exit_code != 0:
            step(
                "packages",
                "failed",
                f"pip install {' '.join(reqs)} failed: {_last_line(res)}",
                "check the device's network (or pip_args for an offline index) and Python version",
            )
            return
        versions, _ = _run_json(t, [vpy, "-c", VERSIONS_PROGRAM, *names])
        versions = versions or {}
        still = [r for r in reqs if not _satisfied(r, versions)]
        if still:
            step(
                "packages",
                "failed",
                f"after pip install, not satisfied: {', '.join(still)}",
                "see pip's output",
            )
            return
        step("packages", "done", "installed: " + ", ".join(f"{n} {versions.get(n)}" for n in names))

    res = t.run([vpy, "-c", IMPORT_PROGRAM, mod], timeout=_PROBE_TIMEOUT_S)
    if res.exit_code == 0:
        step("runtime", "ok", f"{mod} imports in the venv")
    else:
        step(
            "runtime",
            "failed",
            f"{mod} does not import: {_last_line(res)}",
            "see the error; edgeq devices check gives details",
        )
