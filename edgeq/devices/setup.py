"""``edgeq devices setup``: make a device ready, idempotently (workdir, venv, the pinned runtime).

Requirements are read and compared with ``packaging`` (the same rules pip applies).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from edgeq.devices.probe import (
    IMPORT_PROGRAM,
    MIN_PYTHON,
    MKDIR_PROGRAM,
    PIP_TIMEOUT_S,
    PROBE_TIMEOUT_S,
    VENV,
    VERSIONS_PROGRAM,
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


def _requirement(text: str) -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise UserInputError(
            f"cannot read requirement {text!r}: {exc}", "write it as pip does, e.g. numpy<2 or name==1.2"
        ) from None


def _satisfied(requirement: str, versions: dict[str, str | None]) -> bool:
    """Whether the installed version of the requirement's distribution meets it (pip's rules)."""
    req = _requirement(requirement)
    have = versions.get(req.name)
    return have is not None and req.specifier.contains(have, prereleases=True)


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
            profile.template_hint,
        )
        return report
    try:
        with using(profile, transport, trust_new_host=trust_new_host, known_hosts=known_hosts) as t:
            _setup(profile, t, step, report, requirements, module, on_output)
    except (DeviceError, UserInputError) as exc:
        step("device", "failed", exc.message, exc.hint)
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
    if not t.is_local:
        step("connect", "ok", t.connect())
    workdir = t.workdir
    py = profile.board.python
    res = t.run([py, "-c", MKDIR_PROGRAM, workdir], timeout=PROBE_TIMEOUT_S)
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
            f"cannot create {workdir}: {last_line(res)}",
            "set workdir to a directory the user can write",
        )
        return
    created = res.stdout.strip().endswith("created")
    step("workdir", "done" if created else "ok", f"{workdir} {'created' if created else 'exists'}")

    res = t.run([py, "-c", "import platform; print(platform.python_version())"], timeout=PROBE_TIMEOUT_S)
    pyv = python_version(res.stdout.strip())
    if res.exit_code != 0 or pyv < MIN_PYTHON:
        step(
            "python",
            "failed",
            f"{py} is Python {res.stdout.strip() or '?'}; edgeq's runner needs >= {fmt_version(MIN_PYTHON)}",
            "install a newer python3 and set python in the profile",
        )
        return
    step("python", "ok", f"{py} {res.stdout.strip()}")

    runtime = RUNTIMES[profile.board.runtime]
    mod = module or runtime.module
    if profile.is_local or (profile.board.runtime_source == "system" and requirements is None):
        # Nothing to install: the runtime comes with edgeq (local) or the OS image (system).
        res = t.run([py, "-c", IMPORT_PROGRAM, mod], timeout=PROBE_TIMEOUT_S)
        report.python = py
        if res.exit_code == 0:
            step("runtime", "ok", f"{mod} imports with {py} ({profile.board.runtime_source})")
        else:
            step(
                "runtime",
                "failed",
                f"{mod} does not import with {py}: {last_line(res)}",
                "install it with the OS's package manager (see the profile's notes)",
            )
        return

    vdir = posixpath.join(workdir, VENV)
    vpy = venv_python(workdir)
    res = t.run([vpy, "-c", "import sys; print(sys.prefix)"], timeout=PROBE_TIMEOUT_S)
    if res.exit_code == 0:
        step("venv", "ok", f"{vdir} exists")
    else:
        args = [py, "-m", "venv", "--system-site-packages"]
        if res.exit_code != 127:  # a venv directory that does not run: rebuild it in place
            args.append("--clear")
        res = t.run([*args, vdir], timeout=PIP_TIMEOUT_S)
        if res.exit_code != 0:
            err = last_line(res)
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
    names = [_requirement(r).name for r in reqs]
    versions, res = run_json(t, [vpy, "-c", VERSIONS_PROGRAM, *names])
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
            *profile.board.pip_args,
            *reqs,
        ]
        res = t.run(cmd, timeout=PIP_TIMEOUT_S, on_stdout_line=on_output)
        if res.exit_code != 0:
            step(
                "packages",
                "failed",
                f"pip install {' '.join(reqs)} failed: {last_line(res)}",
                "check the device's network (or pip_args for an offline index) and Python version",
            )
            return
        versions, _ = run_json(t, [vpy, "-c", VERSIONS_PROGRAM, *names])
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

    res = t.run([vpy, "-c", IMPORT_PROGRAM, mod], timeout=PROBE_TIMEOUT_S)
    if res.exit_code == 0:
        step("runtime", "ok", f"{mod} imports in the venv")
    else:
        step(
            "runtime",
            "failed",
            f"{mod} does not import: {last_line(res)}",
            "see the error; edgeq devices check gives details",
        )
