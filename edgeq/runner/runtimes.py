"""Which TFLite runtime the device has, and how to get its Interpreter class and version."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any, Dict, List, Optional

from .protocol import RunnerError, one_line

# Every runtime the runner can drive: the module it imports, its pip distribution, what it needs
# pinned beside it, and how to install it. The one list of runtime names (profiles, the spec, the
# CLI's help and devices setup read it from here).
TABLE = {
    "ai-edge-litert": ("ai_edge_litert.interpreter", "ai-edge-litert", (), "pip install ai-edge-litert"),
    # tflite-runtime 2.14 was built against NumPy 1: with NumPy 2 the Interpreter fails (_ARRAY_API).
    "tflite-runtime": (
        "tflite_runtime.interpreter",
        "tflite-runtime",
        ("numpy<2",),
        "pip install tflite-runtime (it needs numpy<2)",
    ),
    "tensorflow": ("tensorflow", "tensorflow", (), "pip install tensorflow"),
    # ai-edge-litert's CompiledModel API (see compiled.py): the path of LiteRT's own benchmark.
    "ai-edge-litert-compiled": (
        "ai_edge_litert.compiled_model",
        "ai-edge-litert",
        (),
        "pip install ai-edge-litert",
    ),
    # OpenVINO reads .tflite directly; it runs models only through the openvino delegate.
    "openvino": ("openvino", "openvino", (), "pip install openvino"),
}
# In the order ``auto`` tries them: the supported runtime first, then the one many boards still
# ship, then full TensorFlow (heavy, and its tf.lite.Interpreter is deprecated).
RUNTIMES = ("ai-edge-litert", "tflite-runtime", "tensorflow")
COMPILED = "ai-edge-litert-compiled"
CHOICES = ("auto", *TABLE)
_MODULE = {name: row[0] for name, row in TABLE.items()}
_INSTALL = {name: row[3] for name, row in TABLE.items()}


class Runtime:
    """A loaded runtime: its name, version and Interpreter class."""

    def __init__(self, name: str, version: str, interpreter_cls: Any) -> None:
        self.name = name
        self.version = version
        self.interpreter_cls = interpreter_cls


def _dist_version(dist: str) -> Optional[str]:
    try:
        from importlib import metadata  # Python 3.8+
    except ImportError:  # pragma: no cover
        return None
    try:
        return metadata.version(dist)
    except Exception:
        return None


def _import(name: str) -> Runtime:
    """Import one runtime; raises ImportError (or whatever the import raised) when it cannot."""
    module = importlib.import_module(_MODULE[name])
    if name == COMPILED:
        from .compiled import CompiledModelInterpreter

        return Runtime(name, str(_dist_version("ai-edge-litert") or "unknown"), CompiledModelInterpreter)
    if name == "tensorflow":
        cls = module.lite.Interpreter
        version = getattr(module, "__version__", None)
    else:
        cls = module.Interpreter
        top = importlib.import_module(_MODULE[name].split(".")[0])
        version = getattr(top, "__version__", None) or _dist_version(name)
    return Runtime(name, str(version or "unknown"), cls)


def _numpy_hint(message: str) -> Optional[str]:
    if "_ARRAY_API" in message or "NumPy 1.x" in message or "numpy.core.multiarray" in message:
        return "this runtime was built for NumPy 1: pip install 'numpy<2', or use ai-edge-litert"
    return None


def load_runtime(requested: str) -> Runtime:
    """``auto`` takes the first of RUNTIMES that imports; a named runtime must import."""
    if requested == "auto":
        failures: List[str] = []
        for name in RUNTIMES:
            try:
                return _import(name)
            except Exception as exc:  # a broken install counts as missing; say why below
                failures.append("%s: %s" % (name, one_line(exc, 120)))
        raise RunnerError(
            "runtime_missing",
            "no TFLite runtime imports on this device (%s)" % "; ".join(failures),
            "install one: pip install ai-edge-litert (or tflite-runtime with numpy<2, or tensorflow)",
        )
    if requested == "openvino":
        raise RunnerError(
            "bad_input",
            "runtime openvino runs models only through delegate openvino",
            'set delegate = "openvino" (or pass --delegate openvino)',
        )
    if requested not in _MODULE:
        raise RunnerError(
            "bad_input",
            "unknown runtime %r" % requested,
            "choose one of: %s" % ", ".join(CHOICES),
        )
    try:
        return _import(requested)
    except Exception as exc:
        message = one_line(exc)
        raise RunnerError(
            "runtime_missing",
            "runtime %s does not import on this device: %s" % (requested, message),
            _numpy_hint(message) or _INSTALL[requested],
        ) from None


# A float model computing ``y = x + 1`` for x of shape (1, 4), 728 bytes (converted by TF 2.21 from a
# tf.function). The probe runs it, so "ok" means the runtime can create an interpreter and invoke,
# not only import: tflite-runtime under NumPy 2 imports fine and fails at the first interpreter.
PROBE_MODEL_B64 = (
    "HAAAAFRGTDMUACAAHAAYABQAEAAMAAAACAAEABQAAAAcAAAAHAAAAHQAAAA8AQAATAEAAJQCAAADAAAAAAAAAAIAAAA0AAAA"
    "BAAAANz///8FAAAABAAAABMAAABDT05WRVJTSU9OX01FVEFEQVRBAAgADAAIAAQACAAAAAQAAAAEAAAAEwAAAG1pbl9ydW50"
    "aW1lX3ZlcnNpb24ABgAAAMQAAAC8AAAAqAAAAJgAAAB0AAAABAAAAG7///8EAAAAYAAAABAAAAAAAAAACAAOAAgABAAIAAAA"
    "EAAAACQAAAAAAAYACAAEAAYAAAAEAAAAAAAAAAwAGAAUABAADAAEAAwAAAA6VMixfLduQgMAAAACAAAABAAAAAYAAAAyLjIx"
    "LjAAANr///8EAAAAEAAAADEuNS4wAAAAAAAAAAAAAAAEAAYABAAAAAAABgAIAAQABgAAAAQAAAAEAAAAAACAP5D+//+U/v//"
    "DwAAAE1MSVIgQ29udmVydGVkLgABAAAAFAAAAAAADgAYABQAEAAMAAgABAAOAAAAFAAAABwAAABcAAAAYAAAAGQAAAAEAAAA"
    "bWFpbgAAAAABAAAAFAAAAAAADgAUAAAAEAAMAAsABAAOAAAAEAAAAAAAAAsMAAAAEAAAABT///8BAAAAAgAAAAIAAAAAAAAA"
    "AQAAAAEAAAACAAAAAQAAAAAAAAADAAAAiAAAAEAAAAAEAAAAmv///wAAAAEQAAAAEAAAAAMAAAAYAAAAZP///wgAAABJZGVu"
    "dGl0eQAAAAACAAAAAQAAAAQAAADS////AAAAARAAAAAQAAAAAgAAABQAAACc////BQAAAGFkZC95AAAAAAAAAAAAFgAYABQA"
    "AAAQAAwACAAAAAAAAAAHABYAAAAAAAABEAAAABAAAAABAAAAEAAAAOD///8BAAAAeAAAAAIAAAABAAAABAAAAAEAAAAIAAAA"
    "BAAEAAQAAAA="
)

# Run in a child process per runtime: an import or first invoke can crash the interpreter outright
# (ai-edge-litert under an old qemu-user segfaults), and TensorFlow and LiteRT should not share one
# process.
_PROBE_PROGRAM = """
import base64, json, sys
sys.stdout.flush()
out = sys.stdout
sys.stdout = sys.stderr
name, module = sys.argv[1], sys.argv[2]
stage = "import"
try:
    import importlib
    mod = importlib.import_module(module)
    top = importlib.import_module(module.split(".")[0])
    version = getattr(top, "__version__", None)
    if version is None:
        try:
            from importlib import metadata
            version = metadata.version(name)
        except Exception:
            version = None
    cls = mod.lite.Interpreter if name == "tensorflow" else mod.Interpreter
    stage = "invoke"
    import numpy as np
    interp = cls(model_content=base64.b64decode(sys.stdin.read()))
    interp.allocate_tensors()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    y = interp.get_tensor(interp.get_output_details()[0]["index"])
    if not np.array_equal(y, x + 1):
        raise RuntimeError("wrong answer from the probe model: %r" % (y.tolist(),))
    out.write(json.dumps({"ok": True, "version": version}) + "\\n")
except Exception as exc:
    chain = []
    while exc is not None and len(chain) < 4:
        text = (str(exc).strip().splitlines() or [""])[0][:200]
        chain.append("%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__)
        exc = exc.__cause__ or exc.__context__
    info = {"ok": False, "stage": stage, "error": " <- ".join(chain)}
    if stage == "invoke":
        info["version"] = version
    out.write(json.dumps(info) + "\\n")
"""


def probe_runtime(name: str, timeout: float = 300.0) -> Dict[str, Any]:
    """Whether ``name`` imports and runs a tiny model here, with its version or the reason it does not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE_PROGRAM, name, _MODULE[name]],
            input=PROBE_MODEL_B64.encode("ascii"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "import and first invoke took longer than %d s" % timeout}
    except OSError as exc:
        return {"ok": False, "error": "cannot start %s: %s" % (sys.executable, exc)}
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    if proc.returncode != 0 or not lines:
        how = "killed by signal %d" % -proc.returncode if proc.returncode < 0 else "exit %d" % proc.returncode
        return {"ok": False, "error": "the runtime crashed Python (%s)" % how}
    try:
        info = json.loads(lines[-1])
    except ValueError:
        return {"ok": False, "error": "unreadable probe output"}
    if not info.get("ok"):
        hint = _numpy_hint(info.get("error", ""))
        if hint:
            info["hint"] = hint
    return info
