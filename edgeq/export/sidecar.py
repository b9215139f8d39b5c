"""A model's sidecar, ``model.edgeq.json`` next to ``model.tflite``: the recipe that made it, hashes,
versions, its input/output quantization, labels, the preprocessing a device must apply, accuracies.

Paths in a sidecar work from any directory: the Keras source of the model is recorded relative to the
sidecar (and absolute, as a fallback), related models (the PTQ twin of a QAT model) by file name,
and a dataset file or folder by its absolute path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeq.errors import UserInputError
from edgeq.files import atomic_write, read_json, sha256_file, write_json

SIDECAR_SCHEMA = "edgeq.model/1"
LABELS_SUFFIX = ".labels.txt"
# The rule every edgeq runner and the host use (edgeq.runner.measure.quantize), for a device's code.
QUANTIZE_RULE = "q = clamp(round_half_away_from_zero(x / scale) + zero_point, -128, 127)"


def sidecar_path(model_path: Path) -> Path:
    """``model.tflite`` → ``model.edgeq.json``."""
    return model_path.with_name(model_path.stem + ".edgeq.json")


def read_sidecar(model_path: Path) -> dict[str, Any] | None:
    p = sidecar_path(model_path)
    if not p.exists():
        return None
    data = read_json(p, "sidecar", "re-export the model with 'edgeq export'")
    return data if isinstance(data, dict) else None


def _io(info: Any, index: int) -> dict[str, Any]:
    t = info.tensor(index)
    return {
        "shape": list(t.shape),
        "dtype": t.dtype,
        "scale": t.scale[0] if t.scale else None,
        "zero_point": t.zero_point[0] if t.zero_point else None,
    }


def source_record(source: Path, sidecar_dir: Path | None) -> dict[str, Any]:
    """Where the Keras model a .tflite was converted from is, relative to the sidecar and absolute."""
    from edgeq.models import is_qat

    absolute = Path(source).resolve()
    return {
        "file": os.path.relpath(absolute, Path(sidecar_dir).resolve()) if sidecar_dir else None,
        "path": str(absolute),
        "sha256": sha256_file(absolute),
        "kind": "qat" if is_qat(absolute) else "float",
    }


def preprocessing_record(dataset: Mapping[str, Any], input_io: Mapping[str, Any]) -> dict[str, Any]:
    """What a device must do to an image before the model: the dataset's preprocessing (colour mode,
    resize, scaling) and the quantization of the model's input."""
    pre = dict(dataset.get("preprocessing") or {})
    pre["quantize"] = {
        "dtype": input_io.get("dtype"),
        "scale": input_io.get("scale"),
        "zero_point": input_io.get("zero_point"),
        "rule": QUANTIZE_RULE,
    }
    mixed = [w for w in dataset.get("warnings") or [] if "mixes" in str(w)]
    if mixed:
        pre["warning"] = mixed[0]
    return pre


def build_sidecar(
    *,
    out_name: str,
    info: Any,
    dataset: dict[str, Any],
    labels: list[str],
    recipe: dict[str, Any],
    accuracy: dict[str, float],
    source: Path | None = None,
    sidecar_dir: Path | None = None,
    related: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The sidecar of the model described by ``info`` (an :class:`~edgeq.export.tflite_model.ModelInfo`).

    ``source``: the Keras model the .tflite was converted from (a float model for PTQ, the QAT model
    for QAT), recorded relative to ``sidecar_dir`` (the directory the sidecar is written to).
    ``related``: other models of the same run by role, file names in ``sidecar_dir``
    (``{"ptq": "model_ptq.tflite"}``): ``inspect --debug-quant`` shows them side by side.
    """
    input_io = _io(info, info.inputs[0])
    side: dict[str, Any] = {
        "schema": SIDECAR_SCHEMA,
        "model": {"file": out_name, "sha256": info.sha256, "size_bytes": info.size_bytes},
        "input": input_io,
        "output": _io(info, info.outputs[0]),
        "labels": list(labels),
        "preprocessing": preprocessing_record(dataset, input_io),
        "dataset": dataset,
        "recipe": recipe,
        "accuracy": accuracy,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if source is not None:
        side["source"] = source_record(source, sidecar_dir)
    if related:
        side["related"] = dict(related)
    return side


def write_sidecar(
    model_path: Path,
    *,
    dataset: Any,
    recipe: dict[str, Any],
    accuracy: dict[str, float],
    source: Path | None = None,
    related: Mapping[str, str] | None = None,
    sidecar: Path | None = None,
) -> dict[str, Any]:
    """Describe ``model_path`` and write its sidecar next to it (``sidecar``: that path, which must be
    :func:`sidecar_path` of the model, given when the caller records what it writes); returns it.

    ``dataset`` is the :class:`~edgeq.data.Dataset` the model was made from.

    >>> write_sidecar(out / "model_ptq.tflite", dataset=ds, source=out / "student.keras",
    ...               recipe={"steps": ["ptq"], "quantization": "ptq"}, accuracy={"int8": 0.97},
    ...               related={"qat": "model.tflite"})
    """
    from edgeq.export.tflite_model import describe

    side = build_sidecar(
        out_name=model_path.name,
        info=describe(model_path),
        dataset=dataset.summary(),
        labels=list(dataset.labels),
        recipe=recipe,
        accuracy=accuracy,
        source=source,
        sidecar_dir=model_path.parent,
        related=related,
    )
    dest = sidecar_path(model_path)
    if sidecar is not None and Path(sidecar).resolve() != dest.resolve():
        raise ValueError(f"the sidecar of {model_path.name} is {dest.name}, not {Path(sidecar).name}")
    write_json(dest, side)
    return side


def resolve_source(model_path: Path, side: Mapping[str, Any] | None) -> Path | None:
    """The Keras model ``model_path`` was converted from, found from any working directory.

    Newer sidecars name it relative to the sidecar (then absolute); older ones have
    ``recipe.float_model`` (the pipeline: relative to its output directory) or ``recipe.source_model``
    (``edgeq export``: as typed, relative to where the command ran).
    """
    side = side or {}
    here = Path(model_path).resolve().parent
    candidates: list[Path] = []
    src = side.get("source") or {}
    if src.get("file"):
        candidates.append(here / src["file"])
    if src.get("path"):
        candidates.append(Path(src["path"]))
    recipe = side.get("recipe") or {}
    for key in ("source_model", "float_model"):
        if recipe.get(key):
            p = Path(recipe[key])
            candidates += [p] if p.is_absolute() else [here / p, here / p.name, p.resolve()]
    found = next((c for c in candidates if c.is_file()), candidates[0] if candidates else None)
    return Path(os.path.normpath(found)) if found is not None else None


def related_models(model_path: Path, side: Mapping[str, Any] | None) -> dict[str, Path]:
    """The related models the sidecar names (role → path), those that exist."""
    here = Path(model_path).resolve().parent
    out = {}
    for role, name in ((side or {}).get("related") or {}).items():
        p = here / str(name)
        if p.is_file() and p.resolve() != Path(model_path).resolve():
            out[str(role)] = p
    return out


# ------------------------------------------------------------------------------------------------
# Labels for a device


def labels_text(side: Mapping[str, Any]) -> str:
    """One label per line, line k naming output k (the convention of TFLite's labels files)."""
    labels = [str(label) for label in side.get("labels") or []]
    bad = [label for label in labels if "\n" in label or "\r" in label]
    if bad:
        raise UserInputError(
            f"label {bad[0]!r} contains a line break and cannot be written one per line",
            "rename the class (image folder name or the .npz 'labels') and export again",
        )
    return "".join(label + "\n" for label in labels)


def labels_path(model_path: Path, dest_dir: Path | None = None) -> Path:
    """``model.tflite`` → ``model.labels.txt`` (in ``dest_dir``, else next to the model)."""
    model_path = Path(model_path)
    return Path(dest_dir or model_path.parent) / (model_path.stem + LABELS_SUFFIX)


def write_labels_file(model_path: Path, dest_dir: Path | None = None) -> Path | None:
    """Write the labels of ``model_path`` (from its sidecar) as ``<stem>.labels.txt`` in ``dest_dir``
    (default: next to the model); None when the model has no sidecar or the sidecar no labels.

    The output's class k is line k. A sidecar whose labels do not match the model's output size
    is a UserInputError (a device would name classes wrongly).
    """
    side = read_sidecar(Path(model_path))
    if not side or not side.get("labels"):
        return None
    n_out = ((side.get("output") or {}).get("shape") or [0])[-1]
    if n_out and len(side["labels"]) != n_out:
        raise UserInputError(
            f"the sidecar of {Path(model_path).name} has {len(side['labels'])} labels for {n_out} outputs",
            "re-export the model with the data it was trained on (edgeq export --data ...)",
        )
    dest = labels_path(model_path, dest_dir)
    atomic_write(dest, labels_text(side))
    return dest


def versions() -> dict[str, str]:
    """Versions of everything that shapes a model's numbers."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in (
        "edgeq",
        "tensorflow",
        "tf-keras",
        "tensorflow-model-optimization",
        "ai-edge-litert",
        "numpy",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out
