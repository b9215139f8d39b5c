"""The default pipeline: train → distill → QAT → export (+ PTQ baseline) → profile on a device → report.

Everything that can be checked is checked before the training starts: the data, the output
directory, the device profile and the measurement it asks for (one MeasureSpec, resolved from the
profile and the caller's settings exactly as ``edgeq profile`` resolves it).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq import tfenv
from edgeq.data import DataOptions
from edgeq.devices.connect import DeviceTarget, open_device
from edgeq.errors import DeviceError, EdgeqError, GateFailed, UserInputError
from edgeq.events import EventCallback, epoch_reporter
from edgeq.export import convert
from edgeq.export.sidecar import build_sidecar, versions, write_sidecar
from edgeq.files import OutputDir, atomic_write, write_json
from edgeq.placement import Coverage
from edgeq.result import Report, Result
from edgeq.spec import MeasureSpec

WEIGHTS = ("int8", "ternary")


@dataclass(frozen=True)
class PipelineOptions:
    data: DataOptions = field(default_factory=DataOptions)
    teacher: Path | None = None  # a user's .keras/.h5 teacher instead of training one
    teacher_epochs: int = 10
    student_epochs: int = 15
    qat_epochs: int = 4
    temperature: float = 4.0
    alpha: float = 0.3
    device: DeviceTarget = field(default_factory=DeviceTarget)
    # MeasureSpec settings on top of the device profile's (e.g. {"runs": 500, "power": True})
    measure: Mapping[str, Any] = field(default_factory=dict)
    max_accuracy_drop: float = 1.0  # points (percent) below the float student
    weights: str = "int8"  # "int8", or "ternary": 2-bit weights as EDGEQ_TERNARY_* custom ops


def accuracy_gate(float_acc: float, int8_acc: float, max_drop_points: float) -> dict[str, Any]:
    """The int8 model may lose at most ``max_drop_points`` percentage points against the float one."""
    drop = (float_acc - int8_acc) * 100.0
    return {
        "max_accuracy_drop_points": max_drop_points,
        "drop_points": round(drop, 3),
        "passed": drop <= max_drop_points + 1e-9,
    }


def coverage_gate(result: Result, spec: MeasureSpec) -> None:
    """``min_delegate_coverage``: stop with the gate exit code, naming the ops that fell back."""
    placement = result.execution.placement
    if spec.min_delegate_coverage is None or placement is None:
        return
    short = Coverage.from_dict(placement.model_dump()).shortfall(spec.min_delegate_coverage)
    if short is None:
        return
    raise GateFailed(
        short,
        "change those ops (edgeq inspect --delegate shows why each falls back), or lower min_delegate_coverage",
    )


def _ternary_export(qat_blob: bytes, student: Any) -> tuple[bytes, list[dict[str, Any]]]:
    """The int8 export of a ternary student with its ternary layers as EDGEQ_TERNARY_* custom ops.

    Every ternary layer must rewrite losslessly (its int8 weights are exactly ternary per channel).
    """
    from edgeq.ops import rewrite
    from edgeq.ops.layers import TERNARY_LAYERS

    expected = sum(isinstance(layer, TERNARY_LAYERS) for layer in student.layers)
    blob, done = rewrite.to_ternary_ops_lossless(qat_blob, expected=expected)
    return blob, [
        {
            "index": d.index,
            "op": d.op,
            "replaces": d.original,
            "weight_shape": list(d.weight_shape),
            "int8_weight_bytes": d.int8_weight_bytes,
            "packed_weight_bytes": d.packed_weight_bytes,
            "nonzero_fraction": round(d.nonzero_fraction, 4),
        }
        for d in done
    ]


# What the pipeline writes (a directory that holds these from a run before manifests is cleared of them).
OUTPUTS = (
    "teacher.keras",
    "student.keras",
    "student_qat.h5",
    "student_float.tflite",
    "model.tflite",
    "model.edgeq.json",
    "model_ptq.tflite",
    "model_ptq.edgeq.json",
    "model_int8_builtin.tflite",
    "power.png",
    "latency.png",
    "report.json",
    "report.md",
)


def _check_options(o: PipelineOptions) -> None:
    for name, n in (
        ("teacher_epochs", o.teacher_epochs),
        ("student_epochs", o.student_epochs),
        ("qat_epochs", o.qat_epochs),
    ):
        if n < 1:
            raise UserInputError(
                f"{name} must be at least 1, got {n}", f"pass --{name.replace('_', '-')} 1 or more"
            )
    if o.max_accuracy_drop < 0:
        raise UserInputError(f"--max-accuracy-drop must be ≥ 0, got {o.max_accuracy_drop}", "pass e.g. 1.0")
    if o.weights not in WEIGHTS:
        raise UserInputError(f"unknown --weights {o.weights!r}", f"use one of {', '.join(WEIGHTS)}")


def _for_delegate(
    od: OutputDir, model: Path, spec: MeasureSpec, stage: Any, warnings: list[dict[str, str]]
) -> tuple[Path, dict[str, Any] | None]:
    """For an accelerator: the offline coverage, then the compiler where there is one. Returns the
    model to deploy (the compiled one when it compiled) and what the report says about it."""
    from edgeq import delegates

    if spec.delegate in ("none", "xnnpack"):
        return model, None
    d = delegates.get(spec.delegate)
    cov = d.coverage(model, delegate_options=spec.delegate_options)
    stage("delegate", f"offline analysis: {cov.summary()}")
    info: dict[str, Any] = {"name": spec.delegate, "offline": cov.to_dict()}
    before = set(od.path.iterdir())
    try:
        compiled = d.compile(model, od.path, timeout_s=spec.timeout_s, delegate_options=spec.delegate_options)
    except UserInputError as exc:
        warnings.append(
            {
                "code": "delegate.not_compiled",
                "message": f"{exc.message}: model.tflite is deployed as it is, and ops the {spec.delegate} "
                "runtime cannot take run on the CPU",
                "hint": exc.hint,
            }
        )
        stage("delegate", f"not compiled: {exc.message}")
        return model, info
    for new in sorted(set(od.path.iterdir()) - before):
        od.file(new.name)
    info["compile"] = compiled.to_dict()
    if compiled.coverage is not None:
        stage("delegate", f"{compiled.compiler or 'compiler'}: {compiled.coverage.summary()}")
    return compiled.model, info


def run_pipeline(out: Path, o: PipelineOptions, on_event: EventCallback) -> Report:
    _check_options(o)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a directory", "pass a directory path")
    t0 = time.perf_counter()

    def stage(name: str, message: str) -> None:
        on_event({"stage": name, "message": message, "elapsed_s": round(time.perf_counter() - t0, 1)})

    # Every input is checked before anything is written: data, options, device, the output directory.
    from edgeq.models import check_training_fits, load_user_model

    stage("data", "loading data")
    # The image size against the architectures, and the memory training needs, before any image is read.
    archs = ("student_ternary" if o.weights == "ternary" else "student",)
    check_training_fits(archs if o.teacher is not None else ("teacher", *archs), o.data.peek())
    ds = o.data.load()
    user_teacher = None
    if o.teacher is not None:
        user_teacher = load_user_model(o.teacher, ds)
    device_profile = o.device.resolve()
    spec = device_profile.measure_spec(o.measure)
    with OutputDir(out, "edgeq pipeline", OUTPUTS) as od:
        stage("device", f"checking device {device_profile.name!r} before training")
        with open_device(o.device, device_profile) as dev:
            from edgeq import remote

            remote.preflight(dev, spec, on_event=lambda e: on_event({"stage": "device", **e}))
        return _run(od, o, ds, user_teacher, device_profile, spec, stage, on_event, t0)


def _run(
    od: OutputDir,
    o: PipelineOptions,
    ds: Any,
    user_teacher: Any,
    device_profile: Any,
    spec: MeasureSpec,
    stage: Any,
    on_event: EventCallback,
    t0: float,
) -> Report:
    from edgeq import remote
    from edgeq.export.tflite_model import custom_op_accuracy, describe, interpreter_accuracy
    from edgeq.models import build_model, count_params, save_model
    from edgeq.report.markdown import report_markdown
    from edgeq.report.plot import plot_latency, plot_power
    from edgeq.train import checks
    from edgeq.train.core import FitConfig, accuracy, quantize_aware, train_float
    from edgeq.train.core import distill as _distill

    ternary = o.weights == "ternary"
    fit = lambda epochs, lr=2e-3: FitConfig(epochs, learning_rate=lr, seed=o.data.seed)  # noqa: E731
    warnings = checks.announce(checks.dataset_warnings(ds, o.max_accuracy_drop), on_event)
    warnings += checks.announce(
        [checks.CheckWarning("data.loader", w, "see the sidecar's preprocessing") for w in ds.warnings],
        on_event,
    )
    tfenv.reproducible(o.data.seed)  # before the first model is built: its initial weights repeat too

    if user_teacher is None:
        teacher = build_model("teacher", ds.input_shape, ds.num_classes)
        stage("train", f"training teacher ({count_params(teacher)} parameters)")
        train_float(teacher, ds, fit(o.teacher_epochs), epoch_reporter("train", on_event))
    else:
        teacher = user_teacher
        stage("train", f"using teacher {o.teacher} ({count_params(teacher)} parameters)")
    save_model(teacher, od.file("teacher.keras"))

    student = build_model("student_ternary" if ternary else "student", ds.input_shape, ds.num_classes)
    warnings += checks.announce(checks.size_warnings(count_params(teacher), count_params(student)), on_event)
    stage("distill", f"distilling into student ({count_params(student)} parameters, {o.weights} weights)")
    kd = {"temperature": o.temperature, "alpha": o.alpha}
    _distill(student, teacher, ds, fit(o.student_epochs), on_epoch=epoch_reporter("distill", on_event), **kd)
    save_model(student, od.file("student.keras"))
    acc = {"teacher_float": accuracy(teacher, ds.x_test, ds.y_test)}
    acc["student_float"] = accuracy(student, ds.x_test, ds.y_test)

    stage("ptq", "post-training quantization baseline")
    float_blob = convert.to_float_tflite(student)
    ptq_blob = convert.to_int8_tflite(student, ds.x_train, seed=o.data.seed)
    atomic_write(od.file("student_float.tflite"), float_blob)
    atomic_write(od.file("model_ptq.tflite"), ptq_blob)

    stage("qat", "quantization-aware training")
    qat_model = quantize_aware(
        student, ds, fit(o.qat_epochs, 5e-4), teacher=teacher, on_epoch=epoch_reporter("qat", on_event), **kd
    )
    save_model(qat_model, od.file("student_qat.h5"))

    stage("export", "exporting the QAT student to full int8")
    qat_blob = convert.to_int8_tflite(qat_model, ds.x_train, seed=o.data.seed)
    model_blob = qat_blob
    ternary_ops: list[dict[str, Any]] = []
    if ternary:
        model_blob, ternary_ops = _ternary_export(qat_blob, student)
        # The same ternary weights as builtin int8 ops, for comparison (the interpreter runs it).
        atomic_write(od.file("model_int8_builtin.tflite"), qat_blob)
    model_path = od.file("model.tflite")
    atomic_write(model_path, model_blob)
    info = describe(model_path)
    if not info.full_int8:
        raise UserInputError(
            f"the exported model is not int8 end to end: {info.violations[0]}",
            "use layers with int8 TFLite builtins (Conv2D, Dense, pooling, ReLU, ...)",
        )
    if ternary:
        stage("export", f"rewrote {len(ternary_ops)} ops to ternary custom ops (lossless)")
        acc["student_int8_qat"] = custom_op_accuracy(model_path, ds.x_test, ds.y_test)
        acc["student_int8_qat_builtin_ops"] = interpreter_accuracy(qat_blob, ds.x_test, ds.y_test)
    else:
        acc["student_int8_qat"] = interpreter_accuracy(qat_blob, ds.x_test, ds.y_test)
    acc["student_int8_ptq"] = interpreter_accuracy(ptq_blob, ds.x_test, ds.y_test)
    warnings += checks.announce(checks.accuracy_warnings(acc, ds.y_test, ds.num_classes), on_event)
    recipe = {
        "steps": ["train", "distill", "qat", "export"],
        "teacher": str(o.teacher) if o.teacher else "built-in teacher",
        "teacher_epochs": o.teacher_epochs if o.teacher is None else 0,
        "student_epochs": o.student_epochs,
        "qat_epochs": o.qat_epochs,
        "augmentation": "shifts",
        **kd,
        "quantization": "qat",
        "weights": o.weights,
        "float_model": "student.keras",
        "seed": o.data.seed,
    }
    write_json(
        od.file("model.edgeq.json"),
        build_sidecar(
            out_name="model.tflite",
            info=info,
            dataset=ds.summary(),
            labels=list(ds.labels),
            recipe=recipe,
            accuracy=dict(acc),
            # inspect --debug-quant compares the file with the model it was converted from (the QAT
            # model), and shows the PTQ baseline side by side.
            source=od.path / "student_qat.h5",
            sidecar_dir=od.path,
            related={
                "ptq": "model_ptq.tflite",
                **({"int8_builtin": "model_int8_builtin.tflite"} if ternary else {}),
            },
        ),
    )
    write_sidecar(
        od.file("model_ptq.tflite"),
        sidecar=od.file("model_ptq.edgeq.json"),
        dataset=ds,
        recipe={**recipe, "steps": ["train", "distill", "ptq"], "quantization": "ptq"},
        accuracy={
            k: v for k, v in acc.items() if k in ("teacher_float", "student_float", "student_int8_ptq")
        },
        source=od.path / "student.keras",
        related={"qat": "model.tflite"},
    )

    deploy_model, delegate_info = _for_delegate(od, model_path, spec, stage, warnings)

    results: dict[str, Result] = {}
    failure: dict[str, Any] | None = None
    stage("profile", f"profiling model.tflite and the float student on device {device_profile.name!r}")
    try:
        with open_device(o.device, device_profile) as dev:
            events = lambda e: on_event({"stage": "profile", **e})  # noqa: E731
            # A float model never runs on an Edge TPU: it is measured on the board's CPU (XNNPACK).
            float_spec = (
                spec.replace(delegate="xnnpack", delegate_options={}) if spec.delegate == "edgetpu" else spec
            )
            for key, path, how in (
                ("int8", deploy_model, spec),
                ("float", od.path / "student_float.tflite", float_spec),
            ):
                results[key] = remote.measure(
                    dev, path, how, test_data=(ds.x_test, ds.y_test), on_event=events
                )
    except EdgeqError as exc:
        failure = {"stage": "profile", "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        stage("profile", f"failed: {exc.message}")
    result = results.get("int8")
    plots = {}
    if result is not None and plot_power(result, od.file("power.png")):
        plots["power"] = "power.png"
    if result is not None and plot_latency(results, od.file("latency.png")):
        plots["latency"] = "latency.png"
    report = Report(
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        dataset=ds.summary(),
        recipe=recipe,
        weights=o.weights,
        accuracy=acc,
        params={"teacher": count_params(teacher), "student": count_params(student)},
        size_bytes={
            "student_float_tflite": len(float_blob),
            "student_int8": len(model_blob),
            "student_int8_ptq": len(ptq_blob),
            **({"student_int8_builtin_ops": len(qat_blob)} if ternary else {}),
        },
        model={"file": "model.tflite", "sha256": info.sha256, "op_counts": info.op_counts},
        custom_ops=ternary_ops if ternary else None,
        gate=accuracy_gate(acc["student_float"], acc["student_int8_qat"], o.max_accuracy_drop),
        profile=result,
        profile_float=results.get("float"),
        plots=plots,
        versions=versions(),
        wall_s=round(time.perf_counter() - t0, 2),
        failure=failure,
        delegate=delegate_info,
        training=tfenv.training_facts(),
        warnings=warnings,
    )
    report.save(od.file("report.json"))
    atomic_write(od.file("report.md"), report_markdown(report))
    stage("done", f"report written to {od.path / 'report.md'}")
    if failure is not None:
        raise (DeviceError if failure["exit_code"] == DeviceError.exit_code else UserInputError)(
            f"{failure['message']} (the report in {od.path} has everything measured before it)",
            failure["hint"],
        )
    if result is not None:
        coverage_gate(result, spec)
    if not report.gate["passed"]:
        raise GateFailed(
            f"int8 accuracy {acc['student_int8_qat']:.4f} is {report.gate['drop_points']:.2f} points below "
            f"the float student {acc['student_float']:.4f} (allowed: {o.max_accuracy_drop})",
            "train longer (--qat-epochs, --student-epochs) or allow more with --max-accuracy-drop",
        )
    return report
