"""The Typer app, the consoles, and what every command shares (options, progress, rendering)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from edgeq.errors import UserInputError

if TYPE_CHECKING:
    from rich.table import Table

    from edgeq.data import DataOptions
    from edgeq.devices.connect import DeviceTarget

app = typer.Typer(
    name="edgeq",
    help="From a Keras model to full-int8 numbers measured on a real edge device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def table(**options: Any) -> Table:
    """A rich Table; rich.table is imported when a command first draws one (~5 ms of every start)."""
    from rich.table import Table

    return Table(**options)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"edgeq {version('edgeq')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print edgeq's version and exit.", is_eager=True, callback=_version),
    ] = False,
) -> None:
    """From a Keras model to full-int8 numbers measured on a real edge device."""


DataOpt = Annotated[
    str, typer.Option("--data", help="'digits' (bundled), a .npz file (x, y[, labels]) or an image folder.")
]
ImageSizeOpt = Annotated[str, typer.Option(help="HxW that image-folder images are resized to.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split and of training.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
TemperatureOpt = Annotated[
    float, typer.Option(help="Distillation temperature (softens the teacher's outputs).")
]
AlphaOpt = Annotated[
    float, typer.Option(help="Weight of the hard-label loss (1 − alpha: the teacher's soft targets).")
]
DeviceOpt = Annotated[str, typer.Option(help="Device profile name or path to a .toml profile.")]
ProfilesOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--profiles",
        help="Directory of NAME.toml device profiles (repeatable); searched before EDGEQ_PROFILES "
        "and the built-ins.",
    ),
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", help="Point the profile at [user@]host[:port] (for built-in board profiles)."),
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-new-host", help="Accept and pin an unknown host key (a changed key is always refused)."
    ),
]


DelegateOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--delegate-option", help="KEY=VALUE delegate setting, repeatable (e.g. device=NPU, device=usb:0)."
    ),
]


def delegate_options(items: list[str] | None) -> dict[str, str]:
    """``["device=NPU"]`` → ``{"device": "NPU"}``; anything else is one UserInputError."""
    opts = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError(
                f"--delegate-option {item!r} is not KEY=VALUE", "pass e.g. --delegate-option device=NPU"
            )
        opts[key.strip()] = value.strip()
    return opts


def target(device: str, profiles: list[Path] | None, host: str | None, trust: bool) -> DeviceTarget:
    from edgeq.devices.connect import DeviceTarget

    return DeviceTarget(name=device, profiles=tuple(profiles or ()), host=host, trust_new_host=trust)


def data_options(data: str, image_size: str, seed: int) -> DataOptions:
    from edgeq.data import DataOptions

    try:
        h, w = (int(v) for v in image_size.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise UserInputError(
            f"--image-size {image_size!r} is not HxW", "pass e.g. --image-size 32x32"
        ) from None
    return DataOptions(source=None if data == "digits" else data, image_size=(h, w), seed=seed)


class Progress:
    """Stage lines on stderr; epochs and runner progress update one transient status line."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.status: Any = None

    def __call__(self, e: dict[str, Any]) -> None:
        if self.quiet:
            return
        text = None
        if "epoch" in e:
            metrics = "  ".join(
                f"{k} {v:.4f}" for k, v in e.items() if k in ("loss", "acc", "val_loss", "val_acc")
            )
            text = f"  {e['stage']}: epoch {e['epoch']}/{e['epochs']}  {metrics}"
        elif e.get("event") == "progress":
            text = f"  {e.get('stage', 'profile')}: {e.get('phase')} {e.get('done')}/{e.get('total')}"
        if text is not None:
            if self.status is None:
                self.status = err.status(text)
                self.status.start()
            else:
                self.status.update(text)
            return
        self._stop()
        if e.get("event") == "warning":
            err.print(
                f"[yellow]warning:[/] {e.get('message')}" + (f" ({e['hint']})" if e.get("hint") else ""),
                soft_wrap=True,
            )
        elif "message" in e and "stage" in e:
            elapsed = f"[dim]{e['elapsed_s']:6.1f}s[/] " if "elapsed_s" in e else ""
            err.print(f"{elapsed}[bold]{e['stage']}[/]: {e['message']}", soft_wrap=True)

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def close(self) -> None:
        self._stop()


def print_json(obj: Any) -> None:
    out.print_json(json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj, default=str))


def emit(obj: Any, as_json: bool) -> None:
    if as_json:
        print_json(obj)
    else:
        for k, v in obj.items():
            out.print(f"{k}: {v}")
