"""A model's sidecar, ``model.edgeq.json`` next to ``model.tflite``: the recipe that made it, hashes,
versions, its input/output quantization, labels, the preprocessing a device must apply, accuracies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeq.files import read_json

SIDECAR_SCHEMA = "edgeq.model/1"


def sidecar_path(model_path: Path) -> Path:
    """``model.tflite`` → ``model.edgeq.json``."""
    return model_path.with_name(model_path.stem + ".edgeq.json")


def read_sidecar(model_path: Path) -> dict[str, Any] | None:
    p = sidecar_path(model_path)
    if not p.exists():
        return None
    data = read_json(p, "sidecar", "re-export the model with 'edgeq export'")
    return data if isinstance(data, dict) else None


def build_sidecar(
    *,
    out_name: str,
    info: Any,
    dataset: dict[str, Any],
    labels: list[str],
    recipe: dict[str, Any],
    accuracy: dict[str, float],
) -> dict[str, Any]:
    """The sidecar of the model described by ``info`` (an :class:`~edgeq.export.tflite_model.ModelInfo`)."""

    def io(index: int) -> dict[str, Any]:
        t = info.tensor(index)
        return {
            "shape": list(t.shape),
            "dtype": t.dtype,
            "scale": t.scale[0] if t.scale else None,
            "zero_point": t.zero_point[0] if t.zero_point else None,
        }

    return {
        "schema": SIDECAR_SCHEMA,
        "model": {"file": out_name, "sha256": info.sha256, "size_bytes": info.size_bytes},
        "input": io(info.inputs[0]),
        "output": io(info.outputs[0]),
        "labels": list(labels),
        "dataset": dataset,
        "recipe": recipe,
        "accuracy": accuracy,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


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
