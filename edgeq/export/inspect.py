"""``edgeq inspect``: what is in a ``.tflite`` (ops, tensors, quantization, the full-int8 verdict), its
sidecar, and with ``debug_quant`` the per-layer quantization error against its float source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq.data import DataOptions
from edgeq.errors import UserInputError
from edgeq.export import convert
from edgeq.export.sidecar import read_sidecar
from edgeq.export.tflite_model import describe


def inspect_model(model: Path, *, debug_quant: bool = False) -> dict[str, Any]:
    info = describe(model)
    out = info.to_dict()
    side = read_sidecar(model)
    if side is not None:
        out["sidecar"] = {k: side.get(k) for k in ("accuracy", "labels", "recipe", "versions")}
    if debug_quant:
        out["quant_debug"] = _quant_debug(model, side)
    return out


def _quant_debug(model: Path, side: dict[str, Any] | None) -> list[dict[str, Any]]:
    from edgeq.models import load_user_model

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
    return convert.quant_debug(
        load_user_model(fp, ds.input_shape, ds.num_classes), ds.x_train, ds.x_test[:64]
    )
