"""``edgeq inspect``: what is in a ``.tflite`` (ops, tensors, quantization, the full-int8 verdict), its
sidecar, and with ``debug_quant`` the per-layer quantization error of that file against its float
source (:mod:`edgeq.export.debug_quant`) — with the run's other quantization (QAT and PTQ) side by
side when the sidecar names it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.errors import UserInputError
from edgeq.export.sidecar import read_sidecar, related_models, resolve_source
from edgeq.export.tflite_model import describe

DEBUG_SAMPLES = 64
# Related models compared side by side, by the role the sidecar gives them.
SIDE_BY_SIDE = ("qat", "ptq")
_ROW_KEYS = ("rmse", "rmse_per_scale", "mean_error", "max_abs_error", "saturated_fraction")


def inspect_model(
    model: Path, *, debug_quant: bool = False, data: str | Path | None = None, samples: int = DEBUG_SAMPLES
) -> dict[str, Any]:
    """``data``: the debug samples' source instead of the model's own dataset (its test split)."""
    info = describe(model)
    out = info.to_dict()
    side = read_sidecar(model)
    if side is not None:
        out["sidecar"] = {
            k: side.get(k) for k in ("accuracy", "labels", "recipe", "versions", "preprocessing", "source")
        }
    if debug_quant:
        out.update(debug_quant_report(Path(model), side, data, samples))
    return out


def _quantization(side: dict[str, Any] | None) -> str:
    recipe = (side or {}).get("recipe") or {}
    q = str(recipe.get("quantization") or "")
    src = (side or {}).get("source") or {}
    return q or ("qat" if src.get("kind") == "qat" else "ptq")


def _compare_one(model: Path, side: dict[str, Any] | None, x: Any, y: Any) -> dict[str, Any]:
    from edgeq.export.debug_quant import compare
    from edgeq.models import load_keras_file

    hint = "export it with 'edgeq export' or 'edgeq pipeline', which record the source in the sidecar"
    if side is None:
        raise UserInputError(f"{model.name} has no sidecar ({model.stem}.edgeq.json) naming its source", hint)
    src = resolve_source(model, side)
    if src is None:
        raise UserInputError(f"the sidecar of {model.name} names no Keras model it was converted from", hint)
    if not src.is_file():
        raise UserInputError(
            f"{src.name}, the Keras model {model.name} was converted from, is missing ({src})",
            "keep it next to the .tflite as the export left it, or export the model again",
        )
    result = compare(model, load_keras_file(src), x, y)
    result["file"] = model.name
    result["quantization"] = _quantization(side)
    result["source"] = {"file": src.name, "path": str(src), "kind": ((side.get("source") or {}).get("kind"))}
    return result


def debug_quant_report(
    model: Path, side: dict[str, Any] | None, data: str | Path | None, samples: int = DEBUG_SAMPLES
) -> dict[str, Any]:
    """``{"quant_debug": rows, "quant_debug_models": [...], "quant_debug_data": {...}}``.

    ``rows``: one per layer of the inspected file (its error against its own float source);
    with a related QAT / PTQ model, the same layer's ``ptq_rmse_per_scale`` etc. side by side.
    ``quant_debug_models``: per compared file its source, output agreement, accuracy on the debug
    samples, and the tensors not compared with why.
    """
    from edgeq.export.model_data import model_test_data

    if side is None:
        raise UserInputError(
            f"{model.name} has no sidecar ({model.stem}.edgeq.json) naming its source",
            "export it with 'edgeq export' or 'edgeq pipeline', which record the source in the sidecar",
        )
    md = model_test_data(model, data, limit=samples)
    main = _compare_one(model, side, md.x, md.y)
    models = [main]
    rows = [dict(r) for r in main["layers"]]
    for role, path in related_models(model, side).items():
        if role not in SIDE_BY_SIDE or role == main["quantization"]:
            continue
        other = _compare_one(path, read_sidecar(path), md.x, md.y)
        other["role"] = role
        models.append(other)
        theirs = {r["layer"]: r for r in other["layers"]}
        for r in rows:
            o = theirs.get(r["layer"])
            if o is not None:
                r.update({f"{role}_{k}": o.get(k) for k in _ROW_KEYS})
    main["role"] = "inspected"
    return {
        "quant_debug": rows,
        "quant_debug_models": [
            {k: m[k] for k in ("file", "role", "quantization", "source", "output", "not_compared")}
            for m in models
        ],
        "quant_debug_data": {
            "samples": len(md.y),
            "description": md.description,
            "split": md.split,
            "warnings": list(md.warnings),
        },
    }
