"""Per-layer quantization error of a given int8 ``.tflite`` against the Keras model it was converted
from (its float source: the float model for PTQ, the QAT model — float arithmetic with simulated
quantization — for QAT).

The int8 file itself runs, not a fresh conversion: every activation tensor is read out (LiteRT's
interpreter with ``experimental_preserve_all_tensors`` and builtin kernels; a model with EDGEQ_*
custom ops through the runner's custom-op path, on a copy of the file whose subgraph outputs are
those tensors), dequantized with its own scale and zero point, and compared with the activation of
the Keras layer it belongs to.

Matching a tensor to its layer: the converter keeps the Keras layer names in tensor names
(``student/conv2d_3/Relu;student/conv2d_3/BiasAdd;...``; QAT layers as ``quant_conv2d_3``). A tensor
belongs to the last layer (in the model's order) its name mentions — a conv fused with a following
ReLU layer is named after both and compared with the ReLU's output — and must have that layer's
output shape. The model's input and output tensors are matched as such. Tensors that name no
layer, have another shape, or are an earlier result inside a layer are listed as not compared,
with the reason.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq import tflite
from edgeq.errors import UserInputError
from edgeq.export.tflite_model import ModelInfo, TensorInfo, describe

MAX_OUTPUTS = 16  # the custom-op path's shim handles at most this many model outputs


@dataclass(frozen=True)
class Match:
    tensor: TensorInfo
    layer: str  # the Keras layer's own name (a QAT wrapper's inner layer: "conv2d_3", not "quant_...")
    keras_layer: Any  # None for the model's input


def _canonical(layer: Any) -> str:
    inner = getattr(layer, "layer", None)  # tfmot's QuantizeWrapper
    return str(inner.name) if inner is not None and hasattr(inner, "name") else str(layer.name)


def _op_of(info: ModelInfo) -> dict[int, str]:
    return {t: op.op for op in info.ops for t in op.outputs}


def match_tensors(info: ModelInfo, model: Any) -> tuple[list[Match], list[dict[str, Any]]]:
    """Activation tensors of ``info`` matched to layers of the Keras ``model``; and the tensors not
    compared, each with why."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    order = {layer.name: i for i, layer in enumerate(layers)}
    by_name = {layer.name: layer for layer in layers}
    output_layer = by_name.get(model.output_names[0]) if getattr(model, "output_names", None) else layers[-1]
    produced = _op_of(info)
    matches: dict[str, Match] = {}
    skipped: list[dict[str, Any]] = []
    for idx in info.inputs:
        t = info.tensor(idx)
        name = model.input_names[0] if getattr(model, "input_names", None) else "input"
        matches[f"input:{name}"] = Match(t, str(name), None)
    for op in info.ops:
        for idx in op.outputs:
            t = info.tensor(idx)
            if t.constant:
                continue
            if idx in info.outputs and output_layer is not None:
                layer = output_layer
            else:
                named = [n for tok in re.split(r"[;/:]", t.name) if (n := _layer_token(tok, order))]
                if not named:
                    skipped.append(_skip(t, produced, "its name names no layer of the Keras model"))
                    continue
                layer = by_name[max(named, key=order.__getitem__)]
            if len(getattr(layer, "_inbound_nodes", ())) > 1:
                skipped.append(_skip(t, produced, f"layer {_canonical(layer)} is applied more than once"))
                continue
            want = tuple(int(d) for d in layer.output_shape[1:]) if _single(layer) else None
            if want != tuple(t.shape[1:]):
                skipped.append(
                    _skip(t, produced, f"its shape {list(t.shape)} is not layer {_canonical(layer)}'s {want}")
                )
                continue
            key = layer.name
            if key in matches:  # an earlier result inside the same layer: keep the layer's last tensor
                old = matches[key].tensor
                skipped.append(
                    _skip(old, produced, f"an intermediate result inside layer {_canonical(layer)}")
                )
            matches[key] = Match(t, _canonical(layer), layer)
    return list(matches.values()), skipped


def _layer_token(token: str, order: dict[str, int]) -> str | None:
    """The Keras layer a name part stands for: itself, or across QAT's renaming (``quant_conv2d`` in
    a QAT export ↔ ``conv2d`` in its float model, and back)."""
    if token in order:
        return token
    if token.startswith("quant_") and token[6:] in order:
        return token[6:]
    if "quant_" + token in order:
        return "quant_" + token
    return None


def _single(layer: Any) -> bool:
    shape = getattr(layer, "output_shape", None)
    return isinstance(shape, tuple) and (not shape or not isinstance(shape[0], tuple | list))


def _skip(t: TensorInfo, produced: dict[int, str], why: str) -> dict[str, Any]:
    return {"tensor": t.name, "index": t.index, "op": produced.get(t.index, ""), "reason": why}


# ------------------------------------------------------------------------------------------------
# Running the int8 model with every activation read out


def capture(path: Path, x: np.ndarray, tensors: list[int]) -> dict[int, np.ndarray]:
    """The raw (int8) values of ``tensors`` for each sample of float ``x``: tensor → (N, *shape[1:])."""
    from edgeq.runner.measure import quantize
    from edgeq.runner.modelfile import edgeq_ops, read_model

    data = tflite.read_bytes(path)
    details = read_model(data)
    inp = details["inputs"][0]
    scale, zp = inp["quantization"]
    feed = x if inp["dtype"] == np.float32 else quantize(x, scale, zp, inp["dtype"])
    # The input is what was fed (a runtime may not read an input back as an output).
    input_index = int(tflite.parse(data).subgraph.inputs[0])
    inside = [t for t in tensors if t != input_index]
    if edgeq_ops(details["custom_ops"]):
        out = _capture_custom(path, data, feed, inside)
    else:
        out = _capture_builtin(data, feed, inside)
    if input_index in tensors:
        out[input_index] = feed
    return out


def _capture_builtin(data: bytes, feed: np.ndarray, tensors: list[int]) -> dict[int, np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeq.tfenv import quiet_native

    with quiet_native():
        interp = Interpreter(
            model_content=data,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            experimental_preserve_all_tensors=True,
        )
        interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out: dict[int, np.ndarray] = {}
    for i in range(len(feed)):
        interp.set_tensor(inp["index"], feed[i : i + 1])
        interp.invoke()
        for t in tensors:
            v = interp.get_tensor(t)
            if t not in out:
                out[t] = np.empty((len(feed), *v.shape[1:]), dtype=v.dtype)
            out[t][i] = v[0]
    return out


def expose_tensors(data: bytes, tensors: list[int]) -> bytes:
    """A copy of the model whose subgraph outputs are ``tensors`` (each computed as before), with the
    custom ops' constant data 64-byte aligned as LiteRT needs it."""
    from edgeq.ops.rewrite import _serialize_aligned

    f = tflite.parse(data)
    model, sg = f.model, f.subgraph
    sg.outputs = np.array(tensors, dtype=np.int32)
    # The signature names the original outputs only; the runtime reads the subgraph's.
    model.signatureDefs = None
    aligned = sorted(
        {
            sg.tensors[i].buffer
            for op in sg.operators
            if tflite.op_name(model, op).startswith("EDGEQ_")
            for i in list(op.inputs)[1:]
            if i >= 0
        }
    )
    return _serialize_aligned(model, aligned)


def _capture_custom(path: Path, data: bytes, feed: np.ndarray, tensors: list[int]) -> dict[int, np.ndarray]:
    from edgeq.ops.build import build_library
    from edgeq.runner.custom import open_custom
    from edgeq.runner.modelfile import edgeq_ops, read_model
    from edgeq.runner.protocol import RunnerError
    from edgeq.tfenv import quiet_native

    lib = str(build_library())
    out: dict[int, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-debug-") as td:
        for start in range(0, len(tensors), MAX_OUTPUTS):
            group = tensors[start : start + MAX_OUTPUTS]
            probe = Path(td) / f"{path.stem}.{start}.tflite"
            probe.write_bytes(expose_tensors(data, group))
            info = read_model(probe.read_bytes())
            try:
                with quiet_native():
                    interp, _, _ = open_custom(str(probe), info, edgeq_ops(info["custom_ops"]), lib, "auto")
            except RunnerError as exc:
                raise UserInputError(exc.message, exc.hint) from None
            try:
                for k, t in enumerate(group):
                    shape = tuple(int(d) for d in info["outputs"][k]["shape"])
                    out[t] = np.empty((len(feed), *shape[1:]), dtype=info["outputs"][k]["dtype"])
                for i in range(len(feed)):
                    interp.set_tensor(0, feed[i : i + 1])
                    interp.invoke()
                    for k, t in enumerate(group):
                        out[t][i] = interp.get_tensor(k)[0]
            finally:
                interp.close()
    return out


# ------------------------------------------------------------------------------------------------
# The comparison


def keras_activations(model: Any, layers: list[Any], x: np.ndarray) -> list[np.ndarray]:
    """The outputs of ``layers`` of ``model`` on ``x`` (inference mode)."""
    from edgeq import tfenv

    k = tfenv.keras()
    if not layers:
        return []
    probe = k.Model(model.inputs, [layer.output for layer in layers])
    with tfenv.quiet_native():
        outs = probe.predict(x, batch_size=64, verbose=0)
    return [np.asarray(o) for o in (outs if isinstance(outs, list) else [outs])]


def _errors(q: np.ndarray, ref: np.ndarray, t: TensorInfo) -> dict[str, Any]:
    scale = float(t.scale[0]) if t.scale else 1.0
    zp = int(t.zero_point[0]) if t.zero_point else 0
    deq = (q.astype(np.float32) - zp) * np.float32(scale)
    err = (deq - ref.astype(np.float32)).astype(np.float64)
    mse = float(np.mean(err**2))
    info = np.iinfo(q.dtype) if np.issubdtype(q.dtype, np.integer) else None
    row: dict[str, Any] = {
        "scale": scale,
        "zero_point": zp,
        "rmse": float(np.sqrt(mse)),
        "rmse_per_scale": float(np.sqrt(mse) / scale) if t.scale else None,
        "mean_error": float(np.mean(err)),
        "mean_squared_error": mse,
        "max_abs_error": float(np.max(np.abs(err))) if err.size else 0.0,
        "float_min": float(ref.min()) if ref.size else 0.0,
        "float_max": float(ref.max()) if ref.size else 0.0,
    }
    if info is not None and t.scale:
        lo, hi = (info.min - zp) * scale, (info.max - zp) * scale
        outside = (ref < lo - scale / 2) | (ref > hi + scale / 2)
        row["saturated_fraction"] = float(np.mean(outside)) if ref.size else 0.0
    return row


def compare(path: Path, model: Any, x: np.ndarray, y: np.ndarray | None = None) -> dict[str, Any]:
    """Per-layer error of the int8 model at ``path`` against the Keras ``model`` on samples ``x``.

    Returns ``{"layers": [row per matched tensor, in op order], "not_compared": [...], "output": {...}}``;
    a row has the layer, tensor, op, shape, scale, zero point, rmse, rmse in quantization steps
    (``rmse_per_scale``; about 0.29 = 1/√12 is the rounding error alone), mean error (bias),
    max |error|, the float range and the share of float values outside the int8 range.
    """
    info = describe(Path(path))
    want = tuple(int(d) for d in model.input_shape[1:])
    have = tuple(info.tensor(info.inputs[0]).shape[1:])
    if want != have:
        raise UserInputError(
            f"{Path(path).name} takes {list(have)} but its Keras source takes {list(want)}",
            "the sidecar names the wrong source model: re-export the model",
        )
    matches, skipped = match_tensors(info, model)
    produced = _op_of(info)
    raw = capture(Path(path), x, [m.tensor.index for m in matches])
    layered = [m for m in matches if m.keras_layer is not None]
    refs = dict(
        zip(
            [m.layer for m in layered],
            keras_activations(model, [m.keras_layer for m in layered], x),
            strict=False,
        )
    )
    rows = []
    for m in sorted(matches, key=lambda m: (m.keras_layer is not None, _position(info, m.tensor.index))):
        ref = x if m.keras_layer is None else refs[m.layer]
        row = {
            "layer": m.layer,
            "tensor": m.tensor.name,
            "index": m.tensor.index,
            "op": "input" if m.keras_layer is None else produced.get(m.tensor.index, ""),
            "shape": list(m.tensor.shape),
            **_errors(raw[m.tensor.index], ref, m.tensor),
        }
        rows.append(row)
    output: dict[str, Any] = {"samples": len(x)}
    out_match = next((m for m in matches if m.tensor.index == info.outputs[0]), None)
    if out_match is not None:
        q = raw[out_match.tensor.index].reshape(len(x), -1)
        f = refs[out_match.layer].reshape(len(x), -1)
        output["top1_agreement"] = float(np.mean(q.argmax(1) == f.argmax(1)))
        if y is not None:
            output["int8_accuracy"] = float(np.mean(q.argmax(1) == y))
            output["source_accuracy"] = float(np.mean(f.argmax(1) == y))
    return {"layers": rows, "not_compared": skipped, "output": output}


def _position(info: ModelInfo, tensor: int) -> int:
    for op in info.ops:
        if tensor in op.outputs:
            return op.index
    return -1
