"""``edgeq pipeline``: data → float teacher → student → QAT → full-int8 → measured on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeq import api
from edgeq.cli.app import (
    DataOpt,
    DeviceOpt,
    HostOpt,
    ImageSizeOpt,
    JsonOpt,
    ProfilesOpt,
    Progress,
    SeedOpt,
    TrustOpt,
    data_options,
    out,
    print_json,
    table,
    target,
)
from edgeq.errors import EXIT_GATE, EdgeqError

_TRAINING = "Training"


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
    teacher_epochs: Annotated[
        int, typer.Option(help="Epochs of training the float teacher.", rich_help_panel=_TRAINING)
    ] = 10,
    student_epochs: Annotated[
        int, typer.Option(help="Epochs of distilling the student.", rich_help_panel=_TRAINING)
    ] = 15,
    qat_epochs: Annotated[
        int, typer.Option(help="Epochs of quantization-aware training.", rich_help_panel=_TRAINING)
    ] = 4,
    temperature: Annotated[
        float,
        typer.Option(
            help="Distillation temperature (softens the teacher's outputs).", rich_help_panel=_TRAINING
        ),
    ] = 4.0,
    alpha: Annotated[
        float,
        typer.Option(
            help="Weight of the hard-label loss (1 − alpha: the teacher's soft targets).",
            rich_help_panel=_TRAINING,
        ),
    ] = 0.3,
    device: DeviceOpt = "local",
    profiles: ProfilesOpt = None,
    host: HostOpt = None,
    trust_new_host: TrustOpt = False,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Fail (exit 4) when int8 accuracy is more points below the float student.")
    ] = 1.0,
    weights: Annotated[
        str,
        typer.Option(
            help="int8, or ternary: a ternary-weight student exported with EDGEQ_TERNARY_* custom ops "
            "(2 bits per weight; see docs/custom_ops.md)."
        ),
    ] = "int8",
    as_json: JsonOpt = False,
    *,
    measure: dict[str, Any],
) -> None:
    """train → distill → QAT → export (+ PTQ baseline) → profile on a device; report under --out."""
    opts = api.PipelineOptions(
        data=data_options(data, image_size, seed),
        teacher=teacher,
        teacher_epochs=teacher_epochs,
        student_epochs=student_epochs,
        qat_epochs=qat_epochs,
        temperature=temperature,
        alpha=alpha,
        device=target(device, profiles, host, trust_new_host),
        measure=measure,
        max_accuracy_drop=max_accuracy_drop,
        weights=weights,
    )
    progress = Progress(quiet=as_json)
    try:
        report = api.pipeline(out_dir, opts, on_event=progress)
    except EdgeqError as exc:
        progress.close()
        if exc.exit_code == EXIT_GATE and (out_dir / "report.json").exists():
            summary(api.Report.load(out_dir / "report.json"), as_json)
        raise
    progress.close()
    summary(report, as_json)


def summary(report: api.Report, as_json: bool) -> None:
    if as_json:
        print_json(report)
        return
    acc = report.accuracy
    t = table(title="edgeq pipeline", show_header=True)
    t.add_column("model")
    t.add_column("test accuracy", justify="right")
    for key in ("teacher_float", "student_float", "student_int8_qat", "student_int8_ptq"):
        t.add_row(key, f"{acc[key]:.4f}")
    out.print(t)
    prof = report.profile
    if prof is not None:
        dev, lat = prof.device, prof.latency_us
        out.print(
            f"on {dev.name} ({dev.arch}, {dev.runtime} {dev.runtime_version}): "
            f"p50 {lat.p50:.1f} µs, p99 {lat.p99:.1f} µs, init {prof.init_ms:.1f} ms"
        )
        if prof.execution.placement is not None:
            out.print(f"placement: {prof.execution.placement.summary}")
    size = report.size_bytes
    out.print(
        f"int8 {size['student_int8']} B vs float {size['student_float_tflite']} B "
        f"({size['student_int8'] / size['student_float_tflite']:.2f}×); wall {report.wall_s} s"
    )
