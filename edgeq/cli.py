"""The ``edgeq`` command line: parse arguments, call :mod:`edgeq.api`, render. No logic of its own."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgeq import api
from edgeq.devices.cli import HostOpt, ProfilesOpt, TrustOpt
from edgeq.devices.cli import app as devices_app
from edgeq.devices.session import DeviceTarget
from edgeq.errors import (
    EXIT_BAD_INPUT,
    EXIT_GATE,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EdgeqError,
    UserInputError,
)

app = typer.Typer(
    name="edgeq",
    help="From a Keras model to full-int8 numbers measured on a real edge device.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

app.add_typer(devices_app, name="devices", help="Device profiles: list, show, check, set up.")


# ------------------------------------------------------------------------------------------------
# Shared options

DataOpt = Annotated[
    str, typer.Option("--data", help="'digits' (bundled), a .npz file (x, y[, labels]) or an image folder.")
]
ImageSizeOpt = Annotated[str, typer.Option(help="HxW that image-folder images are resized to.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the split and of training.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]
DeviceOpt = Annotated[str, typer.Option(help="Device profile name or path to a .toml profile.")]


def _target(device: str, profiles: list[Path] | None, host: str | None, trust: bool) -> DeviceTarget:
    return DeviceTarget(name=device, profiles=tuple(profiles or ()), host=host, trust_new_host=trust)


def _data(data: str, image_size: str, seed: int) -> api.DataOptions:
    try:
        h, w = (int(v) for v in image_size.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
    except ValueError:
        raise UserInputError(
            f"--image-size {image_size!r} is not HxW", "pass e.g. --image-size 32x32"
        ) from None
    return api.DataOptions(source=None if data == "digits" else data, image_size=(h, w), seed=seed)


class _Progress:
    """Stage lines on stderr; epochs update one transient status line."""

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
                f"[yellow]warning:[/] {e.get('message')}" + (f" ({e['hint']})" if e.get("hint") else "")
            )
        elif "message" in e and "stage" in e:
            elapsed = f"[dim]{e['elapsed_s']:6.1f}s[/] " if "elapsed_s" in e else ""
            err.print(f"{elapsed}[bold]{e['stage']}[/]: {e['message']}")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None

    def close(self) -> None:
        self._stop()


def _emit(obj: Any, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(obj, default=str))
    else:
        for k, v in obj.items():
            out.print(f"{k}: {v}")


# ------------------------------------------------------------------------------------------------
# Commands


@app.command()
def pipeline(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for models, model.tflite and reports.")
    ] = Path("edgeq-out"),
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    teacher: Annotated[
        Path | None, typer.Option(help="Use this .keras/.h5 teacher instead of training one.")
    ] = None,
    teacher_epochs: int = 10,
    student_epochs: int = 15,
    qat_epochs: int = 4,
    temperature: Annotated[float, typer.Option(help="Distillation temperature.")] = 4.0,
    alpha: Annotated[float, typer.Option(help="Weight of the hard-label loss (1 − alpha: teacher).")] = 0.3,
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    runs: int = 200,
    warmup: int = 20,
    threads: int = 1,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Fail (exit 4) when int8 accuracy is more points below the float student.")
    ] = 1.0,
    power: Annotated[
        bool, typer.Option("--power", help="Measure power and energy with the device profile's power source.")
    ] = False,
    weights: Annotated[
        str,
        typer.Option(
            help="int8, or ternary: a ternary-weight student exported with EDGEQ_TERNARY_* custom ops "
            "(2 bits per weight; see docs/custom_ops.md)."
        ),
    ] = "int8",
    as_json: JsonOpt = False,
) -> None:
    """train → distill → QAT → export (+ PTQ baseline) → profile on a device; report under --out."""
    opts = api.PipelineOptions(
        data=_data(data, image_size, seed),
        teacher=teacher,
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        qat_epochs=qat_epochs,
        temperature=temperature,
        alpha=alpha,
        device=_target(device, profiles, host, trust_new_host),
        runs=runs,
        warmup=warmup,
        threads=threads,
        max_accuracy_drop=max_accuracy_drop,
        power=power,
        weights=weights,
    )
    progress = _Progress()
    try:
        report = api.pipeline(out_dir, opts, on_event=progress)
    except EdgeqError as exc:
        progress.close()
        if exc.exit_code == EXIT_GATE and (out_dir / "report.json").exists():
            _pipeline_summary(api.load_report(out_dir / "report.json"), as_json)
        raise
    progress.close()
    _pipeline_summary(report, as_json)


def _pipeline_summary(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    acc = report["accuracy"]
    t = Table(title="edgeq pipeline", show_header=True)
    t.add_column("model")
    t.add_column("test accuracy", justify="right")
    for key in ("teacher_float", "student_float", "student_int8_qat", "student_int8_ptq"):
        t.add_row(key, f"{acc[key]:.4f}")
    out.print(t)
    prof = report.get("profile") or {}
    lat = prof.get("latency_us") or {}
    if lat:
        dev = prof.get("device", {})
        out.print(
            f"on {dev.get('name')} ({dev.get('arch')}, {dev.get('runtime')} {dev.get('runtime_version')}): "
            f"p50 {lat['p50']:.1f} µs, p99 {lat['p99']:.1f} µs, init {prof.get('init_ms', 0):.1f} ms"
        )
    size = report["size_bytes"]
    out.print(
        f"int8 {size['student_int8']} B vs float {size['student_float_tflite']} B "
        f"({size['student_int8'] / size['student_float_tflite']:.2f}×); wall {report['wall_s']} s"
    )


@app.command()
def train(
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the model (.keras).")] = Path(
        "teacher.keras"
    ),
    arch: Annotated[str, typer.Option(help="Built-in architecture: teacher or student.")] = "teacher",
    epochs: int = 10,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train a built-in float model on a dataset."""
    progress = _Progress()
    res = api.train(out_path, data=_data(data, image_size, seed), arch=arch, epochs=epochs, on_event=progress)
    progress.close()
    _emit(res, as_json)


@app.command()
def distill(
    teacher: Annotated[Path, typer.Argument(help="The teacher (.keras/.h5).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the student (.keras).")] = Path(
        "student.keras"
    ),
    epochs: int = 15,
    temperature: float = 4.0,
    alpha: float = 0.3,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Distill a teacher into the built-in student (soft targets at a temperature + hard labels)."""
    progress = _Progress()
    res = api.distill(
        teacher,
        out_path,
        data=_data(data, image_size, seed),
        epochs=epochs,
        temperature=temperature,
        alpha=alpha,
        on_event=progress,
    )
    progress.close()
    _emit(res, as_json)


@app.command()
def qat(
    model: Annotated[Path, typer.Argument(help="The float model (.keras/.h5).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the QAT model (.h5).")] = Path(
        "student_qat.h5"
    ),
    epochs: int = 4,
    teacher: Annotated[Path | None, typer.Option(help="Keep distilling from this teacher.")] = None,
    temperature: float = 4.0,
    alpha: float = 0.3,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Quantization-aware training with TensorFlow Model Optimization."""
    progress = _Progress()
    res = api.qat(
        model,
        out_path,
        data=_data(data, image_size, seed),
        epochs=epochs,
        teacher=teacher,
        temperature=temperature,
        alpha=alpha,
        on_event=progress,
    )
    progress.close()
    _emit(res, as_json)


@app.command()
def export(
    model: Annotated[Path, typer.Argument(help="A QAT model (.h5 from 'edgeq qat') or a float model (PTQ).")],
    out_path: Annotated[Path, typer.Option("--out", help="The .tflite to write (+ its .edgeq.json).")] = Path(
        "model.tflite"
    ),
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Export a full-integer TFLite model (int8 input, output and every activation) and its sidecar."""
    progress = _Progress()
    res = api.export(model, out_path, data=_data(data, image_size, seed), on_event=progress)
    progress.close()
    _emit(res, as_json)


@app.command()
def inspect(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    require_int8: Annotated[bool, typer.Option(help="Exit 4 unless the model is int8 end to end.")] = False,
    debug_quant: Annotated[
        bool, typer.Option(help="Per-layer quantization error (QuantizationDebugger).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Ops, tensor dtypes, quantization parameters, size and the full-int8 verdict of a model."""
    info = api.inspect(model, debug_quant=debug_quant)
    if as_json:
        out.print_json(json.dumps(info, default=str))
    else:
        _render_inspect(info)
    if require_int8 and not info["full_int8"]:
        raise api.GateFailed(
            f"{model.name} is not int8 end to end: {info['violations'][0]}",
            "export it with 'edgeq export' (full-integer quantization)",
        )


def _render_inspect(info: dict[str, Any]) -> None:
    verdict = "[green]full int8[/]" if info["full_int8"] else "[red]NOT full int8[/]"
    out.print(
        f"[bold]{info['path']}[/]  {info['size_bytes']} bytes  sha256 {info['sha256'][:16]}…  {verdict}"
    )
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, n in info["op_counts"].items():
        ops.add_row(name, str(n))
    out.print(ops)
    if info.get("custom_ops"):
        c = Table(title="custom ops (docs/custom_ops.md)")
        for col in ("#", "op", "weights", "packed bytes", "bits/weight", "nonzero", "options"):
            c.add_column(col)
        for op in info["custom_ops"]:
            o = op["options"]
            geo = f"k{o['kernel_h']}x{o['kernel_w']} s{o['stride_h']}x{o['stride_w']} " + (
                "same" if o["padding"] else "valid"
            )
            opts = (
                f"in {o['in_depth']} out {o['out_depth']} zp {o['in_zp']}/{o['out_zp']} "
                f"clamp [{o['act_min']}, {o['act_max']}]" + (f" {geo}" if o["kind"] == 1 else "")
            )
            c.add_row(
                str(op["index"]),
                op["op"],
                "x".join(map(str, op["weight_shape"])),
                str(op["packed_weight_bytes"]),
                f"{op['bits_per_weight']:g}",
                f"{op['nonzero_fraction']:.0%}",
                opts,
            )
        out.print(c)
    t = Table(title="tensors")
    for col in ("#", "name", "role", "dtype", "shape", "scale", "zero point"):
        t.add_column(col)
    for ten in info["tensors"]:
        q = ten.get("quantization") or {}
        scales = q.get("scale", [])
        zps = q.get("zero_point", [])
        scale = f"{scales[0]:.6g}" if len(scales) == 1 else (f"{len(scales)} per-channel" if scales else "")
        zp = str(zps[0]) if len(zps) == 1 else ("…" if zps else "")
        t.add_row(
            str(ten["index"]), ten["name"][:40], ten["role"], ten["dtype"], str(ten["shape"]), scale, zp
        )
    out.print(t)
    for v in info["violations"]:
        out.print(f"[red]✗[/] {v}")
    if "quant_debug" in info:
        d = Table(title="per-layer quantization error (PTQ, QuantizationDebugger)")
        for col in ("tensor", "rmse/scale", "mean error", "mse"):
            d.add_column(col)
        for row in info["quant_debug"]:
            d.add_row(
                row["tensor"][:50],
                f"{row.get('rmse_per_scale', float('nan')):.3f}",
                f"{row.get('mean_error', float('nan')):.3g}",
                f"{row.get('mean_squared_error', float('nan')):.3g}",
            )
        out.print(d)


@app.command()
def profile(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    runs: Annotated[int | None, typer.Option(help="Measured runs (default: the profile's).")] = None,
    warmup: Annotated[int | None, typer.Option(help="Warm-up runs (default: the profile's).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="Interpreter threads (default: the profile's, else 1).")
    ] = None,
    min_seconds: Annotated[float | None, typer.Option(help="Measure for at least this long.")] = None,
    runtime: Annotated[
        str | None,
        typer.Option(help="auto, ai-edge-litert, tflite-runtime or tensorflow (default: the profile's)."),
    ] = None,
    test_data: Annotated[
        Path | None, typer.Option(help=".npz with x (float) and y to measure on-device accuracy.")
    ] = None,
    save_outputs: Annotated[
        Path | None, typer.Option(help="Save the raw outputs on test_data as .npy.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds before the device run is stopped.")] = None,
    power: Annotated[
        bool, typer.Option("--power", help="Measure power and energy per inference (the profile's sensor).")
    ] = False,
    power_source: Annotated[
        str | None, typer.Option(help="Override the profile's power source (ina2xx, ina3221, rapl, ...).")
    ] = None,
    power_config: Annotated[
        str | None, typer.Option(help="Full power config as JSON (e.g. an external meter command).")
    ] = None,
    power_idle: Annotated[float | None, typer.Option(help="Idle baseline before the run, seconds.")] = None,
    power_rate: Annotated[float | None, typer.Option(help="Power sampling rate, Hz (default 100).")] = None,
    thermal: Annotated[
        bool | None, typer.Option("--thermal/--no-thermal", help="Record temperatures, clocks, throttling.")
    ] = None,
    set_governor: Annotated[
        str | None, typer.Option(help="Set this cpufreq governor for the run (the old one is restored).")
    ] = None,
    cool_down_below: Annotated[
        float | None, typer.Option(help="Wait until every zone is below this many °C before measuring.")
    ] = None,
    sysfs_root: Annotated[
        str | None, typer.Option(help="Read sensors under this root instead of /sys.")
    ] = None,
    vcgencmd: Annotated[str | None, typer.Option(help="The vcgencmd program to use.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the power-over-time plot (PNG) here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the on-device runner: latency distribution, init time, memory (and accuracy with test data),
    with --power: power and energy per inference, temperatures and throttling."""
    td = None
    if test_data is not None:
        import numpy as np

        ds = api.DataOptions(source=str(test_data)).load()
        # The whole file is the test data: every split goes to the device.
        td = (
            np.concatenate([ds.x_train, ds.x_val, ds.x_test]),
            np.concatenate([ds.y_train, ds.y_val, ds.y_test]),
        )
    power_arg: bool | str | dict[str, Any] = power_source or power
    if power_config is not None:
        try:
            power_arg = json.loads(power_config)
        except ValueError as exc:
            raise UserInputError(
                f"--power-config is not JSON: {exc}", 'pass e.g. \'{"source": "ina2xx"}\''
            ) from None
        if not isinstance(power_arg, dict):
            raise UserInputError("--power-config must be a JSON object", 'pass e.g. \'{"source": "ina2xx"}\'')
    extra: dict[str, Any] = {}
    if power_idle is not None:
        extra["power_idle_s"] = power_idle
    if power_rate is not None:
        extra["power_rate_hz"] = power_rate
    progress = _Progress(quiet=as_json)
    try:
        res = api.profile(
            model,
            _target(device, profiles, host, trust_new_host),
            power=power_arg,
            thermal=thermal,
            set_governor=set_governor,
            cool_down_below_c=cool_down_below,
            sysfs_root=sysfs_root,
            vcgencmd=vcgencmd,
            runs=runs,
            warmup=warmup,
            threads=threads,
            min_seconds=min_seconds,
            runtime=runtime,
            test_data=td,
            save_outputs=save_outputs,
            timeout=timeout,
            on_event=progress,
            **extra,
        )
    finally:
        progress.close()
    if plot is not None:
        from edgeq.report.plot import plot_power

        if plot_power(res, plot) is None:
            err.print("no power trace to plot (measure with --power)")
    if as_json:
        out.print_json(json.dumps(res, default=str))
        return
    lat = res["latency_us"]
    dev = res["device"]
    out.print(
        f"{dev['name']} ({dev['arch']}, {dev['runtime']} {dev['runtime_version']}): "
        f"init {res['init_ms']:.2f} ms, peak RSS {res['peak_rss_kb']} kB"
    )
    out.print(
        "latency µs: "
        + "  ".join(f"{k} {lat[k]:.1f}" for k in ("mean", "std", "min", "p50", "p90", "p99", "max"))
        + f"  (n={lat['n']})"
    )
    if "accuracy" in res:
        out.print(f"on-device accuracy: {res['accuracy']['top1']:.4f} (n={res['accuracy']['n']})")
    pw = res.get("power") or {}
    if pw.get("available"):
        mw = pw["power_mw"]
        out.print(
            f"power: idle {mw['idle']:.0f} mW, active {mw['active_mean']:.0f} mW (p95 {mw['active_p95']:.0f}); "
            f"energy {pw['energy_mj_per_inference']:.4g} ± {pw['energy_mj_per_inference_sigma']:.2g} mJ/inference"
        )
    for zone in (res.get("thermal") or {}).get("zones") or []:
        out.print(f"thermal {zone.get('type')}: {zone.get('before_c')} → max {zone.get('max_c')} °C")


@app.command()
def deploy(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Copy a model and the runner to a device (verified by sha256; what is already there is not resent)."""
    progress = _Progress(quiet=as_json)
    try:
        res = api.deploy(model, _target(device, profiles, host, trust_new_host), on_event=progress)
    finally:
        progress.close()
    if as_json:
        out.print_json(json.dumps(res))
        return
    out.print(f"model:  {res['model']['remote_path']}  ({res['model']['bytes_sent']} bytes sent)")
    out.print(f"runner: {res['runner']['remote_path']}  ({res['runner']['bytes_sent']} bytes sent)")
    out.print(f"bytes_sent: {res['bytes_sent']}  in {res['seconds']} s")


# ------------------------------------------------------------------------------------------------
# Entry point


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map errors to one line of what is wrong, one of what to do, and an exit code."""
    try:
        # Typer prints usage errors itself (exit 2) and turns Ctrl-C into exit 130.
        app(args=argv, prog_name="edgeq", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_BAD_INPUT)
    except EdgeqError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
        if exc.hint:
            err.print(f"[bold]what to do:[/] {exc.hint}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        err.print(
            "[bold red]internal error:[/] this is a bug in edgeq; please report it with the traceback above"
        )
        return EXIT_INTERNAL
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
