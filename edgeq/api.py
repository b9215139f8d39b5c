"""The Python API: every CLI command is one function here, and nothing else lives here.

>>> from edgeq import api
>>> report = api.pipeline(Path("runs/first"))            # digits → int8 → measured on 'local'
>>> result = api.profile(Path("runs/first/model.tflite"), measure={"runs": 500})
>>> result.latency_us.p50
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeq import tfenv, tflite
from edgeq.errors import GateFailed, UserInputError
from edgeq.events import EventCallback, epoch_reporter, noop
from edgeq.files import atomic_write, check_writable_dir, check_writable_file, sha256_file, write_json

# Heavy modules (TensorFlow, NumPy, pydantic) load where a command needs them, so that a quick command
# (deploy, devices, farm runs) starts fast; the records below are re-exported on first use.
if TYPE_CHECKING:
    from edgeq.data import DataOptions
    from edgeq.devices.connect import DeviceTarget
    from edgeq.pipeline import PipelineOptions
    from edgeq.result import Report, Result
    from edgeq.spec import MeasureSpec

_LAZY = {
    "DataOptions": "edgeq.data",
    "DeviceTarget": "edgeq.devices.connect",
    "PipelineOptions": "edgeq.pipeline",
    "Report": "edgeq.result",
    "Result": "edgeq.result",
    "MeasureSpec": "edgeq.spec",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgeq.api' has no attribute {name!r}")


__all__ = [
    "DataOptions",
    "DeviceTarget",
    "GateFailed",
    "MeasureSpec",
    "PipelineOptions",
    "Report",
    "Result",
    "compile",
    "deploy",
    "distill",
    "export",
    "inspect",
    "pipeline",
    "profile",
    "qat",
    "train",
]


def _check_epochs(**epochs: int) -> None:
    for name, n in epochs.items():
        if n < 1:
            raise UserInputError(
                f"{name} must be at least 1, got {n}", f"pass --{name.replace('_', '-')} 1 or more"
            )


def _require_suffix(path: Path, suffixes: tuple[str, ...]) -> None:
    if path.suffix not in suffixes:
        raise UserInputError(
            f"output {path} must end in {' or '.join(suffixes)}", f"pass e.g. model{suffixes[0]}"
        )
    check_writable_file(path)


def _announce(ds: Any, on_event: EventCallback) -> None:
    """What the data loader noticed (e.g. a folder mixing greyscale and colour images) and what the
    dataset's size means for the figures, as warning events."""
    from edgeq.train import checks

    checks.announce(checks.dataset_warnings(ds), on_event)
    checks.announce([checks.CheckWarning("data.loader", w, "") for w in ds.warnings], on_event)


# ------------------------------------------------------------------------------------------------
# Steps


def train(
    out: Path,
    *,
    data: DataOptions | None = None,
    arch: str = "teacher",
    epochs: int = 10,
    on_event: EventCallback = noop,
) -> dict[str, Any]:
    """Train a built-in float model (``teacher`` by default) and save it to ``out`` (.keras)."""
    from edgeq.data import DataOptions
    from edgeq.models import build_model, check_training_fits, count_params, save_model
    from edgeq.train.core import FitConfig, accuracy, train_float

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".keras",))
    opts = data or DataOptions()
    check_training_fits((arch,), opts.peek())  # image size and memory, before any image is read
    ds = opts.load()
    _announce(ds, on_event)
    tfenv.reproducible(opts.seed)  # before the model is built: its initial weights repeat too
    model = build_model(arch, ds.input_shape, ds.num_classes)
    on_event({"stage": "train", "message": f"training {arch} ({count_params(model)} parameters)"})
    train_float(model, ds, FitConfig(epochs, seed=opts.seed), epoch_reporter("train", on_event))
    save_model(model, out, dataset=ds)
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
    on_event: EventCallback = noop,
) -> dict[str, Any]:
    """Distill ``teacher`` into the built-in student and save it to ``out`` (.keras)."""
    from edgeq.data import DataOptions
    from edgeq.models import build_model, check_training_fits, count_params, load_user_model, save_model
    from edgeq.train import checks
    from edgeq.train.core import FitConfig, accuracy
    from edgeq.train.core import distill as _distill

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".keras",))
    opts = data or DataOptions()
    check_training_fits(("student",), opts.peek())
    ds = opts.load()
    _announce(ds, on_event)
    t = load_user_model(teacher, ds)
    tfenv.reproducible(opts.seed)
    student = build_model("student", ds.input_shape, ds.num_classes)
    checks.announce(checks.size_warnings(count_params(t), count_params(student)), on_event)
    on_event({"stage": "distill", "message": f"distilling into student ({count_params(student)} parameters)"})
    _distill(
        student,
        t,
        ds,
        FitConfig(epochs, seed=opts.seed),
        temperature=temperature,
        alpha=alpha,
        on_epoch=epoch_reporter("distill", on_event),
    )
    save_model(student, out, dataset=ds)
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
    on_event: EventCallback = noop,
) -> dict[str, Any]:
    """Quantization-aware fine-tuning of a float model (tfmot ``quantize_model``); saves ``out`` (.h5).

    With ``teacher``, fine-tuning keeps distilling from it.
    """
    from edgeq.data import DataOptions
    from edgeq.models import load_user_model, save_model
    from edgeq.train.core import FitConfig, accuracy, quantize_aware

    _check_epochs(epochs=epochs)
    _require_suffix(out, (".h5",))
    opts = data or DataOptions()
    ds = opts.load()
    _announce(ds, on_event)
    m = load_user_model(model, ds)
    t = load_user_model(teacher, ds) if teacher is not None else None
    on_event({"stage": "qat", "message": "quantization-aware training"})
    q = quantize_aware(
        m,
        ds,
        FitConfig(epochs, learning_rate=5e-4, seed=opts.seed),
        teacher=t,
        temperature=temperature,
        alpha=alpha,
        on_epoch=epoch_reporter("qat", on_event),
    )
    save_model(q, out, dataset=ds)
    return {"model": str(out), "accuracy": accuracy(q, ds.x_test, ds.y_test)}


def export(
    model: Path,
    out: Path,
    *,
    data: DataOptions | None = None,
    on_event: EventCallback = noop,
) -> dict[str, Any]:
    """Convert ``model`` to a full-int8 ``.tflite`` at ``out`` and write its sidecar.

    A QAT model (from ``qat``) keeps its trained ranges; a float model is post-training quantized,
    calibrated on training data. The result must be int8 end to end or nothing is written.
    """
    from edgeq.data import DataOptions
    from edgeq.export import convert
    from edgeq.export.sidecar import build_sidecar, sidecar_path
    from edgeq.export.tflite_model import describe, interpreter_accuracy
    from edgeq.models import load_any
    from edgeq.train.core import accuracy

    _require_suffix(out, (".tflite",))
    check_writable_file(sidecar_path(out), "sidecar")
    opts = data or DataOptions()
    ds = opts.load()
    _announce(ds, on_event)
    keras_model, is_qat = load_any(model, ds)
    on_event({"stage": "export", "message": f"converting {model.name} to full int8"})
    blob = convert.to_int8_tflite(keras_model, ds.x_train, seed=opts.seed)
    # Verify before anything becomes visible under the final name.
    with tempfile.TemporaryDirectory() as td:
        probe = Path(td) / "model.tflite"
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
    sidecar = build_sidecar(
        out_name=out.name,
        info=info,
        dataset=ds.summary(),
        labels=list(ds.labels),
        recipe={
            "steps": ["export"],
            "source_model": str(model),
            "source_sha256": sha256_file(model),
            "quantization": "qat" if is_qat else "ptq",
        },
        accuracy=acc,
        source=model,
        sidecar_dir=out.parent,
    )
    atomic_write(out, blob)
    write_json(sidecar_path(out), sidecar)
    return {"model": str(out), "sidecar": str(sidecar_path(out)), "size_bytes": len(blob), **acc}


def inspect(
    model: Path,
    *,
    debug_quant: bool = False,
    delegate: str | None = None,
    delegate_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Ops, tensor dtypes, quantization parameters, size and the full-int8 verdict of a ``.tflite``.

    ``debug_quant`` adds per-layer quantization error against the float source recorded in the
    sidecar that ``edgeq export``/``pipeline`` wrote. ``delegate`` adds ``coverage``: per op, whether
    it can run on that delegate and why not (offline).
    """
    from edgeq import delegates
    from edgeq.export.inspect import inspect_model

    d = delegates.get(delegate) if delegate is not None else None  # an unknown name fails first
    info = inspect_model(Path(model), debug_quant=debug_quant, **options)
    if d is not None:
        info["coverage"] = d.coverage(Path(model), delegate_options=delegate_options).to_dict()
    return info


def compile(
    model: Path,
    out_dir: Path,
    *,
    delegate: str,
    delegate_options: Mapping[str, Any] | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Compile ``model`` for ``delegate`` into ``out_dir`` (e.g. ``*_edgetpu.tflite``); with the
    compiler's own per-op coverage and where it disagrees with the offline analysis."""
    from edgeq import delegates

    d = delegates.get(delegate)
    tflite.check_file(Path(model))
    if timeout_s <= 0:
        raise UserInputError(
            f"--timeout must be > 0, got {timeout_s}", "pass the compiler's time limit in seconds"
        )
    check_writable_dir(Path(out_dir), "--out")
    result = d.compile(Path(model), Path(out_dir), timeout_s=timeout_s, delegate_options=delegate_options)
    return result.to_dict()


# ------------------------------------------------------------------------------------------------
# The pipeline


def pipeline(out: Path, opts: PipelineOptions | None = None, on_event: EventCallback = noop) -> Report:
    """train → distill → QAT → export (+ PTQ baseline) → profile on ``opts.device``; writes under ``out``.

    Raises :class:`GateFailed` (after writing the full report) when the QAT int8 accuracy is more than
    ``max_accuracy_drop`` points below the float student.
    """
    from edgeq.pipeline import PipelineOptions, run_pipeline

    return run_pipeline(out, opts or PipelineOptions(), on_event)


# ------------------------------------------------------------------------------------------------
# Devices


def measure_spec(
    target: DeviceTarget | None = None, measure: Mapping[str, Any] | MeasureSpec | None = None
) -> MeasureSpec:
    """The measurement ``profile`` would run: a MeasureSpec as given, or ``measure`` settings on top of
    the device profile's defaults (see :meth:`~edgeq.devices.profile.DeviceProfile.measure_spec`)."""
    from edgeq.devices.connect import DeviceTarget
    from edgeq.spec import MeasureSpec

    if isinstance(measure, MeasureSpec):
        return measure
    return (target or DeviceTarget()).resolve().measure_spec(measure)


def profile(
    model: Path,
    target: DeviceTarget | None = None,
    *,
    measure: Mapping[str, Any] | MeasureSpec | None = None,
    test_data: Any = None,
    save_outputs: Path | None = None,
    on_event: EventCallback = noop,
) -> Result:
    """Deploy (if needed) and run ``model`` on a device; return its :class:`Result`.

    ``measure``: MeasureSpec settings on top of the device profile's (``{"runs": 500, "power": True}``),
    or a whole MeasureSpec. ``test_data``: ``(x, y)`` arrays, or a dataset by name ('digits', a .npz,
    an image folder) taken through the model's own preprocessing (its own dataset: the test split).
    A profile's ``min_delegate_coverage`` is checked against the placement the device reports: below
    it, :class:`GateFailed` names the ops that fell back to the CPU.

    >>> api.profile(Path("model.tflite"), DeviceTarget("rpi4", host="pi@10.0.0.7")).latency_us.p50
    """
    from edgeq import remote
    from edgeq.devices.connect import DeviceTarget, open_device
    from edgeq.pipeline import coverage_gate
    from edgeq.spec import MeasureSpec

    t = target or DeviceTarget()
    remote.check_model(Path(model))  # a bad model fails before any connection
    prof = t.resolve()
    spec = measure if isinstance(measure, MeasureSpec) else prof.measure_spec(measure)
    if save_outputs is not None:
        check_writable_file(Path(save_outputs), "--save-outputs")
    if isinstance(test_data, str | Path):
        # 'digits', a .npz or an image folder: the model's own dataset gives its test split only, other
        # data go through the model's preprocessing (edgeq.export.model_data).
        from edgeq.export.model_data import model_test_data

        md = model_test_data(Path(model), test_data)
        for w in md.warnings:
            on_event({"event": "warning", "message": w})
        on_event({"stage": "profile", "message": f"test data: {md.description}"})
        test_data = (md.x, md.y)
    with open_device(t, prof) as dev:
        result = remote.measure(
            dev, Path(model), spec, test_data=test_data, save_outputs=save_outputs, on_event=on_event
        )
    coverage_gate(result, spec)
    return result


def deploy(
    model: Path, target: DeviceTarget | None = None, *, on_event: EventCallback = noop
) -> dict[str, Any]:
    """Copy ``model`` and the runner to the device (content-addressed; what is there is not resent).

    A model with EDGEQ_* custom ops also gets ``libedgeq_ops.so`` built for the device's architecture
    (``result["lib"]``). A model with a sidecar gets its labels as ``<model>.labels.txt``, line k
    naming output k (``result["labels"]``).
    """
    from edgeq import remote
    from edgeq.devices.connect import DeviceTarget, open_device
    from edgeq.export.sidecar import write_labels_file

    t = target or DeviceTarget()
    remote.check_model(Path(model))  # a bad model fails before any connection
    prof = t.resolve()
    t0 = time.perf_counter()
    with open_device(t, prof) as dev, tempfile.TemporaryDirectory(prefix="edgeq-labels-") as td:
        parts: dict[str, dict[str, Any]] = {}
        files: list[tuple[Path, str]] = [(remote.build_runner_pyz(), "runner")]
        labels = write_labels_file(Path(model), Path(td))
        if labels is not None:
            files.append((labels, "models"))
        library = remote.custom_ops_library(dev, Path(model))
        if library is not None:
            files.append((library, "lib"))
        # The model's files (an IR's .xml and .bin) and its labels land side by side, in one call.
        model_parts = remote.model_files(Path(model)) + ([labels] if labels is not None else [])
        files = [f for f in files if f[0] != labels] + [(p, "models") for p in model_parts]
        done = remote.deploy(dev, files, together=set(model_parts) if len(model_parts) > 1 else False)
        for (path, kind), d in zip(files, done, strict=True):
            on_event({"stage": "deploy", "message": f"{path.name}: {d.bytes_sent} bytes sent"})
            key = (
                "labels" if path == labels else kind if kind != "models" or path == Path(model) else "weights"
            )
            parts[key] = {"remote_path": d.remote_path, "sha256": d.sha256, "bytes_sent": d.bytes_sent}
    return {
        "device": prof.name,
        "model": parts["models"],
        "runner": parts["runner"],
        **({"lib": parts["lib"]} if "lib" in parts else {}),
        **({"weights": parts["weights"]} if "weights" in parts else {}),
        **({"labels": parts["labels"]} if "labels" in parts else {}),
        "bytes_sent": sum(p["bytes_sent"] for p in parts.values()),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def load_report(path: Path) -> Report:
    from edgeq.result import Report

    return Report.load(path)


def read_model_sidecar(model: Path) -> dict[str, Any] | None:
    from edgeq.export.sidecar import read_sidecar

    return read_sidecar(model)


# ------------------------------------------------------------------------------------------------
# Farm


def farm_plan(farm_toml: Path, profiles: tuple[Path, ...] = ()) -> Any:
    """FARM.toml read and validated (``edgeq.farm.plan.Plan``); a bad file is one UserInputError."""
    from edgeq.farm.plan import load_plan

    return load_plan(farm_toml, profiles)


def farm_run(
    farm_toml: Path,
    *,
    db: str | None = None,
    against: str | None = None,
    fresh: bool = False,
    profiles: tuple[Path, ...] = (),
    junit: Path | None = None,
    html: Path | None = None,
    on_event: EventCallback = noop,
) -> Any:
    """Run a farm: every model on every board, boards in parallel, each result committed as it
    completes; a killed run resumes when rerun. Returns ``edgeq.farm.run.RunOutcome`` (its
    ``exit_code``: 0, 3 when a board failed, 4 when a verdict regressed)."""
    from edgeq.farm import results_api
    from edgeq.farm.plan import load_plan
    from edgeq.farm.run import run_farm
    from edgeq.farm.store import open_store

    for path, flag in ((junit, "--junit"), (html, "--html")):
        if path is not None:
            check_writable_file(Path(path), flag)
    plan = load_plan(farm_toml, profiles)
    if junit is not None and not (against or plan.against):
        raise UserInputError(
            "--junit needs verdicts to report",
            "pass --against NAME (a baseline), or set against in FARM.toml",
        )
    outcome = run_farm(plan, db=db, against=against, fresh=fresh, on_event=on_event)
    if junit is not None or html is not None:
        with open_store(db or plan.store) as store:
            if junit is not None and outcome.comparison is not None:
                results_api.write_junit(outcome.comparison, Path(junit))
            if html is not None:
                subject = outcome.comparison if outcome.comparison is not None else outcome.run.id
                results_api.write_html(store, subject, Path(html))
    return outcome


def farm_runs(*, db: str | None = None, farm: str | None = None, limit: int | None = 50) -> list[Any]:
    """The store's runs, newest first (``edgeq.farm.store.RunInfo``)."""
    from edgeq.farm import results_api
    from edgeq.farm.store import open_store

    with open_store(db) as store:
        return results_api.runs(store, farm=farm, limit=limit)


def farm_show(run: str, *, db: str | None = None) -> dict[str, Any]:
    """A run and one line per (model, device) (``edgeq.farm.run/1``)."""
    from edgeq.farm import results_api
    from edgeq.farm.store import open_store

    with open_store(db) as store:
        return results_api.show(store, run)


def farm_export(run: str, *, db: str | None = None) -> dict[str, Any]:
    """A run and every result whole, raw samples included (``edgeq.farm.export/1``)."""
    from edgeq.farm import results_api
    from edgeq.farm.store import open_store

    with open_store(db) as store:
        return results_api.export(store, run)


def farm_baseline_set(run: str, *, name: str = "main", db: str | None = None) -> Any:
    """Point the baseline ``name`` at ``run``; returns the run (``RunInfo``)."""
    from edgeq.farm import results_api
    from edgeq.farm.store import open_store

    with open_store(db) as store:
        return results_api.baseline_set(store, run, name=name)


def farm_compare(
    run: str,
    *,
    against: str = "main",
    db: str | None = None,
    farm_toml: Path | None = None,
    junit: Path | None = None,
    html: Path | None = None,
) -> Any:
    """Verdicts of ``run`` against a baseline (``edgeq.farm.verdict.Comparison``; ``gate_failed``:
    exit 4). Thresholds: FARM.toml's ``[thresholds]`` when given, else the run's own, else defaults."""
    from edgeq.farm import results_api
    from edgeq.farm.store import open_store
    from edgeq.farm.verdict import Thresholds

    for path, flag in ((junit, "--junit"), (html, "--html")):
        if path is not None:
            check_writable_file(Path(path), flag)
    with open_store(db) as store:
        thresholds = None
        if farm_toml is not None:
            thresholds = farm_plan(farm_toml).thresholds
        else:
            meta = store.run(store.resolve_run(run)).meta
            if isinstance(meta.get("thresholds"), dict):
                thresholds = Thresholds.from_toml(meta["thresholds"], f"run {run}")
        comparison = results_api.compare(store, run, against=against, thresholds=thresholds)
        if junit is not None:
            results_api.write_junit(comparison, Path(junit))
        if html is not None:
            results_api.write_html(store, comparison, Path(html))
    return comparison
