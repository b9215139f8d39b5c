"""The Python API: every CLI command is one function here.

>>> from edgeq import api
>>> report = api.pipeline(Path("runs/first"))            # digits → int8 → measured on 'local'
>>> info = api.inspect(Path("runs/first/model.tflite"))
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq.data import Dataset, load_dataset
from edgeq.devices.session import DeviceTarget
from edgeq.errors import GateFailed, UserInputError
from edgeq.export import convert
from edgeq.export.tflite_model import ModelInfo, describe, interpreter_accuracy
from edgeq.runner.measure import file_sha256

REPORT_SCHEMA = "edgeq.report/1"
WEIGHTS = ("int8", "ternary")
Event = dict[str, Any]
EventCallback = Callable[[Event], None]


def _noop(_: Event) -> None:
    return None


@dataclass(frozen=True)
class DataOptions:
    """Where the data comes from and how it is split (same defaults in every command)."""

    source: str | None = None  # None = scikit-learn digits
    image_size: tuple[int, int] = (32, 32)
    seed: int = 0

    def load(self) -> Dataset:
        return load_dataset(self.source, image_size=self.image_size, seed=self.seed)


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
    runs: int = 200
    warmup: int = 20
    threads: int = 1
    max_accuracy_drop: float = 1.0  # points (percent) below the float student
    power: bool = False  # measure power/energy with the device profile's power source
    weights: str = "int8"  # "int8", or "ternary": 2-bit weights as EDGEQ_TERNARY_* custom ops


# ------------------------------------------------------------------------------------------------
# Keras files


def save_keras(model: Any, path: Path) -> None:
    """Save atomically: into a temporary directory next to ``path``, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        tmp = tmpdir / path.name
        from edgeq.tfenv import quiet_native

        with quiet_native():  # tf_keras warns that .h5 is legacy; QAT models reload only from .h5
            model.save(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _load_keras(path: Path, data: Dataset) -> Any:
    from edgeq.models import load_user_model

    return load_user_model(path, data.input_shape, data.num_classes)


def _is_qat(path: Path) -> bool:
    """A QAT model was saved by ``qat`` as .h5 with tfmot's quantize wrappers inside."""
    if path.suffix != ".h5":
        return False
    with open(path, "rb") as f:
        return b"QuantizeWrapper" in f.read()


def _load_any(path: Path, data: Dataset) -> tuple[Any, bool]:
    if _is_qat(path):
        from edgeq.train.core import load_qat_model

        try:
            return load_qat_model(path), True
        except Exception as exc:
            raise UserInputError(f"cannot load QAT model {path.name}: {exc}", "re-run 'edgeq qat'") from exc
    return _load_keras(path, data), False


def _epoch_reporter(stage: str, on_event: EventCallback) -> Callable[[int, int, dict[str, float]], None]:
    def cb(epoch: int, epochs: int, logs: dict[str, float]) -> None:
        on_event({"stage": stage, "epoch": epoch, "epochs": epochs, **logs})

    return cb


def _check_epochs(**epochs: int) -> None:
    for name, n in epochs.items():
        if n < 1:
            raise UserInputError(
                f"{name} must be at least 1, got {n}", f"pass --{name.replace('_', '-')} 1 or more"
            )


# ------------------------------------------------------------------------------------------------
# Steps


def train(
    out: Path,
    *,
    data: DataOptions | None = None,
    arch: str = "teacher",
    epochs: int = 10,
    on_event: EventCallback = _noop,
) -> dict[str, Any]:
    """Train a built-in float model (``teacher`` by default) and save it to ``out`` (.keras)."""
    from edgeq.models import build_model, count_params
    from edgeq.train.core import FitConfig, accuracy, train_float

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".keras",))
    ds = (data or DataOptions()).load()
    model = build_model(arch, ds.input_shape, ds.num_classes)
    on_event({"stage": "train", "message": f"training {arch} ({count_params(model)} parameters)"})
    train_float(
        model, ds, FitConfig(epochs, seed=(data or DataOptions()).seed), _epoch_reporter("train", on_event)
    )
    save_keras(model, out)
    return {
        "model": str(out),
        "params": count_params(model),
        "accuracy": accuracy(model, ds.x_test, ds.y_test),
    }


def distill(
    teacher: Path,
    out: Path,
    *,
    data: DataOptions | None = None,
    epochs: int = 15,
    temperature: float = 4.0,
    alpha: float = 0.3,
    on_event: EventCallback = _noop,
) -> dict[str, Any]:
    """Distill ``teacher`` into the built-in student and save it to ``out`` (.keras)."""
    from edgeq.models import build_model, count_params
    from edgeq.train.core import FitConfig, accuracy
    from edgeq.train.core import distill as _distill

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".keras",))
    opts = data or DataOptions()
    ds = opts.load()
    t = _load_keras(teacher, ds)
    student = build_model("student", ds.input_shape, ds.num_classes)
    on_event({"stage": "distill", "message": f"distilling into student ({count_params(student)} parameters)"})
    _distill(
        student,
        t,
        ds,
        FitConfig(epochs, seed=opts.seed),
        temperature=temperature,
        alpha=alpha,
        on_epoch=_epoch_reporter("distill", on_event),
    )
    save_keras(student, out)
    return {
        "model": str(out),
        "params": count_params(student),
        "accuracy": accuracy(student, ds.x_test, ds.y_test),
    }


def qat(
    model: Path,
    out: Path,
    *,
    data: DataOptions | None = None,
    epochs: int = 4,
    teacher: Path | None = None,
    temperature: float = 4.0,
    alpha: float = 0.3,
    on_event: EventCallback = _noop,
) -> dict[str, Any]:
    """Quantization-aware fine-tuning of a float model (tfmot ``quantize_model``); saves ``out`` (.h5).

    With ``teacher``, fine-tuning keeps distilling from it.
    """
    from edgeq.train.core import FitConfig, accuracy, quantize_aware

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".h5",))
    opts = data or DataOptions()
    ds = opts.load()
    m = _load_keras(model, ds)
    t = _load_keras(teacher, ds) if teacher is not None else None
    on_event({"stage": "qat", "message": "quantization-aware training"})
    q = quantize_aware(
        m,
        ds,
        FitConfig(epochs, learning_rate=5e-4, seed=opts.seed),
        teacher=t,
        temperature=temperature,
        alpha=alpha,
        on_epoch=_epoch_reporter("qat", on_event),
    )
    save_keras(q, out)
    return {"model": str(out), "accuracy": accuracy(q, ds.x_test, ds.y_test)}


def export(
    model: Path,
    out: Path,
    *,
    data: DataOptions | None = None,
    recipe: dict[str, Any] | None = None,
    extra_accuracy: dict[str, float] | None = None,
    on_event: EventCallback = _noop,
) -> dict[str, Any]:
    """Convert ``model`` to a full-int8 ``.tflite`` at ``out`` and write its sidecar.

    A QAT model (from ``qat``) keeps its trained ranges; a float model is post-training quantized,
    calibrated on training data. The result must be int8 end to end or nothing is written.
    """
    from edgeq.train.core import accuracy

    _require_suffix(out, (".tflite",))
    opts = data or DataOptions()
    ds = opts.load()
    keras_model, is_qat = _load_any(model, ds)
    on_event({"stage": "export", "message": f"converting {model.name} to full int8"})
    blob = convert.to_int8_tflite(keras_model, ds.x_train, seed=opts.seed)
    # Verify before anything becomes visible under the final name.
    with tempfile.TemporaryDirectory() as td:
        probe = Path(td) / out.name
        probe.write_bytes(blob)
        info = describe(probe)
        if not info.full_int8:
            raise UserInputError(
                f"the converted model is not int8 end to end: {info.violations[0]}",
                "use layers with int8 TFLite builtins (Conv2D, Dense, pooling, ReLU, ...)",
            )
        int8_acc = interpreter_accuracy(blob, ds.x_test, ds.y_test)
    acc = {"source_float" if not is_qat else "source_qat_keras": accuracy(keras_model, ds.x_test, ds.y_test)}
    acc["int8"] = int8_acc
    acc.update(extra_accuracy or {})
    sidecar = _sidecar(
        out_name=out.name,
        info=info,
        ds=ds,
        recipe=recipe
        or {
            "steps": ["export"],
            "source_model": str(model),
            "source_sha256": file_sha256(str(model)),
            "quantization": "qat" if is_qat else "ptq",
        },
        accuracy=acc,
    )
    convert.write_atomic(out, blob)
    convert.write_json(convert.sidecar_path(out), sidecar)
    return {"model": str(out), "sidecar": str(convert.sidecar_path(out)), "size_bytes": len(blob), **acc}


def _sidecar(
    *, out_name: str, info: ModelInfo, ds: Dataset, recipe: dict[str, Any], accuracy: dict[str, float]
) -> dict[str, Any]:
    inp = info.tensor(info.inputs[0])
    outp = info.tensor(info.outputs[0])
    return {
        "schema": "edgeq.model/1",
        "model": {"file": out_name, "sha256": info.sha256, "size_bytes": info.size_bytes},
        "input": {
            "shape": list(inp.shape),
            "dtype": inp.dtype,
            "scale": inp.scale[0] if inp.scale else None,
            "zero_point": inp.zero_point[0] if inp.zero_point else None,
        },
        "output": {
            "shape": list(outp.shape),
            "dtype": outp.dtype,
            "scale": outp.scale[0] if outp.scale else None,
            "zero_point": outp.zero_point[0] if outp.zero_point else None,
        },
        "labels": list(ds.labels),
        "dataset": ds.summary(),
        "recipe": recipe,
        "accuracy": accuracy,
        "versions": convert.versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def inspect(model: Path, *, debug_quant: bool = False) -> dict[str, Any]:
    """Ops, tensor dtypes, quantization parameters, size and the full-int8 verdict of a ``.tflite``.

    ``debug_quant`` adds per-layer quantization error from TFLite's QuantizationDebugger; it needs
    the float model and dataset recorded in the sidecar that ``edgeq export``/``pipeline`` wrote.
    """
    info = describe(model)
    out = info.to_dict()
    side = convert.read_sidecar(model)
    if side is not None:
        out["sidecar"] = {k: side.get(k) for k in ("accuracy", "labels", "recipe", "versions")}
    if debug_quant:
        out["quant_debug"] = _quant_debug(model, side)
    return out


def _quant_debug(model: Path, side: dict[str, Any] | None) -> list[dict[str, Any]]:
    hint = "run it on a model from 'edgeq pipeline', whose sidecar names the float student and dataset"
    recipe = (side or {}).get("recipe") or {}
    float_path = recipe.get("float_model")
    if not float_path:
        raise UserInputError(f"{model.name} has no sidecar naming its float model", hint)
    fp = Path(float_path)
    if not fp.is_absolute():
        fp = model.parent / fp
    if not fp.exists():
        raise UserInputError(f"the float model {fp} named in the sidecar is missing", hint)
    dspec = (side or {}).get("dataset") or {}
    opts = DataOptions(
        source=None if dspec.get("source") == "digits" else dspec.get("path"),
        image_size=tuple(dspec.get("image_size", (32, 32))),
        seed=int(dspec.get("seed", 0)),
    )
    ds = opts.load()
    return convert.quant_debug(_load_keras(fp, ds), ds.x_train, ds.x_test[:64])


# ------------------------------------------------------------------------------------------------
# The pipeline


def pipeline(
    out: Path, opts: PipelineOptions | None = None, on_event: EventCallback = _noop
) -> dict[str, Any]:
    """train → distill → QAT → export (+ PTQ baseline) → profile on ``opts.device``; writes under ``out``.

    Raises :class:`GateFailed` (after writing the full report) when the QAT int8 accuracy is more than
    ``max_accuracy_drop`` points below the float student.
    """
    from edgeq.models import build_model, count_params
    from edgeq.train.core import FitConfig, accuracy, quantize_aware, train_float
    from edgeq.train.core import distill as _distill

    o = opts or PipelineOptions()
    _check_epochs(teacher_epochs=o.teacher_epochs, student_epochs=o.student_epochs, qat_epochs=o.qat_epochs)
    if o.max_accuracy_drop < 0:
        raise UserInputError(f"--max-accuracy-drop must be ≥ 0, got {o.max_accuracy_drop}", "pass e.g. 1.0")
    if o.weights not in WEIGHTS:
        raise UserInputError(f"unknown --weights {o.weights!r}", f"use one of {', '.join(WEIGHTS)}")
    ternary = o.weights == "ternary"
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} exists and is not a directory", "pass a directory path")
    t0 = time.perf_counter()

    def stage(name: str, message: str) -> None:
        on_event({"stage": name, "message": message, "elapsed_s": round(time.perf_counter() - t0, 1)})

    # Every input is checked before anything is written.
    stage("data", "loading data")
    ds = o.data.load()
    user_teacher = None
    if o.teacher is not None:
        user_teacher = _load_keras(o.teacher, ds)
    device_profile = o.device.resolve()
    out.mkdir(parents=True, exist_ok=True)
    fit = lambda epochs, lr=2e-3: FitConfig(epochs, learning_rate=lr, seed=o.data.seed)  # noqa: E731

    if user_teacher is None:
        teacher = build_model("teacher", ds.input_shape, ds.num_classes)
        stage("train", f"training teacher ({count_params(teacher)} parameters)")
        train_float(teacher, ds, fit(o.teacher_epochs), _epoch_reporter("train", on_event))
    else:
        teacher = user_teacher
        stage("train", f"using teacher {o.teacher} ({count_params(teacher)} parameters)")
    save_keras(teacher, out / "teacher.keras")

    student = build_model("student_ternary" if ternary else "student", ds.input_shape, ds.num_classes)
    stage("distill", f"distilling into student ({count_params(student)} parameters, {o.weights} weights)")
    kd = {"temperature": o.temperature, "alpha": o.alpha}
    _distill(student, teacher, ds, fit(o.student_epochs), on_epoch=_epoch_reporter("distill", on_event), **kd)
    save_keras(student, out / "student.keras")
    acc = {"teacher_float": accuracy(teacher, ds.x_test, ds.y_test)}
    acc["student_float"] = accuracy(student, ds.x_test, ds.y_test)

    stage("ptq", "post-training quantization baseline")
    float_blob = convert.to_float_tflite(student)
    ptq_blob = convert.to_int8_tflite(student, ds.x_train, seed=o.data.seed)
    convert.write_atomic(out / "student_float.tflite", float_blob)
    convert.write_atomic(out / "model_ptq.tflite", ptq_blob)

    stage("qat", "quantization-aware training")
    qat_model = quantize_aware(
        student,
        ds,
        fit(o.qat_epochs, 5e-4),
        teacher=teacher,
        on_epoch=_epoch_reporter("qat", on_event),
        **kd,
    )
    save_keras(qat_model, out / "student_qat.h5")

    stage("export", "exporting the QAT student to full int8")
    qat_blob = convert.to_int8_tflite(qat_model, ds.x_train, seed=o.data.seed)
    model_blob = qat_blob
    ternary_ops: list[dict[str, Any]] = []
    if ternary:
        model_blob, ternary_ops = _ternary_export(qat_blob, student)
        # The same ternary weights as builtin int8 ops, for comparison (the interpreter runs it).
        convert.write_atomic(out / "model_int8_builtin.tflite", qat_blob)
    convert.write_atomic(out / "model.tflite", model_blob)
    info = describe(out / "model.tflite")
    if not info.full_int8:
        raise UserInputError(
            f"the exported model is not int8 end to end: {info.violations[0]}",
            "use layers with int8 TFLite builtins (Conv2D, Dense, pooling, ReLU, ...)",
        )
    if ternary:
        from edgeq.export.tflite_model import custom_op_accuracy

        stage("export", f"rewrote {len(ternary_ops)} ops to ternary custom ops (lossless)")
        acc["student_int8_qat"] = custom_op_accuracy(out / "model.tflite", ds.x_test, ds.y_test)
        acc["student_int8_qat_builtin_ops"] = interpreter_accuracy(qat_blob, ds.x_test, ds.y_test)
    else:
        acc["student_int8_qat"] = interpreter_accuracy(qat_blob, ds.x_test, ds.y_test)
    acc["student_int8_ptq"] = interpreter_accuracy(ptq_blob, ds.x_test, ds.y_test)
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
    convert.write_json(
        convert.sidecar_path(out / "model.tflite"),
        _sidecar(out_name="model.tflite", info=info, ds=ds, recipe=recipe, accuracy=dict(acc)),
    )

    stage("profile", f"profiling model.tflite on device {device_profile.name!r}")
    result = profile(
        out / "model.tflite",
        o.device,
        profile=device_profile,
        runs=o.runs,
        warmup=o.warmup,
        threads=o.threads,
        test_data=(ds.x_test, ds.y_test),
        power=o.power,
        on_event=lambda e: on_event({"stage": "profile", **e}),
    )
    from edgeq.report.plot import plot_power

    plots = {"power": "power.png"} if plot_power(result, out / "power.png") else {}
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": ds.summary(),
        "recipe": recipe,
        "weights": o.weights,
        "accuracy": acc,
        "params": {"teacher": count_params(teacher), "student": count_params(student)},
        "size_bytes": {
            "student_float_tflite": len(float_blob),
            "student_int8": len(model_blob),
            "student_int8_ptq": len(ptq_blob),
            **({"student_int8_builtin_ops": len(qat_blob)} if ternary else {}),
        },
        "model": {"file": "model.tflite", "sha256": info.sha256, "op_counts": info.op_counts},
        **({"custom_ops": ternary_ops} if ternary else {}),
        "gate": accuracy_gate(acc["student_float"], acc["student_int8_qat"], o.max_accuracy_drop),
        "profile": result,
        "plots": plots,
        "versions": convert.versions(),
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    from edgeq.report.markdown import report_markdown

    convert.write_json(out / "report.json", report)
    convert.write_atomic(out / "report.md", report_markdown(report))
    stage("done", f"report written to {out / 'report.md'}")
    if not report["gate"]["passed"]:
        raise GateFailed(
            f"int8 accuracy {acc['student_int8_qat']:.4f} is {report['gate']['drop_points']:.2f} points below "
            f"the float student {acc['student_float']:.4f} (allowed: {o.max_accuracy_drop})",
            "train longer (--qat-epochs, --student-epochs) or allow more with --max-accuracy-drop",
        )
    return report


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


def accuracy_gate(float_acc: float, int8_acc: float, max_drop_points: float) -> dict[str, Any]:
    """The int8 model may lose at most ``max_drop_points`` percentage points against the float one."""
    drop = (float_acc - int8_acc) * 100.0
    return {
        "max_accuracy_drop_points": max_drop_points,
        "drop_points": round(drop, 3),
        "passed": drop <= max_drop_points + 1e-9,
    }


# ------------------------------------------------------------------------------------------------
# Devices


def profile(
    model: Path,
    target: DeviceTarget | None = None,
    *,
    profile: Any = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    min_seconds: float | None = None,
    runtime: str | None = None,
    test_data: Any = None,
    save_outputs: Path | None = None,
    timeout: float | None = None,
    power: bool | str | dict[str, Any] | None = None,
    thermal: bool | dict[str, Any] | None = None,
    set_governor: str | None = None,
    cool_down_below_c: float | None = None,
    sysfs_root: str | None = None,
    vcgencmd: str | None = None,
    on_event: EventCallback = _noop,
    **runner_options: Any,
) -> dict[str, Any]:
    """Deploy (if needed) and run ``model`` on a device; return its ``edgeq.result/1``.

    Unset measurement settings come from the device profile (runs, warm-up, threads, timeout, power
    source and sensor, thermal zones, governor, cool-down). ``power=True`` measures power with the
    profile's source; a source name or a full config dict overrides it. ``runner_options`` go to
    :func:`edgeq.profiling.profile_on` (``power_idle_s``, ``power_rate_hz``, ``cool_down_timeout_s``).

    >>> api.profile(Path("model.tflite"), DeviceTarget("rpi4", host="pi@10.0.0.7"))["latency_us"]["p50"]
    """
    from edgeq import profiling
    from edgeq.devices.session import open_device

    t = target or DeviceTarget()
    profiling.check_model(Path(model))  # a bad model fails before any connection
    prof = profile or t.resolve()
    if runtime is None:
        runtime = prof.runtime if prof.runtime in profiling.RUNTIMES else "auto"
    power_cfg = _power_config(prof, power)
    if thermal is None and (power_cfg is not None or set_governor or cool_down_below_c):
        thermal = True
    thermal_cfg: bool | dict[str, Any] | None = thermal
    if thermal is True:
        thermal_cfg = {"governor": prof.governor or "performance"}
        if prof.thermal_zones:
            thermal_cfg["zones"] = list(prof.thermal_zones)
    with open_device(t, prof) as dev:
        result = profiling.profile_on(
            dev.transport,
            dev.python,
            dev.workdir,
            prof.name,
            Path(model),
            runs=runs if runs is not None else prof.runs,
            warmup=warmup if warmup is not None else prof.warmup_runs,
            threads=threads if threads is not None else (prof.threads or 1),
            min_seconds=min_seconds if min_seconds is not None else (prof.min_seconds or None),
            runtime=runtime,
            test_data=test_data,
            save_outputs=save_outputs,
            on_event=on_event,
            timeout=timeout if timeout is not None else prof.run_timeout_s,
            power=power_cfg,
            thermal=thermal_cfg,
            set_governor=set_governor,
            cool_down_below_c=cool_down_below_c if cool_down_below_c is not None else prof.cooldown_to_c,
            sysfs_root=sysfs_root or (prof.sysfs_root if prof.sysfs_root != "/sys" else None),
            vcgencmd=vcgencmd or (prof.vcgencmd if prof.vcgencmd != "vcgencmd" else None),
            **runner_options,
        )
    result.setdefault("device", {}).update({"profile": prof.name, "profile_sha256": prof.digest()})
    return result


def _power_config(prof: Any, power: bool | str | dict[str, Any] | None) -> dict[str, Any] | None:
    """The runner's power config: from the profile (``True``), a source name, or a dict as given."""
    if power is None or power is False:
        return None
    if isinstance(power, dict):
        return power
    source = prof.power_source if power is True else power
    if source == "none":
        raise UserInputError(
            f"device {prof.name!r} has no power source",
            'set power_source in its profile (e.g. "ina2xx", "rapl") or pass --power-source',
        )
    cfg: dict[str, Any] = {"source": source}
    if prof.power_sensor and source == prof.power_source:
        cfg["sensor"] = prof.power_sensor
    return cfg


def deploy(
    model: Path, target: DeviceTarget | None = None, *, on_event: EventCallback = _noop
) -> dict[str, Any]:
    """Copy ``model`` and the runner to the device (content-addressed; what is there is not resent).

    A model with EDGEQ_* custom ops also gets ``libedgeq_ops.so`` built for the device's architecture
    (``result["lib"]``).
    """
    from edgeq import profiling
    from edgeq.devices.deploy import deploy_file
    from edgeq.devices.session import open_device

    t = target or DeviceTarget()
    profiling.check_model(Path(model))
    prof = t.resolve()
    t0 = time.perf_counter()
    with open_device(t, prof) as dev:
        parts: dict[str, dict[str, Any]] = {}
        files: list[tuple[str, Path]] = [("runner", profiling.build_runner_pyz()), ("models", Path(model))]
        library = profiling.custom_ops_library(dev.transport, dev.python, Path(model))
        if library is not None:
            files.append(("lib", library))
        for kind, path in files:
            d = deploy_file(dev.transport, dev.python, dev.workdir, path, kind)
            on_event({"stage": "deploy", "message": f"{path.name}: {d.bytes_sent} bytes sent"})
            parts[kind] = {"remote_path": d.remote_path, "sha256": d.sha256, "bytes_sent": d.bytes_sent}
    return {
        "device": prof.name,
        "model": parts["models"],
        "runner": parts["runner"],
        **({"lib": parts["lib"]} if "lib" in parts else {}),
        "bytes_sent": sum(p["bytes_sent"] for p in parts.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _require_suffix(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix not in suffixes:
        raise UserInputError(
            f"output {path} must end in {' or '.join(suffixes)}", f"pass e.g. model{suffixes[0]}"
        )


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserInputError(
            f"cannot read report {path}: {exc}", "pass a report.json from edgeq pipeline"
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        raise UserInputError(
            f"{path} is not an {REPORT_SCHEMA} report", "pass a report.json from edgeq pipeline"
        )
    return data
