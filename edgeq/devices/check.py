"""``edgeq devices check``: connect and report what a device has, each item OK / WARN / FAIL with what
to do. Never raises for a device problem: an unreachable device is a FAIL item."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edgeq.devices.probe import (
    MIN_PYTHON,
    PROBE_PROGRAM,
    PROBE_TIMEOUT_S,
    VENV,
    fmt_version,
    last_line,
    python_version,
    run_json,
    venv_python,
)
from edgeq.devices.profile import RUNTIMES, DeviceProfile
from edgeq.devices.transports import Transport, using
from edgeq.devices.transports.known_hosts import KnownHosts
from edgeq.errors import DeviceError, UserInputError

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# Python versions the pinned runtime wheels exist for: (runtime, version prefix) -> (lowest, highest).
_WHEEL_PYTHONS: dict[tuple[str, str], tuple[tuple[int, int], tuple[int, int]]] = {
    ("ai-edge-litert", "2."): ((3, 10), (3, 14)),
    ("tflite-runtime", "2.14"): ((3, 8), (3, 11)),
    ("openvino", "2022.3"): ((3, 7), (3, 10)),
}


def _wheel_range(profile: DeviceProfile) -> tuple[tuple[int, int], tuple[int, int]] | None:
    for (runtime, prefix), rng in _WHEEL_PYTHONS.items():
        if profile.board.runtime == runtime and profile.board.runtime_version.startswith(prefix):
            return rng
    return None


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
            profile.template_hint,
        )
        return report
    with using(profile, transport, trust_new_host=trust_new_host, known_hosts=known_hosts) as t:
        _check_connected(profile, t, add, report)
    return report


def _check_connected(
    profile: DeviceProfile, t: Transport, add: Callable[..., None], report: CheckReport
) -> None:
    try:
        add("connect", OK, t.connect())
        workdir = t.workdir
    except (DeviceError, UserInputError) as exc:
        add("connect", FAIL, exc.message, exc.hint)
        return

    runtime = RUNTIMES[profile.board.runtime]
    dists = sorted({r.distribution for r in RUNTIMES.values()} | {"numpy"})
    vpy = venv_python(workdir)
    has_venv = False
    if not profile.is_local:
        res = t.run([vpy, "-c", "import sys; print(sys.version.split()[0])"], timeout=PROBE_TIMEOUT_S)
        has_venv = res.exit_code == 0
    python = vpy if has_venv else profile.board.python
    try:
        facts, res = run_json(
            t, [python, "-c", PROBE_PROGRAM, runtime.module, profile.board.delegate, workdir, ",".join(dists)]
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
                f"probe failed with {python}: {last_line(res)}",
                "check python in the profile",
            )
        return
    report.facts = facts

    arch = facts.get("machine", "?")
    if arch == profile.board.arch:
        add("arch", OK, arch)
    else:
        add(
            "arch",
            FAIL,
            f"device is {arch}, profile says {profile.board.arch}",
            "use a profile made for this device",
        )
    add(
        "os",
        OK,
        f"{facts.get('os') or 'unknown'} (kernel {facts.get('kernel')}, {facts.get('cpu_count')} CPUs, "
        f"{facts.get('mem_total_mb', '?')} MB RAM)",
    )

    pyv = python_version(str(facts.get("python", "0.0")))
    where = f"{facts.get('python')} at {facts.get('executable')}"
    rng = _wheel_range(profile)
    if pyv < MIN_PYTHON:
        add(
            "python",
            FAIL,
            f"{where}: edgeq's runner needs Python >= {fmt_version(MIN_PYTHON)}",
            "install a newer python3 and set python in the profile",
        )
    elif rng and not rng[0] <= pyv <= rng[1] and profile.board.runtime_source == "pip":
        add(
            "python",
            FAIL,
            f"{where}: {profile.board.runtime} {profile.board.runtime_version} has wheels for "
            f"Python {fmt_version(rng[0])}-{fmt_version(rng[1])} only",
            "set python to a matching interpreter, or pick another runtime/version in the profile",
        )
    else:
        add("python", OK, where)

    if not profile.is_local:
        if has_venv:
            add("venv", OK, posixpath.join(workdir, VENV))
        elif profile.board.runtime_source == "pip":
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
        if profile.board.runtime_source == "pip"
        else f"install {runtime.distribution} {profile.board.runtime_version} with the OS's package manager "
        "(see the profile's notes)"
    )
    if not imp.get("ok"):
        detail = (
            f"{runtime.module} does not import: {imp.get('error', '?')}"
            if have
            else f"{runtime.distribution} is not installed"
        )
        add("runtime", FAIL, detail, setup_hint)
    elif have != profile.board.runtime_version:
        add(
            "runtime",
            WARN,
            f"{runtime.distribution} {have} installed, profile pins {profile.board.runtime_version}",
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
    elif "numpy<2" in runtime.requires and python_version(numpy) >= (2, 0):
        add(
            "numpy",
            FAIL,
            f"NumPy {numpy} with {runtime.distribution}: its Interpreter fails with NumPy 2",
            setup_hint + " (pins numpy<2)",
        )
    else:
        add("numpy", OK, numpy)

    runner, why = _runner(t, python, workdir, bool(facts.get("workdir_writable")))
    _check_delegate(profile, t, python, runner, why, add)
    _check_sensors(profile, t, python, runner, why, add)

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


def _runner(t: Transport, python: str, workdir: str, writable: bool) -> tuple[str | None, str]:
    """Put the runner on the device (content-addressed, as deploy does) to ask its own modules."""
    from edgeq.devices.deploy import deploy_file
    from edgeq.runner_zip import build_runner_pyz

    if not writable:
        return None, f"{workdir} is not writable, so the runner cannot be put there to ask"
    try:
        return deploy_file(t, python, workdir, build_runner_pyz(), "runner").remote_path, ""
    except (DeviceError, UserInputError) as exc:
        return None, exc.message


def _ask(t: Transport, argv: list[str]) -> tuple[dict[str, Any] | None, str]:
    try:
        answer, res = run_json(t, argv)
    except (DeviceError, UserInputError) as exc:
        return None, exc.message
    if answer is None or "result" not in answer:
        return None, f"the runner did not answer: {last_line(res)}"
    result: dict[str, Any] = answer["result"]
    return result, ""


def _check_delegate(
    profile: DeviceProfile, t: Transport, python: str, runner: str | None, why: str, add: Callable[..., None]
) -> None:
    from edgeq import delegates

    b = profile.board
    facts: dict[str, Any] = {}
    if b.delegate not in ("none", "xnnpack"):
        if runner is None:
            add(
                "delegate",
                WARN,
                f"{b.delegate} not checked: {why}",
                f"run: edgeq devices setup {profile.name}",
            )
            return
        answer, why = _ask(t, [python, runner, "delegate-facts", "--delegate", b.delegate])
        if answer is None:
            add("delegate", FAIL, f"{b.delegate}: {why}", f"run: edgeq devices setup {profile.name}")
            return
        facts = answer["facts"]
    for status, detail, hint in delegates.get(b.delegate).check_lines(facts, b.options, b.runtime_version):
        add("delegate", status, detail, hint)


def _check_sensors(
    profile: DeviceProfile, t: Transport, python: str, runner: str | None, why: str, add: Callable[..., None]
) -> None:
    """One line per sensor kind, from the runner's own sensor modules on the device."""
    b = profile.board
    sensors = None
    if runner is not None:
        power = None if b.power_source == "none" else json.dumps(profile.measure_spec({"power": True}).power)
        argv = [python, runner, "sensors", "--sysfs-root", b.sysfs_root, "--vcgencmd", b.vcgencmd]
        sensors, why = _ask(t, argv + (["--power-config", power] if power else []))
    if sensors is None:
        add("sensors", WARN, f"sensors not checked: {why}", f"run: edgeq devices setup {profile.name}")
        return
    sources: dict[str, dict[str, Any]] = sensors["power"]["sources"]
    configured = sensors["power"].get("configured")
    others = [n for n, e in sources.items() if e.get("present") and n != (configured or {}).get("reader")]
    also = f" (also here: {', '.join(others)})" if others else ""
    if configured is None:
        add("power", OK, f"not measured: the profile has no power_source{also}")
    elif configured.get("present"):
        add("power", OK, f"{configured['source']}: {configured['detail']}")
    elif configured.get("status") == "unknown":
        add("power", WARN, f"{configured['source']}: {configured['detail']}", configured.get("hint", ""))
    else:
        needs = sources.get(configured.get("reader") or configured["source"], {}).get("needs", "")
        add(
            "power",
            WARN,
            f"{configured['source']}: {configured['detail']}" + (f" (needs {needs})" if needs else ""),
            configured.get("hint") or "set power_source in the profile to a sensor the board has" + also,
        )
    zones = sensors["thermal"]["zones"]
    if not zones:
        add(
            "thermal",
            WARN,
            f"no thermal zones under {b.sysfs_root}/class/thermal: temperatures will not be recorded",
        )
    else:
        types = [z.get("type") or "?" for z in zones]
        shown = ", ".join(
            f"{z.get('type')} {z['temp_c']:.1f} C" if z.get("temp_c") is not None else str(z.get("type"))
            for z in zones
        )
        missing = [z for z in b.thermal_zones if z not in types]
        if missing:
            add(
                "thermal",
                WARN,
                f"zones {', '.join(missing)} not found; found: {shown}",
                "set thermal_zones in the profile to the types found",
            )
        else:
            add("thermal", OK, shown)
        temps = [z["temp_c"] for z in zones if z.get("temp_c") is not None]
        if temps and max(temps) >= 80:
            add(
                "temperature",
                WARN,
                f"hottest zone at {max(temps):.1f} C: the device may throttle",
                "let it cool down or improve cooling",
            )
    policies = sensors["cpufreq"]["policies"]
    governors = sorted({p.get("governor") for p in policies if p.get("governor")})
    if not governors:
        add("governor", WARN, "no cpufreq in /sys (a VM or fixed clocks): the governor cannot be checked")
    elif b.governor and governors != [b.governor]:
        add(
            "governor",
            WARN,
            f"{', '.join(governors)}; profile wants {b.governor} for stable numbers",
            f"pass --set-governor {b.governor} to profile, or: echo {b.governor} | sudo tee "
            "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
        )
    else:
        add("governor", OK, ", ".join(governors))
