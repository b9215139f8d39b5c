"""Delegate ``edgetpu``: a Coral Edge TPU through libedgetpu, the runtime's external-delegate path.

The runner loads ``libedgetpu.so.1`` with the runtime's own ``load_delegate`` (ai_edge_litert,
tflite_runtime or tensorflow, whichever the spec's runtime picks) and the profile's options, e.g.
``{"device": "usb:0"}``; every option is passed on as a string. ``delegate_options["library"]``
names another library (tests load a stand-in built from tests/support_delegate/).

libedgetpu takes only the ``edgetpu-custom-op`` nodes that ``edgetpu_compiler`` wrote into the
model; everything else runs on the CPU. Placement is read back from the interpreter's execution
plan: a ``DELEGATE`` node covering an ``edgetpu-custom-op`` is the Edge TPU's, any other
``DELEGATE`` node is the runtime's default CPU delegate (XNNPACK).

Failures are one line each: the library missing (``runtime_missing``), a library that finds no
accelerator (libedgetpu's ``tflite_plugin_create_delegate`` then returns NULL without a message,
which the runtime reports as a bare "Failed to load delegate from libedgetpu.so.1"), a device
option libedgetpu cannot parse, a library that refuses its options. A model that was not compiled
for the Edge TPU runs, all on the CPU, with a warning.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Set

from ..modelfile import ModelFileError, read_model
from ..protocol import RunnerError, one_line
from ..runtimes import COMPILED, Runtime, load_runtime
from . import Opened
from .litert import DELEGATE_NODE, allocate, load_error, partitions

LIBRARY = "libedgetpu.so.1"
CUSTOM_OP = "edgetpu-custom-op"
# libedgetpu's "device" values (tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc): any TPU
# (""), the N-th of any type (":N"), the first or N-th USB or PCIe one.
_DEVICE = re.compile(r"^(usb|pci)?(:\d+)?$")
_INSTALL_HINT = (
    "install the Edge TPU runtime from Coral's apt repository: "
    "sudo apt-get install libedgetpu1-std (or libedgetpu1-max), see https://coral.ai/software/"
)
_USB_HINT = (
    "plug the Coral USB Accelerator into a USB 3 port (lsusb shows 1a6e:089a or 18d1:9302) and replug it "
    "after installing libedgetpu1-std (its udev rules let the plugdev group open it)"
)
_PCI_HINT = (
    "a PCIe/M.2 Coral needs its driver (gasket-dkms from Coral's apt repository): /dev/apex_0 must exist"
)


def _emit(emitter: Any, **fields: Any) -> None:
    if emitter is not None:
        emitter.emit("warning", **fields)


def _options(spec: Any) -> Dict[str, str]:
    """The delegate options as strings (``library`` is ours, not the library's)."""
    out: Dict[str, str] = {}
    for key, value in dict(spec.delegate_options).items():
        if key == "library":
            continue
        if isinstance(value, bool):
            out[key] = "True" if value else "False"  # libedgetpu's spelling (Usb.AlwaysDfu)
        else:
            out[key] = str(value)
    device = out.get("device")
    if device is not None and not _DEVICE.match(device):
        raise RunnerError(
            "bad_input",
            "Edge TPU device %r is not one libedgetpu understands" % device,
            "set device to usb, usb:0, pci, pci:0 (or :0 for the first of any kind) in the profile",
        )
    return out


def _load_delegate_fn(runtime: Runtime) -> Any:
    if runtime.name == COMPILED:
        raise RunnerError(
            "bad_input",
            "runtime ai-edge-litert-compiled cannot load external delegates such as libedgetpu",
            "use runtime ai-edge-litert or tflite-runtime with delegate edgetpu",
        )
    module = sys.modules.get(runtime.interpreter_cls.__module__)
    fn = getattr(module, "load_delegate", None)
    if fn is None:
        raise RunnerError(
            "runtime_failure",
            "%s %s has no load_delegate: it cannot load libedgetpu" % (runtime.name, runtime.version),
            "use runtime ai-edge-litert or tflite-runtime",
        )
    return fn


def _check_library(library: str) -> None:
    """Open the library once ourselves: the runtimes' Delegate wrapper prints a stray traceback
    (from its __del__) when the library cannot be opened, and says nothing about which."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as exc:
        why = one_line(exc)
        if why.startswith(library + ": "):
            why = why[len(library) + 2 :]
        raise RunnerError(
            "runtime_missing",
            "cannot load the Edge TPU runtime library %s: %s" % (library, why),
            _INSTALL_HINT,
        ) from None
    if not hasattr(lib, "tflite_plugin_create_delegate"):
        raise RunnerError(
            "runtime_failure",
            "%s is not a TFLite external delegate (no tflite_plugin_create_delegate)" % library,
            _INSTALL_HINT,
        )


def _create_delegate(load_delegate: Any, library: str, options: Dict[str, str]) -> Any:
    try:
        return load_delegate(library, options)
    except ValueError as exc:
        # "Failed to load delegate from LIB\n<what the library reported, often nothing>"
        lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
        device = options.get("device", "")
        if not lines:
            raise RunnerError(
                "runtime_failure",
                "no Edge TPU found: %s loaded but found no accelerator%s"
                % (library, " matching device %r" % device if device else ""),
                (_PCI_HINT + "; or " + _USB_HINT)
                if device.startswith("pci")
                else (_USB_HINT + "; " + _PCI_HINT),
            ) from None
        shown = ", ".join("%s=%s" % kv for kv in sorted(options.items())) or "no options"
        raise RunnerError(
            "runtime_failure",
            "%s could not create the delegate (%s): %s" % (library, shown, lines[0]),
            "check delegate_options in the device profile",
        ) from None
    except (OSError, AttributeError) as exc:
        raise RunnerError(
            "runtime_missing",
            "cannot load the Edge TPU runtime library %s: %s" % (library, one_line(exc)),
            _INSTALL_HINT,
        ) from None


def placement(interp: Any) -> Optional[Dict[str, Any]]:
    """Where each node of the (compiled) model ran, edgeq.placement shape, ``source`` device.

    None when the runtime does not expose its execution plan.
    """
    try:
        nodes = list(interp._get_ops_details())
    except Exception:
        return None
    model_nodes = [n for n in nodes if n.get("op_name") != DELEGATE_NODE]
    names = dict((int(n["index"]), str(n.get("op_name"))) for n in model_nodes)
    on_tpu: Set[int] = set()
    on_cpu_delegate: Set[int] = set()
    for taken in partitions(nodes):
        if any(names.get(i) == CUSTOM_OP for i in taken):
            on_tpu |= taken
        else:
            on_cpu_delegate |= taken
    ops = []
    for n in model_nodes:
        i = int(n["index"])
        name = names[i]
        if i in on_tpu:
            where, why = "delegate", "Edge TPU (compiled by edgetpu_compiler)"
        elif name == CUSTOM_OP:
            where, why = "cpu", "edgetpu-custom-op not taken by the Edge TPU delegate"
        elif i in on_cpu_delegate:
            where, why = "cpu", "CPU (XNNPACK)"
        else:
            where, why = "cpu", "CPU (builtin kernel)"
        ops.append({"index": i, "op": name, "placement": where, "reason": why})
    on = sum(1 for o in ops if o["placement"] == "delegate")
    notes = []
    if any(o["op"] == CUSTOM_OP for o in ops):
        notes.append(
            "each edgetpu-custom-op node stands for all the ops edgetpu_compiler mapped; "
            "edgeq compile reports them op by op"
        )
    return {
        "delegate": "edgetpu",
        "source": "device",
        "summary": "%d of %d ops on edgetpu, %d on the CPU" % (on, len(ops), len(ops) - on),
        "on_delegate": on,
        "on_cpu": len(ops) - on,
        "total": len(ops),
        "ops": ops,
        "notes": notes,
    }


def _custom_ops(model_path: str) -> Optional[List[str]]:
    try:
        with open(model_path, "rb") as f:
            data = f.read()
        return [name for _, name in read_model(data)["custom_ops"]]
    except (OSError, ModelFileError):
        return None  # the interpreter says what is wrong with the file, below


def open_model(model_path: str, spec: Any, emitter: Any = None) -> Opened:
    runtime = load_runtime(spec.runtime)
    load_delegate = _load_delegate_fn(runtime)
    library = str(spec.delegate_options.get("library") or LIBRARY)
    options = _options(spec)
    custom = _custom_ops(model_path)
    t0 = time.perf_counter_ns()
    _check_library(library)
    delegate = _create_delegate(load_delegate, library, options)
    try:
        interp = runtime.interpreter_cls(
            model_path=model_path, num_threads=spec.threads, experimental_delegates=[delegate]
        )
        allocate(interp)
    except RunnerError:
        raise
    except Exception as exc:
        if CUSTOM_OP in one_line(exc):
            raise RunnerError(
                "runtime_failure",
                "%s did not take the model's %s nodes, so the model cannot run: %s"
                % (library, CUSTOM_OP, one_line(exc)),
                "a model compiled by edgetpu_compiler runs only through libedgetpu.so.1 (libedgetpu1-std)",
            ) from None
        raise load_error(exc, model_path, runtime) from None
    init_ms = (time.perf_counter_ns() - t0) / 1e6
    where = placement(interp)
    notes = []
    if custom is not None and CUSTOM_OP not in custom:
        name = os.path.basename(model_path)
        message = "%s was not compiled for the Edge TPU (no %s): every op runs on the CPU" % (name, CUSTOM_OP)
        notes.append(message)
        _emit(
            emitter,
            code="edgetpu.not_compiled",
            message=message,
            hint="compile it first: edgeq compile %s --delegate edgetpu (edgetpu_compiler, x86-64 host), "
            "then profile the *_edgetpu.tflite it writes" % name,
        )
    elif where is not None and where["on_delegate"] == 0:
        message = (
            "the Edge TPU delegate took none of the model's %s nodes: every op runs on the CPU" % CUSTOM_OP
        )
        notes.append(message)
        _emit(
            emitter,
            code="edgetpu.not_taken",
            message=message,
            hint="check that %s is libedgetpu (libedgetpu1-std) and matches the compiler's runtime version"
            % library,
        )
    details = {"library": library, "delegate_options": options}
    return Opened(
        interp, init_ms, runtime.name, runtime.version, "edgetpu", where, spec.threads, notes, details
    )


def preflight(spec: Any) -> Dict[str, Any]:
    """Before any work: the runtime can load external delegates, libedgetpu loads, and it finds an
    accelerator (creating the delegate is what opens the device)."""
    runtime = load_runtime(spec.runtime)
    load_delegate = _load_delegate_fn(runtime)
    library = str(spec.delegate_options.get("library") or LIBRARY)
    _check_library(library)
    _create_delegate(load_delegate, library, _options(spec))
    return {"runtime": runtime.name, "runtime_version": runtime.version, "library": library}


# USB ids of the Coral USB Accelerator: before its first use, and after the runtime loaded its firmware.
CORAL_USB_IDS = ("1a6e:089a", "18d1:9302")


def probe(root: str = "/") -> Dict[str, Any]:
    """What this device offers an Edge TPU (facts for ``edgeq devices check``)."""
    facts: Dict[str, Any] = {"library": LIBRARY}
    try:
        ctypes.CDLL(LIBRARY)
        facts["library_loads"] = True
    except OSError as exc:
        facts["library_loads"] = False
        facts["error"] = one_line(exc)
    usb = []
    for d in sorted(glob.glob(os.path.join(root, "sys/bus/usb/devices/*"))):
        try:
            with open(os.path.join(d, "idVendor")) as v, open(os.path.join(d, "idProduct")) as p:
                ids = v.read().strip().lower() + ":" + p.read().strip().lower()
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            usb.append(ids)
    facts["usb"] = usb
    facts["pcie"] = sorted(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, "dev/apex_*")))
    return facts
