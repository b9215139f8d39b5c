"""``edgeq train / distill / qat / export / inspect``: parse, call :mod:`edgeq.api`, render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeq import api
from edgeq.cli.app import (
    AlphaOpt,
    DataOpt,
    DelegateOptionOpt,
    ImageSizeOpt,
    JsonOpt,
    Progress,
    SeedOpt,
    TemperatureOpt,
    data_options,
    delegate_options,
    emit,
    out,
    print_json,
    table,
)
from edgeq.errors import UserInputError


def train(
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the model (.keras).")] = Path(
        "teacher.keras"
    ),
    arch: Annotated[str, typer.Option(help="Built-in architecture: teacher or student.")] = "teacher",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Train a built-in float model on a dataset."""
    progress = Progress()
    res = api.train(
        out_path, data=data_options(data, image_size, seed), arch=arch, epochs=epochs, on_event=progress
    )
    progress.close()
    emit(res, as_json)


def distill(
    teacher: Annotated[Path, typer.Argument(help="The teacher (.keras/.h5).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the student (.keras).")] = Path(
        "student.keras"
    ),
    epochs: Annotated[int, typer.Option(help="Distillation epochs.")] = 15,
    temperature: TemperatureOpt = 4.0,
    alpha: AlphaOpt = 0.3,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Distill a teacher into the built-in student (soft targets at a temperature + hard labels)."""
    progress = Progress()
    res = api.distill(
        teacher,
        out_path,
        data=data_options(data, image_size, seed),
        epochs=epochs,
        temperature=temperature,
        alpha=alpha,
        on_event=progress,
    )
    progress.close()
    emit(res, as_json)


def qat(
    model: Annotated[Path, typer.Argument(help="The float model (.keras/.h5).")],
    out_path: Annotated[Path, typer.Option("--out", help="Where to save the QAT model (.h5).")] = Path(
        "student_qat.h5"
    ),
    epochs: Annotated[int, typer.Option(help="Quantization-aware training epochs.")] = 4,
    teacher: Annotated[Path | None, typer.Option(help="Keep distilling from this teacher.")] = None,
    temperature: TemperatureOpt = 4.0,
    alpha: AlphaOpt = 0.3,
    data: DataOpt = "digits",
    image_size: ImageSizeOpt = "32x32",
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Quantization-aware training with TensorFlow Model Optimization."""
    progress = Progress()
    res = api.qat(
        model,
        out_path,
        data=data_options(data, image_size, seed),
        epochs=epochs,
        teacher=teacher,
        temperature=temperature,
        alpha=alpha,
        on_event=progress,
    )
    progress.close()
    emit(res, as_json)


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
    progress = Progress()
    res = api.export(model, out_path, data=data_options(data, image_size, seed), on_event=progress)
    progress.close()
    emit(res, as_json)


def inspect(
    model: Annotated[Path, typer.Argument(help="A .tflite model.")],
    require_int8: Annotated[
        bool, typer.Option("--require-int8", help="Exit 4 unless the model is int8 end to end.")
    ] = False,
    debug_quant: Annotated[
        bool, typer.Option("--debug-quant", help="Per-layer quantization error against the float source.")
    ] = False,
    delegate: Annotated[
        str | None,
        typer.Option(
            help="Say per op whether it can run on this delegate: none, xnnpack, edgetpu, openvino."
        ),
    ] = None,
    delegate_option: DelegateOptionOpt = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="With --debug-quant: the samples ('digits', a .npz or an image folder) instead of the "
            "dataset the sidecar records.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ops, tensor dtypes, quantization parameters, size and the full-int8 verdict of a model;
    with --delegate, which ops can run on it and why the others fall back to the CPU."""
    if data is not None and not debug_quant:
        raise UserInputError("--data is used by --debug-quant only", "add --debug-quant or drop --data")
    info = api.inspect(
        model,
        debug_quant=debug_quant,
        delegate=delegate,
        delegate_options=delegate_options(delegate_option),
        **({"data": data} if data is not None else {}),
    )
    if as_json:
        print_json(info)
    else:
        _render_inspect(info)
        if "coverage" in info:
            render_coverage(info["coverage"])
    if require_int8 and not info["full_int8"]:
        raise api.GateFailed(
            f"{model.name} is not int8 end to end: {info['violations'][0]}",
            "export it with 'edgeq export' (full-integer quantization)",
        )


def render_coverage(cov: dict[str, Any]) -> None:
    t = table(title=f"placement on {cov['delegate']} ({cov['source']})")
    for col in ("#", "op", "placement", "reason"):
        t.add_column(col)
    for op in cov["ops"]:
        style = "green" if op["placement"] == "delegate" else "yellow"
        t.add_row(str(op["index"]), op["op"], f"[{style}]{op['placement']}[/]", op["reason"])
    out.print(t)
    for note in cov.get("notes") or []:
        out.print(f"[dim]note:[/] {note}", soft_wrap=True)
    out.print(f"[bold]{cov['summary']}[/]")


def _render_inspect(info: dict[str, Any]) -> None:
    verdict = "[green]full int8[/]" if info["full_int8"] else "[red]NOT full int8[/]"
    out.print(
        f"[bold]{info['path']}[/]  {info['size_bytes']} bytes  sha256 {info['sha256'][:16]}…  {verdict}"
    )
    ops = table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, n in info["op_counts"].items():
        ops.add_row(name, str(n))
    out.print(ops)
    if info.get("custom_ops"):
        c = table(title="custom ops (docs/custom_ops.md)")
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
    t = table(title="tensors")
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
        _render_quant_debug(info)


def _render_quant_debug(info: dict[str, Any]) -> None:
    """Per layer: the file's error against its float source in quantization steps (~0.29 is rounding
    alone), and the run's other quantization side by side."""
    models = info.get("quant_debug_models") or []
    main = models[0] if models else {}
    others = [m["role"] for m in models[1:]]
    src = (main.get("source") or {}).get("file", "?")
    d = table(
        title=f"per-layer error of {main.get('file', 'the model')} ({main.get('quantization', '?')}) against {src}"
    )
    for col in (
        "layer",
        "op",
        "rmse (steps)",
        "rmse",
        "mean error",
        "saturated",
        *(f"{r} rmse (steps)" for r in others),
    ):
        d.add_column(col)

    def num(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for row in info["quant_debug"]:
        d.add_row(
            row.get("layer", ""),
            row.get("op", ""),
            num(row.get("rmse_per_scale"), ".3f"),
            num(row.get("rmse"), ".3g"),
            num(row.get("mean_error"), ".2g"),
            num(row.get("saturated_fraction"), ".1%"),
            *(num(row.get(f"{r}_rmse_per_scale"), ".3f") for r in others),
        )
    out.print(d)
    data = info.get("quant_debug_data") or {}
    out.print(f"samples: {data.get('description', '')}", soft_wrap=True)
    for m in models:
        o = m.get("output") or {}
        acc = (
            f"; accuracy int8 {o['int8_accuracy']:.3f} vs source {o['source_accuracy']:.3f}"
            if "int8_accuracy" in o
            else ""
        )
        agree = (
            f"top-1 agrees with {(m.get('source') or {}).get('file')} on {o['top1_agreement']:.1%}"
            if "top1_agreement" in o
            else ""
        )
        out.print(f"{m['file']} ({m['quantization']}): {agree}{acc}", soft_wrap=True)
        for skip in m.get("not_compared") or []:
            out.print(
                f"  [dim]not compared:[/] tensor {skip['index']} ({skip['op']}): {skip['reason']}",
                soft_wrap=True,
            )
    for w in data.get("warnings") or []:
        out.print(f"[yellow]warning:[/] {w}", soft_wrap=True)


def compile(
    model: Annotated[Path, typer.Argument(help="A full-int8 .tflite model.")],
    delegate: Annotated[
        str, typer.Option(help="Compile for: edgetpu (edgetpu_compiler) or openvino (IR for an NCS2).")
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the compiled model and the compiler's log.")
    ] = Path("."),
    delegate_option: DelegateOptionOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds the compiler may take.")] = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Compile a model for a delegate; say per op what the compiler mapped and where it disagrees
    with the offline analysis (edgeq inspect --delegate)."""
    res = api.compile(
        model,
        out_dir,
        delegate=delegate,
        delegate_options=delegate_options(delegate_option),
        timeout_s=timeout,
    )
    if as_json:
        print_json(res)
        return
    out.print(f"compiled: {res['model']}" + (f"  ({res['compiler']})" if res.get("compiler") else ""))
    if res.get("coverage"):
        render_coverage(res["coverage"])
    for d in res.get("disagreements") or []:
        out.print(f"[yellow]offline analysis and compiler disagree:[/] {d}", soft_wrap=True)
