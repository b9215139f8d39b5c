"""``edgeq devices …``: parse, call edgeq.devices (listing, check, setup), render. Mounted by ``edgeq.cli``.

EdgeqErrors propagate to the main CLI, which prints them as one line plus a hint with their exit code.
``check`` and ``setup`` exit with 3 (device failure) when an item failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgeq.cli.app import HostOpt, JsonOpt, ProfilesOpt, TrustOpt, err, out, table
from edgeq.errors import EXIT_DEVICE

if TYPE_CHECKING:
    from edgeq.devices import check as device_check
    from edgeq.devices import setup as device_setup
    from edgeq.devices.profile import DeviceProfile

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
NameArg = Annotated[str, typer.Argument(help="Device profile name, or a path to a .toml profile.")]

_STYLE = {
    "OK": "green",
    "WARN": "yellow",
    "FAIL": "bold red",
    "done": "green",
    "ok": "green",
    "skipped": "dim",
    "failed": "bold red",
}


def _profile(name: str, profiles: list[Path] | None, host: str | None) -> DeviceProfile:
    from edgeq.devices.profile import load_profile

    p = load_profile(name, profiles or [])
    return p.with_target(host) if host else p


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


@app.command("list")
def list_cmd(profiles: ProfilesOpt = None, as_json: JsonOpt = False) -> None:
    """Device profiles visible by name: user directories first, then the built-ins."""
    from edgeq.devices.listing import list_devices

    rows = list_devices(profiles or [])
    if as_json:
        _print_json([r.to_dict() for r in rows])
        return
    t = table(show_edge=False, pad_edge=False)
    t.add_column("name", no_wrap=True)
    t.add_column("arch", no_wrap=True)
    for col in ("runtime", "delegate", "host", "source"):
        t.add_column(col, overflow="fold")
    for r in rows:
        if r.error:
            t.add_row(r.name, "", "", "", "", f"{r.source}\n[red]{r.error}[/]")
            continue
        source = _src(r.source)
        if r.shadows:
            source += f" [dim](shadows {', '.join(_src(s) for s in r.shadows)})[/]"
        host = f"[dim]{r.host}[/]" if r.host == "(set host)" else r.host
        t.add_row(r.name, r.arch, r.runtime, r.delegate, host, source)
    out.print(t)


def _src(source: str) -> str:
    return "built-in" if source.startswith("builtin:") else source


@app.command("show")
def show_cmd(
    name: NameArg, profiles: ProfilesOpt = None, host: HostOpt = None, as_json: JsonOpt = False
) -> None:
    """Every setting of one profile, after `extends` and defaults, with its notes."""
    p = _profile(name, profiles, host)
    data = p.to_dict()
    if as_json:
        _print_json(data)
        return
    out.print(f"[bold]{p.name}[/] — {p.description}  [dim]({p.source})[/]")
    for k, v in data.items():
        if k in ("name", "description", "notes", "source"):
            continue
        out.print(f"  {k:18} {v}")
    for n in p.notes:
        out.print(f"  • {n}", soft_wrap=True)


@app.command("check")
def check_cmd(
    name: NameArg,
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Connect and report arch, OS, Python, runtime, delegate, sensors, governor, temperatures."""
    from edgeq.devices import check as device_check

    p = _profile(name, profiles, host)

    def show(item: device_check.CheckItem) -> None:
        if not as_json:
            style = _STYLE.get(item.status, "")
            out.print(f"[{style}]{item.status:4}[/] {item.name:14} {item.detail}", soft_wrap=True)
            if item.hint and item.status != "OK":
                out.print(f"     {'':14} [dim]→ {item.hint}[/]", soft_wrap=True)

    if not as_json:
        out.print(f"[bold]{p.name}[/] ({p.address})")
    report = device_check.check_device(p, trust_new_host=trust_new_host, on_item=show)
    if as_json:
        _print_json(report.to_dict())
    else:
        style = _STYLE[report.worst]
        out.print(f"[{style}]{report.worst}[/] {p.name}: " + _summary(report))
    if not report.ok:
        raise typer.Exit(EXIT_DEVICE)


def _summary(report: device_check.CheckReport) -> str:
    counts = {s: sum(1 for i in report.items if i.status == s) for s in ("OK", "WARN", "FAIL")}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


@app.command("setup")
def setup_cmd(
    name: NameArg,
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Create the work directory and a venv with the profile's runtime pinned (idempotent)."""
    from edgeq.devices import setup as device_setup

    p = _profile(name, profiles, host)

    def show(step: device_setup.SetupStep) -> None:
        if not as_json:
            style = _STYLE.get(step.status, "")
            err.print(f"[{style}]{step.status:7}[/] {step.name:9} {step.detail}", soft_wrap=True)
            if step.hint:
                err.print(f"        {'':9} [dim]→ {step.hint}[/]", soft_wrap=True)

    if not as_json:
        err.print(f"[bold]setting up {p.name}[/] ({p.address}); pip output may take a while")
    if as_json:
        report = device_setup.setup_device(p, trust_new_host=trust_new_host)
    else:
        with err.status("working…", spinner="dots") as status:

            def pip_line(line: str) -> None:
                if line.strip():
                    status.update(f"pip: {line.strip()[:100]}")

            report = device_setup.setup_device(
                p, trust_new_host=trust_new_host, on_step=show, on_output=pip_line
            )
    if as_json:
        _print_json(report.to_dict())
    elif report.ok:
        what = "ready" + ("" if report.changed else " (nothing to do)")
        out.print(f"[green]{what}[/]: {p.name}, runner python {report.python}", soft_wrap=True)
    else:
        out.print(f"[bold red]setup failed[/]: {p.name}")
    if not report.ok:
        raise typer.Exit(EXIT_DEVICE)


@app.command("disconnect")
def disconnect_cmd(as_json: JsonOpt = False) -> None:
    """Close the SSH connections kept open between commands (each board's keeper; see persist_s)."""
    from edgeq.devices.transports import keeper

    stopped = keeper.stop_all()
    if as_json:
        _print_json({"stopped": stopped})
    else:
        out.print(f"closed: {', '.join(stopped)}" if stopped else "no kept connections", soft_wrap=True)
