"""``edgeq compile MODEL --delegate openvino``: nothing to do for current OpenVINO, IR for an NCS2.

Current releases read the ``.tflite`` on the device (their TFLite front end), so for CPU, GPU, NPU and
AUTO the model ships as it is (after checking that the front end reads every op). A Movidius NCS2
(device ``MYRIAD``) needs OpenVINO 2022.3, which has no TFLite front end: the host converts the
model with its own OpenVINO into IR, ``<stem>.xml`` plus ``<stem>.bin`` side by side, which the
runner reads there with the 2022.3 API.

IR compatibility with 2022.3, as far as it can be checked here: the current ``ov.save_model``
writes IR version 11, the format 2022.1 introduced and 2022.3 reads; every layer names its opset,
and 2022.3 knows opset1 to opset10. :func:`ir_2022_3_problems` reads the written XML and refuses a
model that uses a newer opset, an extension op or a dynamic input shape (MYRIAD runs static shapes
only), so the stick never receives an IR its runtime cannot parse. Weights are kept in their own
precision (``compress_to_fp16=False``): the fp16 compression markers of newer releases are not part
of the 2022.3 format. What could not be checked on this host: reading the IR with 2022.3's Python
API (its wheels are for Python ≤ 3.10) and compiling it for MYRIAD (no stick, and 2022.3's wheels
lack the MYRIAD plugin anyway).

The runner needs the input and output quantization (scale, zero point) and the ``.tflite``'s op
names, which IR does not carry: they travel as one JSON record in the IR's ``rt_info`` under
``edgeq`` (an element 2022.3's reader keeps as model metadata; the runner parses the XML itself).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from edgeq import tflite
from edgeq.delegates.delegate import CompileResult
from edgeq.delegates.openvino.coverage import core, openvino, tflite_path, untranslated_ops, version
from edgeq.errors import UserInputError
from edgeq.files import atomic_path, atomic_write, sha256_file
from edgeq.runner.delegates.openvino import IR_RT_INFO_KEY, ov_error_text

NAME = "openvino"
IR_DEVICES = ("MYRIAD",)  # devices whose OpenVINO (2022.3) needs IR instead of .tflite
MAX_OPSET_2022_3 = 10
IR_RECORD_SCHEMA = "edgeq.openvino-ir/1"


def ir_2022_3_problems(xml_text: str) -> list[str]:
    """What in an IR would stop OpenVINO 2022.3 (IR v10/v11, opset1..opset10, static shapes for MYRIAD)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        return [f"not well-formed XML: {exc}"]
    problems = []
    if root.get("version") not in ("10", "11"):
        problems.append(f"IR version {root.get('version')} (2022.3 reads 10 and 11)")
    newer: dict[str, str] = {}
    for layer in root.iter("layer"):
        kind, opset = layer.get("type", "?"), layer.get("version", "")
        m = re.fullmatch(r"opset(\d+)", opset)
        if m is None or int(m.group(1)) > MAX_OPSET_2022_3:
            newer[kind] = opset or "no opset"
        if kind == "Parameter":
            data = layer.find("data")
            shape = data.get("shape", "") if data is not None else ""
            if "?" in shape or "-1" in shape.split(","):
                problems.append(f"input {layer.get('name')} has a dynamic shape [{shape}]")
    if newer:
        problems.append(
            "ops outside opset1-opset10: " + ", ".join(f"{k} ({v})" for k, v in sorted(newer.items()))
        )
    return problems


def _quant_record(tensor: Any, fl: tflite.TFLiteFile) -> dict[str, Any]:
    q = tensor.quantization
    scale = float(q.scale[0]) if q is not None and q.scale is not None and len(q.scale) else 0.0
    zero = int(q.zeroPoint[0]) if q is not None and q.zeroPoint is not None and len(q.zeroPoint) else 0
    name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name or "")
    return {
        "name": name,
        "dtype": fl.tensor_type(tensor),
        "shape": [int(d) for d in (tensor.shape if tensor.shape is not None else [])],
        "scale": scale,
        "zero_point": zero,
    }


def write_ir(model: Path, out_dir: Path) -> Path:
    """Convert ``model`` (.tflite) to ``out_dir/<stem>.xml`` + ``<stem>.bin`` for OpenVINO 2022.3.

    Both files are written atomically, the ``.bin`` first: a reader never sees an ``.xml`` whose
    weights are not complete beside it. Raises UserInputError when OpenVINO cannot read the model
    or the IR would not suit 2022.3. Returns the ``.xml`` path.
    """
    model = tflite.check_file(Path(model))
    fl = tflite.read_model(model)
    ov = openvino()
    missing = untranslated_ops(model)
    if missing:
        names = [fl.op_name(op) for op in fl.subgraph.operators]
        listed = ", ".join(f"{names[i]} (op {i})" for i in sorted(missing))
        raise UserInputError(
            f"OpenVINO {version()} cannot convert {model.name}: no translator for {listed}",
            "replace those ops (edgeq inspect MODEL --delegate openvino lists them), or use another delegate",
        )
    ov_core = core()
    with tflite_path(model) as path:
        try:
            ov_model = ov_core.read_model(str(path))
        except Exception as exc:
            raise UserInputError(
                f"OpenVINO {version()} cannot read {model.name}: {ov_error_text(exc)}",
                "export the model again",
            ) from None
    fixed = {}
    for port in ov_model.inputs:
        shape = port.get_partial_shape()
        if shape.is_dynamic:
            fixed[port] = [int(d.get_length()) if d.is_static else 1 for d in shape]
    if fixed:
        ov_model.reshape(fixed)  # MYRIAD compiles static shapes only; a Keras batch of -1 becomes 1
    sg = fl.subgraph
    record = {
        "schema": IR_RECORD_SCHEMA,
        "source": model.name,
        "source_sha256": sha256_file(model),
        "written_by": f"openvino {version()}",
        "ops": [fl.op_name(op) for op in sg.operators],
        "inputs": [_quant_record(sg.tensors[i], fl) for i in sg.inputs],
        "outputs": [_quant_record(sg.tensors[i], fl) for i in sg.outputs],
    }
    ov_model.set_rt_info(json.dumps(record, separators=(",", ":")), [IR_RT_INFO_KEY])
    out_dir = Path(out_dir)
    xml_path = out_dir / f"{model.stem}.xml"
    with atomic_path(out_dir / f"{model.stem}.bin") as tmp_bin:
        tmp_xml = tmp_bin.with_suffix(".xml")
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        xml_text = tmp_xml.read_text(encoding="utf-8")
        problems = ir_2022_3_problems(xml_text)
        if problems:
            raise UserInputError(
                f"{model.name} converts to an IR that OpenVINO 2022.3 (Movidius NCS2) cannot load: "
                + "; ".join(problems),
                "the NCS2 cannot run this model: use a profile with a current OpenVINO (intel-npu, CPU)",
            )
        try:
            ov_core.read_model(str(tmp_xml))  # what was written reads back
        except Exception as exc:
            raise RuntimeError(
                f"the IR written for {model.name} does not read back: {ov_error_text(exc)}"
            ) from exc
    atomic_write(xml_path, xml_text)
    return xml_path


def compile_model(
    model: Path, out_dir: Path, *, device: str = "CPU", timeout_s: float = 600.0
) -> CompileResult:
    """For ``device`` MYRIAD: IR in ``out_dir`` (see :func:`write_ir`); otherwise the model itself,
    once the front end has read every op. The conversion runs in-process in well under a second for
    edgeq's models, so ``timeout_s`` (the protocol's) is not needed."""
    model = tflite.check_file(Path(model))
    device = (device or "CPU").strip().upper()
    v = version()
    if device in IR_DEVICES:
        xml = write_ir(model, out_dir)
        return CompileResult(
            NAME,
            xml,
            log=(
                f"converted {model.name} to OpenVINO IR v11 (opset1-opset10) for OpenVINO 2022.3: "
                f"{xml.name} + {xml.with_suffix('.bin').name}; deploy both side by side"
            ),
            compiler=f"openvino {v} (ov.save_model)",
        )
    missing = untranslated_ops(model)
    if missing:
        fl = tflite.read_model(model)
        names = [fl.op_name(op) for op in fl.subgraph.operators]
        raise UserInputError(
            f"OpenVINO {v} cannot read {model.name}: no translator for "
            + ", ".join(f"{names[i]} (op {i})" for i in sorted(missing)),
            "replace those ops, or use delegate xnnpack",
        )
    return CompileResult(
        NAME,
        model,
        log=f"nothing to compile: OpenVINO {v} reads {model.name} directly and compiles it for {device} on the device",
        compiler=f"openvino {v}",
    )
