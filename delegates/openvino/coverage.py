"""Which ops of a ``.tflite`` OpenVINO can run, asked of the host's own OpenVINO (offline).

Three questions, each answered by OpenVINO itself rather than by a table kept here:

1. Can its TFLite front end read every op? ``FrontEnd.convert_partially`` translates what it can and
   leaves one framework node per op it cannot, named by the op's index in subgraph 0.
2. Does the device support every node the model became? ``Core.query_model(model, device)`` maps the
   supported nodes to the device; when it is silent on some, each op is read alone (a one-op
   ``.tflite`` cut from the model) and queried, which relates the unsupported nodes to TFLite ops.
3. Is the device on this host at all? Only then can (2) be asked. An NPU, a GPU or an NCS2
   (MYRIAD, OpenVINO 2022.3 only) is usually on the board, not the host: the answer is then the
   front end's alone, and the run on the device reports what the device did.

OpenVINO runs a model whole on one device or not at all: an op marked ``cpu`` here is one that
stops the model from loading or compiling in OpenVINO, not one that would quietly run elsewhere.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeq import tflite
from edgeq.errors import UserInputError
from edgeq.placement import CPU, DELEGATE, Coverage, OpPlacement
from edgeq.runner.delegates.openvino import INSTALL_HINT, ov_error_text

NAME = "openvino"
WHOLE_MODEL_NOTE = (
    "OpenVINO compiles the whole model for one device and does not hand single ops to the CPU: "
    "an op marked cpu stops the model from loading or compiling in OpenVINO"
)


def openvino() -> Any:
    """The openvino module, or one UserInputError saying how to install it."""
    try:
        import openvino as ov
    except ImportError as exc:
        raise UserInputError(f"OpenVINO is not installed on this host ({exc})", INSTALL_HINT) from None
    return ov


def version() -> str:
    return str(openvino().get_version()).split("-")[0]


@functools.lru_cache(maxsize=1)
def core() -> Any:
    """One OpenVINO Core for the whole process, never freed: a Core's CPU plugin leaves the thread on
    an alternate signal stack of its own, which freeing the Core frees, and the next signal (Ctrl-C)
    then kills the process with SIGSEGV instead of raising KeyboardInterrupt (as in the runner)."""
    return openvino().Core()


@contextlib.contextmanager
def tflite_path(model: Path) -> Iterator[Path]:
    """``model`` under a name ending in .tflite: OpenVINO picks its reader by the suffix."""
    if model.suffix.lower() == ".tflite":
        yield model
        return
    tmp = Path(tempfile.mkdtemp(prefix="edgeq-ov-"))
    try:
        path = tmp / "model.tflite"
        shutil.copyfile(model, path)
        yield path
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def untranslated_ops(model: Path) -> dict[int, str]:
    """Op index → why OpenVINO's TFLite front end leaves it untranslated (empty: it reads them all).

    Raises UserInputError when the front end fails on the model as a whole.
    """
    from openvino.frontend import FrontEndManager

    with tflite_path(model) as path:
        fe = FrontEndManager().load_by_framework("tflite")
        try:
            partial = fe.convert_partially(fe.load(str(path)))
        except Exception as exc:
            raise UserInputError(
                f"OpenVINO {version()}'s TFLite front end fails on {model.name}: {ov_error_text(exc)}",
                "export the model again; if it persists, use delegate xnnpack",
            ) from None
    out: dict[int, str] = {}
    for node in partial.get_ordered_ops():
        if "FrameworkNode" in node.get_type_name():
            try:
                out[int(node.get_friendly_name())] = "untranslated"
            except ValueError:
                continue
    return out


def device_available(device: str, available: list[str]) -> bool:
    device = device.upper()
    if device.startswith("AUTO"):
        return True
    return device in set(available) | {d.split(".")[0] for d in available}


def single_op_model(model: tflite.TFLiteFile, index: int) -> bytes:
    """A ``.tflite`` holding only op ``index`` of subgraph 0: its non-constant inputs become the
    model's inputs, its outputs the outputs; only the buffers of its constants are kept."""
    s = tflite.schema()
    m = model.model
    sg = model.subgraph
    op = sg.operators[index]
    used = [t for t in list(op.inputs if op.inputs is not None else []) + list(op.outputs) if t >= 0]
    buffers = [s.BufferT()]
    tensors: list[Any] = []
    mapping: dict[int, int] = {}
    constant: set[int] = set()
    for t in dict.fromkeys(used):
        tensor = copy.copy(sg.tensors[t])
        buf = m.buffers[tensor.buffer] if tensor.buffer else None
        if buf is not None and buf.data is not None and len(buf.data):
            buffers.append(buf)
            tensor.buffer = len(buffers) - 1
            constant.add(t)
        else:
            tensor.buffer = 0
        mapping[t] = len(tensors)
        tensors.append(tensor)
    one = copy.copy(op)
    one.inputs = [mapping[t] if t >= 0 else -1 for t in (op.inputs if op.inputs is not None else [])]
    one.outputs = [mapping[t] for t in op.outputs]
    one.intermediates = None
    sub = s.SubGraphT()
    sub.tensors = tensors
    sub.operators = [one]
    sub.inputs = [
        mapping[t]
        for t in dict.fromkeys(t for t in (op.inputs if op.inputs is not None else []))
        if t >= 0 and t not in constant
    ]
    sub.outputs = [mapping[t] for t in op.outputs]
    sub.name = f"op{index}"
    out = s.ModelT()
    out.version = m.version
    out.operatorCodes = m.operatorCodes
    out.subgraphs = [sub]
    out.buffers = buffers
    out.description = b"edgeq: one op for an OpenVINO device query"
    return tflite.serialize(out)


def unsupported_per_op(model: Path, device: str, indices: list[int] | None = None) -> dict[int, list[str]]:
    """Op index → the OpenVINO node types ``device`` does not support when that op is read alone
    (an empty list: supported). Ops that cannot be read alone map to ``["unreadable alone: ..."]``."""
    ov_core = core()
    tfl = tflite.read_model(model)
    count = len(tfl.subgraph.operators or [])
    out: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-ov-ops-") as tmp:
        for i in indices if indices is not None else range(count):
            path = Path(tmp) / f"op{i}.tflite"
            path.write_bytes(single_op_model(tfl, i))
            try:
                one = ov_core.read_model(str(path))
                supported = ov_core.query_model(one, device)
            except Exception as exc:
                out[i] = [f"unreadable alone: {ov_error_text(exc, 120)}"]
                continue
            out[i] = sorted(
                {
                    n.get_type_name()
                    for n in one.get_ordered_ops()
                    if n.get_friendly_name() not in supported
                    and n.get_type_name() not in ("Parameter", "Result")
                }
            )
    return out


def analyse(model: Path, device: str = "CPU") -> Coverage:
    """Where each op of ``model`` stands with OpenVINO on ``device``, as the host's OpenVINO says.

    >>> analyse(Path("m.tflite")).summary()
    '6 of 6 ops on openvino, 0 on the CPU'
    """
    model = tflite.check_file(Path(model))
    tfl = tflite.read_model(model)
    names = [tfl.op_name(op) for op in tfl.subgraph.operators or []]
    v = version()
    device = (device or "CPU").strip().upper()
    notes = [f"offline: the host's OpenVINO {v} answered for device {device}", WHOLE_MODEL_NOTE]
    custom = {i for i, _ in tflite.custom_ops(tfl.model)}
    missing = untranslated_ops(model)
    if missing:
        ops = []
        for i, name in enumerate(names):
            if i in missing:
                why = (
                    f"custom op {name}: OpenVINO has no translator for it"
                    if i in custom
                    else f"OpenVINO {v}'s TFLite front end has no translator for {name}"
                )
                ops.append(OpPlacement(i, name, CPU, why + " (the model does not load)"))
            else:
                ops.append(OpPlacement(i, name, DELEGATE, "read by OpenVINO's TFLite front end"))
        notes.append(
            f"device support for {device} not checked: the model does not load while ops are untranslated"
        )
        return Coverage(NAME, "offline", tuple(ops), tuple(notes))

    ov_core = core()
    available = [str(d) for d in ov_core.available_devices]
    if device == "MYRIAD" or not device_available(device, available):
        why = (
            "MYRIAD (Movidius NCS2) exists only in OpenVINO 2022.3: nothing on this host can query it"
            if device == "MYRIAD"
            else f"{device} is not on this host (OpenVINO sees: {', '.join(available) or 'no device'})"
        )
        notes.append(
            f"{why}; only the front end was checked here, and the device's own support shows when the "
            "model is compiled there (every run reports it)"
        )
        ops = [
            OpPlacement(i, n, DELEGATE, f"read by OpenVINO's TFLite front end ({device} not checked)")
            for i, n in enumerate(names)
        ]
        return Coverage(NAME, "offline", tuple(ops), tuple(notes))

    with tflite_path(model) as path:
        try:
            ov_model = ov_core.read_model(str(path))
            supported = ov_core.query_model(ov_model, device)
        except Exception as exc:
            raise UserInputError(
                f"OpenVINO {v} cannot query {model.name} for {device}: {ov_error_text(exc)}",
                "export the model again; if it persists, use delegate xnnpack",
            ) from None
    gaps = [n for n in ov_model.get_ordered_ops() if n.get_friendly_name() not in supported]
    if not gaps:
        notes.append(
            f"query_model: {device} supports all {len(list(ov_model.get_ordered_ops()))} OpenVINO nodes the model became"
        )
        ops = [OpPlacement(i, n, DELEGATE, f"OpenVINO {device}") for i, n in enumerate(names)]
        return Coverage(NAME, "offline", tuple(ops), tuple(notes))
    per_op = unsupported_per_op(model, device)
    notes.append(
        f"query_model: {device} leaves {len(gaps)} OpenVINO nodes unsupported "
        f"({', '.join(sorted({n.get_type_name() for n in gaps}))}); each op was then queried alone"
    )
    ops = []
    for i, name in enumerate(names):
        lacking = per_op.get(i, [])
        if lacking:
            ops.append(OpPlacement(i, name, CPU, f"OpenVINO {device} does not support {', '.join(lacking)}"))
        else:
            ops.append(OpPlacement(i, name, DELEGATE, f"OpenVINO {device}"))
    return Coverage(NAME, "offline", tuple(ops), tuple(notes))
