"""Measurement options → MeasureSpec settings, in this one place; and ``edgeq profile`` / ``deploy``.

Every command that measures (``profile``, ``pipeline``) takes the same options through
:func:`measure_options`, which adds them to the command and hands the command one ``measure``
mapping of the settings given on the command line. Settings left out come from the device profile,
then from MeasureSpec's defaults (:meth:`edgeq.devices.profile.DeviceProfile.measure_spec`).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeq import api
from edgeq.cli.app import (
    DeviceOpt,
    HostOpt,
    JsonOpt,
    ProfilesOpt,
    Progress,
    TrustOpt,
    delegate_options,
    err,
    out,
    print_json,
    target,
)
from edgeq.errors import UserInputError
from edgeq.runner.runtimes import CHOICES as RUNTIME_CHOICES
from edgeq.spec import DELEGATES, build_spec

# option name -> (type, default, help). None means "not given": the profile's value applies.
_OPTIONS: dict[str, tuple[Any, Any, str]] = {
    "runs": (int | None, None, "Timed runs, at least (default: the device profile's, else 100)."),
    "warmup": (int | None, None, "Untimed warm-up runs first (default: the profile's, else 10)."),
    "min_seconds": (float | None, None, "Keep timing until this many seconds have passed, too."),
    "threads": (int | None, None, "Interpreter threads (default: the profile's, else 1)."),
    "runtime": (str | None, None, "Runtime: " + ", ".join(RUNTIME_CHOICES) + " (default: the profile's)."),
    "delegate": (
        str | None,
        None,
        "Where the ops run: " + ", ".join(DELEGATES) + " (default: the profile's).",
    ),
    "delegate_option": (list[str] | None, None, "KEY=VALUE delegate setting, repeatable (e.g. device=NPU)."),
    "min_delegate_coverage": (
        str | None,
        None,
        "Fail (exit 4) unless this share of ops runs on the delegate: " "'all' or a fraction.",
    ),
    "timeout": (float | None, None, "Seconds the device run may take (default: the profile's, else 600)."),
    "samples": (int | None, None, "Raw latency samples kept in the result, at most (default 10000)."),
    "power": (bool, False, "Measure power and energy per inference with the device's sensor."),
    "power_source": (
        str | None,
        None,
        "Use this power source instead of the profile's (ina2xx, ina3221, "
        "jetson-iio, rpi5-pmic, rapl, external, auto); implies --power.",
    ),
    "power_config": (
        str | None,
        None,
        "The whole power config as JSON (e.g. an external meter command); " "implies --power.",
    ),
    "power_idle": (float | None, None, "Idle baseline before the run, seconds (default 2)."),
    "power_rate": (float | None, None, "Power sampling rate, Hz (default 100, never above the sensor's)."),
    "thermal": (bool | None, None, "Record temperatures, clocks and throttling (on with --power)."),
    "set_governor": (str | None, None, "Set this cpufreq governor for the run (the old one is restored)."),
    "cool_down_below": (float | None, None, "Wait until every thermal zone is below this many °C first."),
    "sysfs_root": (str | None, None, "Read sensors under this root instead of /sys."),
    "vcgencmd": (str | None, None, "The vcgencmd program to use (Raspberry Pi)."),
}
_FLAGS = {"thermal": "--thermal/--no-thermal", "power": "--power"}
# options that are plain MeasureSpec settings: option -> setting
_SETTING = {
    "runs": "runs",
    "warmup": "warmup",
    "min_seconds": "min_seconds",
    "threads": "threads",
    "runtime": "runtime",
    "delegate": "delegate",
    "timeout": "timeout_s",
    "samples": "return_samples",
    "sysfs_root": "sysfs_root",
    "vcgencmd": "vcgencmd",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parameter(name: str) -> inspect.Parameter:
    kind, default, help_text = _OPTIONS[name]
    decls = (_FLAGS[name],) if name in _FLAGS else (_flag(name),)
    option = typer.Option(*decls, help=help_text, rich_help_panel="Measurement")
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[kind, option]
    )


def _power(o: dict[str, Any]) -> bool | dict[str, Any] | None:
    cfg: dict[str, Any] | None = None
    if o["power_config"] is not None:
        try:
            cfg = json.loads(o["power_config"])
        except ValueError as exc:
            raise UserInputError(
                f"--power-config is not JSON: {exc}", 'pass e.g. --power-config \'{"source": "ina2xx"}\''
            ) from None
        if not isinstance(cfg, dict):
            raise UserInputError("--power-config must be a JSON object", 'pass e.g. \'{"source": "ina2xx"}\'')
    if o["power_source"] is not None:
        cfg = {**(cfg or {}), "source": o["power_source"]}
    extra = {k: v for k, v in (("idle_s", o["power_idle"]), ("rate_hz", o["power_rate"])) if v is not None}
    if cfg is None and not o["power"]:
        if extra:
            raise UserInputError("--power-idle and --power-rate need --power", "add --power")
        return None
    return {**(cfg or {}), **extra}


def _thermal(o: dict[str, Any]) -> bool | dict[str, Any] | None:
    extra = {
        k: v
        for k, v in (("set_governor", o["set_governor"]), ("cool_down_below_c", o["cool_down_below"]))
        if v is not None
    }
    if o["thermal"] is False:
        if extra:
            raise UserInputError(
                "--set-governor and --cool-down-below need thermal recording", "drop --no-thermal"
            )
        return False
    return extra or o["thermal"]


def settings_from_options(o: dict[str, Any]) -> dict[str, Any]:
    """The MeasureSpec settings the command line gives; each value checked here, named by its flag."""
    settings: dict[str, Any] = {s: o[name] for name, s in _SETTING.items() if o[name] is not None}
    if o["delegate_option"]:
        settings["delegate_options"] = delegate_options(o["delegate_option"])
    if o["min_delegate_coverage"] is not None:
        from edgeq.placement import parse_min_coverage

        settings["min_delegate_coverage"] = parse_min_coverage(
            o["min_delegate_coverage"], "--min-delegate-coverage"
        )
    build_spec(settings, "command line", {s: _flag(n) for n, s in _SETTING.items()})
    power = _power(o)
    if power is not None:
        settings["power"] = power
    thermal = _thermal(o)
    if thermal is not None:
        settings["thermal"] = thermal
    return settings


def measure_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every measurement option; it receives them as one ``measure`` mapping."""
    sig = inspect.signature(func, eval_str=True)
    params = [p for p in sig.parameters.values() if p.name != "measure"]
    added = [_parameter(name) for name in _OPTIONS]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in _OPTIONS}
        return func(*args, measure=settings_from_options(given), **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[*params, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*params, *added]}
    return wrapper


# ------------------------------------------------------------------------------------------------
# Commands


def profile(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    test_data: Annotated[
        Path | None,
        typer.Option(
            help="Test data for on-device accuracy: 'digits', a .npz (x, y) or an image folder, taken "
            "through the model's preprocessing; the model's own dataset gives its test split only."
        ),
    ] = None,
    save_outputs: Annotated[
        Path | None, typer.Option(help="Save the raw outputs on the test data as .npy.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the power-over-time plot (PNG) here.")] = None,
    as_json: JsonOpt = False,
    *,
    measure: dict[str, Any],
) -> None:
    """Run the on-device runner: latency distribution, init time, memory (and accuracy with test data);
    with --power: power and energy per inference, temperatures and throttling."""
    td = None if test_data is None else str(test_data)
    progress = Progress(quiet=as_json)
    try:
        res = api.profile(
            model,
            target(device, profiles, host, trust_new_host),
            measure=measure,
            test_data=td,
            save_outputs=save_outputs,
            on_event=progress,
        )
    finally:
        progress.close()
    if plot is not None:
        from edgeq.report.plot import plot_power

        if plot_power(res, plot) is None:
            why = (
                f"power was not measured: {res.power.reason}"
                if res.power is not None and res.power.reason
                else "power was not measured (add --power)"
                if res.power is None
                else "the sensor gave no usable trace"
            )
            err.print(f"[yellow]warning:[/] no power plot written to {plot}: {why}", soft_wrap=True)
    if as_json:
        print_json(res)
        return
    render_result(res)


def render_result(res: api.Result) -> None:
    lat = res.latency_us
    dev = res.device
    out.print(
        f"{dev.name} ({dev.arch}, {dev.runtime} {dev.runtime_version}): "
        f"init {res.init_ms:.2f} ms, peak RSS {res.peak_rss_kb} kB"
    )
    out.print(
        "latency µs: "
        + "  ".join(f"{k} {getattr(lat, k):.1f}" for k in ("mean", "std", "min", "p50", "p90", "p99", "max"))
        + f"  (n={lat.n})"
    )
    if res.execution.placement is not None:
        out.print(f"placement: {res.execution.placement.summary}")
    if res.accuracy is not None:
        out.print(f"on-device accuracy: {res.accuracy.top1:.4f} (n={res.accuracy.n})")
    pw = res.power
    if pw is not None and pw.available and pw.power_mw:
        mw = pw.power_mw
        out.print(
            f"power: idle {mw['idle']:.0f} mW, active {mw['active_mean']:.0f} mW (p95 {mw['active_p95']:.0f}); "
            f"energy {pw.energy_mj_per_inference:.4g} ± {pw.energy_mj_per_inference_sigma:.2g} mJ/inference"
        )
    for zone in (res.thermal or {}).get("zones") or []:
        out.print(f"thermal {zone.get('type')}: {zone.get('before_c')} → max {zone.get('max_c')} °C")


def deploy(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a model and the runner to a device (verified by sha256; what is already there is not resent)."""
    progress = Progress(quiet=as_json)
    try:
        res = api.deploy(model, target(device, profiles, host, trust_new_host), on_event=progress)
    finally:
        progress.close()
    if as_json:
        print_json(res)
        return
    out.print(f"model:  {res['model']['remote_path']}  ({res['model']['bytes_sent']} bytes sent)")
    out.print(f"runner: {res['runner']['remote_path']}  ({res['runner']['bytes_sent']} bytes sent)")
    if "labels" in res:
        out.print(f"labels: {res['labels']['remote_path']}  ({res['labels']['bytes_sent']} bytes sent)")
    out.print(f"bytes_sent: {res['bytes_sent']}  in {res['seconds']} s")
