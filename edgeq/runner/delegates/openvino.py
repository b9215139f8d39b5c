"""Delegate ``openvino``: the OpenVINO runtime runs the whole model on one of its devices.

``delegate_options.device`` picks it: ``CPU`` (the default), ``GPU``, ``NPU``, ``AUTO`` (OpenVINO
chooses; its startup CPU fallback is switched off so the measured device is the chosen one), or
``MYRIAD`` (Movidius NCS2, OpenVINO 2022.3 only). Current releases read a full-int8 ``.tflite``
directly (their TFLite front end). OpenVINO 2022.3 has no TFLite front end: for it the host converts
the model to OpenVINO IR (``model.xml`` with ``model.bin`` next to it, same stem; see
``delegates/openvino/compile.py``) and the runner reads that.

OpenVINO compiles the model whole for one device and never hands single ops back to another
runtime: an op the device cannot run makes compilation fail (one line), and the placement record
says, for every op of the ``.tflite``, the device OpenVINO reports in ``EXECUTION_DEVICES``. Its
runtime graph names fused kernels, not TFLite ops, so per-op attribution beyond that is not claimed.

``invoke()`` is one synchronous inference on one infer request with preallocated tensors. Where the
installed package ships OpenVINO's C library (``libopenvino_c``, in the wheels since 2023) it is
called through ctypes: ~0.5 us per call, where the Python binding's ``InferRequest.infer()`` costs ~5
us more and builds a dict of output copies on every call. The timed call is then the one
OpenVINO's own benchmark_app times. ``EDGEQ_OPENVINO_BINDING=python`` forces the Python binding.

Python 3.8, standard library, NumPy and openvino only.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import importlib
import json
import os
import re
import struct
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..compiled import FixedShapeInterpreter
from ..modelfile import BUILTIN_CUSTOM, ModelFileError, _Table, read_model
from ..protocol import RunnerError, one_line
from . import Opened

DELEGATE = "openvino"
PIN = "2026.4.1"  # the version edgeq is tested with (pyproject.toml pins the same)
INSTALL_HINT = "pip install openvino==%s" % PIN
NCS2_HINT = (
    "a Movidius NCS2 needs OpenVINO 2022.3 from Intel's archive (not pip) with its udev rules; "
    "see the intel-ncs2 profile"
)
OPTIONS = ("device",)
# Virtual devices that split one model over several devices: edgeq measures one device at a time.
_SPLITTING = ("HETERO", "MULTI", "BATCH")
BINDING_ENV = "EDGEQ_OPENVINO_BINDING"
# The key of the JSON record the host writes into an IR's rt_info (delegates/openvino/compile.py).
IR_RT_INFO_KEY = "edgeq"

_DTYPES = {
    "i8": "int8",
    "u8": "uint8",
    "i16": "int16",
    "u16": "uint16",
    "i32": "int32",
    "i64": "int64",
    "f16": "float16",
    "f32": "float32",
    "f64": "float64",
    "boolean": "bool",
}

_DEVICE_HINTS = {
    "NPU": "the NPU needs the intel_vpu kernel driver, Intel's NPU user-space driver (Level Zero) and "
    "the user in the render group; edgeq devices check shows which is missing",
    "GPU": "an Intel GPU needs Intel's compute runtime (intel-opencl-icd) and the user in the render "
    "group; edgeq devices check shows which is missing",
    "MYRIAD": NCS2_HINT,
}

# BuiltinOperator names by code, as in TFLite's schema.fbs (the device has no schema package).
_BUILTIN_NAMES = (
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE "
    "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D "
    "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 "
    "RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM "
    "CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND "
    "SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE "
    "BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM "
    "CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE "
    "SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT SHAPE POW "
    "ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT UNPACK "
    "REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR "
    "LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS "
    "WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE "
    "NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM "
    "BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG "
    "REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL "
    "CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL "
    "BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD "
    "UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR "
    "RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY "
    "STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE "
    "STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL "
    "STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL "
    "STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER "
    "STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH "
    "STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT STABLEHLO_DYNAMIC_SLICE "
    "STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL "
    "STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE "
    "DILATE STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT "
    "STABLEHLO_CBRT STABLEHLO_CASE"
).split()


def ov_error_text(exc: BaseException, limit: int = 300) -> str:
    """What an OpenVINO exception says, without its ``Exception from src/...cpp:NN:`` frames."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    keep = []
    for line in lines:
        line = re.sub(r"Exception from \S+:\d+:?", "", line).strip()
        if not line or line.startswith("Check '") or line.endswith("failed with OpConversionFailure:"):
            continue
        keep.append(line)
    text = " ".join(keep[-2:]) if keep else one_line(exc, limit)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def tflite_ops(data: bytes) -> List[str]:
    """The op names of subgraph 0 of a ``.tflite`` (builtin name, or the custom op's code)."""
    try:
        model = _Table(data, struct.unpack_from("<I", data, 0)[0])
        codes = []
        for c in model.tables(1):
            builtin = max(int(c.scalar(0, "b")), int(c.scalar(3, "i")))
            if builtin == BUILTIN_CUSTOM:
                codes.append(c.string(1) or "CUSTOM")
            else:
                codes.append(_BUILTIN_NAMES[builtin] if builtin < len(_BUILTIN_NAMES) else str(builtin))
        subgraphs = model.tables(2)
        if not subgraphs:
            raise ModelFileError("the model has no subgraph")
        return [codes[int(op.scalar(0, "I"))] for op in subgraphs[0].tables(3)]
    except (ModelFileError, IndexError, ValueError) as exc:
        raise RunnerError(
            "bad_input",
            "cannot read the ops of the model: %s" % exc,
            "export the model again and redeploy it",
        ) from None
    except Exception as exc:  # struct.error and kin on a damaged file
        raise RunnerError(
            "bad_input", "damaged TFLite model: %s" % one_line(exc), "export the model again and redeploy it"
        ) from None


def ir_record(xml_path: str) -> Optional[Dict[str, Any]]:
    """The JSON record edgeq's host wrote into an IR's rt_info (quantization, the .tflite's ops)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise RunnerError(
            "bad_input",
            "%s is not a readable OpenVINO IR: %s" % (os.path.basename(xml_path), exc),
            "convert the model again (edgeq compile --delegate openvino) and redeploy model.xml and model.bin",
        ) from None
    node = root.find("rt_info/%s" % IR_RT_INFO_KEY)
    if node is None or not node.get("value"):
        return None
    try:
        record = json.loads(node.get("value") or "")
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


# One Core per process (per Python class, per C library), never freed. OpenVINO's CPU plugin installs
# an alternate signal stack of its own on the thread that first compiles for it and does not put the
# previous one back; freeing the core frees that stack, and the thread's next signal (Ctrl-C, SIGTERM)
# then ends the process in SIGSEGV instead of a clean stop. A binding may also be closed from another
# thread (by the garbage collector), so the stack cannot be put back reliably: the core stays.
_CORES = {}  # type: Dict[Any, Any]
_C_CORES = {}  # type: Dict[str, Any]


class _OpenVINO:
    """The imported openvino package: its Core, version, and where its libraries are."""

    def __init__(self) -> None:
        try:
            module = importlib.import_module("openvino")
            core_cls = getattr(module, "Core", None)
            get_version = getattr(module, "get_version", None)
            if core_cls is None or get_version is None:  # 2022.x: everything is in openvino.runtime
                runtime = importlib.import_module("openvino.runtime")
                core_cls = runtime.Core
                get_version = runtime.get_version
        except Exception as exc:
            raise RunnerError(
                "runtime_missing",
                "OpenVINO is not installed on this device (import openvino: %s)" % one_line(exc, 160),
                "%s (for a Movidius NCS2: %s)" % (INSTALL_HINT, NCS2_HINT),
            ) from None
        self.module = module
        self.build = str(get_version())
        self.version = self.build.split("-")[0]
        self.package_dir = os.path.dirname(os.path.abspath(module.__file__ or ""))
        try:
            if core_cls not in _CORES:
                _CORES[core_cls] = core_cls()
            self.core = _CORES[core_cls]
        except Exception as exc:
            raise RunnerError(
                "runtime_failure",
                "OpenVINO %s failed to start: %s" % (self.version, ov_error_text(exc)),
                INSTALL_HINT,
            ) from None

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    def available(self) -> List[str]:
        try:
            return [str(d) for d in self.core.available_devices]
        except Exception:
            return []

    def has_tflite_frontend(self) -> bool:
        try:
            from openvino.frontend import FrontEndManager

            return "tflite" in FrontEndManager().get_available_front_ends()
        except Exception:
            return False

    def device_property(self, device: str, key: str) -> Optional[str]:
        try:
            return str(self.core.get_property(device, key))
        except Exception:
            return None


def requested_device(spec: Any) -> str:
    """``delegate_options.device`` checked: one device (or AUTO), never a splitting virtual device."""
    options = dict(spec.delegate_options or {})
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise RunnerError(
            "bad_input",
            "unknown openvino delegate option%s: %s" % ("s" if len(unknown) > 1 else "", ", ".join(unknown)),
            "the openvino delegate takes: device (CPU, GPU, NPU, AUTO or MYRIAD)",
        )
    device = str(options.get("device", "CPU")).strip().upper()
    if not device:
        raise RunnerError(
            "bad_input", "delegate option device is empty", "set device = CPU, GPU, NPU, AUTO or MYRIAD"
        )
    if device.split(":")[0] in _SPLITTING:
        raise RunnerError(
            "bad_input",
            "OpenVINO device %s splits the model over several devices; edgeq measures one device at a time"
            % device,
            "set the delegate option device to CPU, GPU, NPU, AUTO or MYRIAD",
        )
    return device


def check_available(ov: _OpenVINO, device: str) -> List[str]:
    """The devices OpenVINO sees; raises one line when ``device`` is not among them."""
    available = ov.available()
    wanted = [device] if not device.startswith("AUTO") else [d for d in device[5:].split(",") if d]
    known = set(available) | set(d.split(".")[0] for d in available)
    missing = [d for d in wanted if d not in known]
    if not missing:
        return available
    base = missing[0].split(".")[0]
    hint = _DEVICE_HINTS.get(base, "set the delegate option device to one of the available devices")
    if base == "MYRIAD" and ov.major >= 2023:
        hint = "OpenVINO %s has no MYRIAD plugin (it ended with 2022.3); %s" % (ov.version, NCS2_HINT)
    raise RunnerError(
        "runtime_failure",
        "OpenVINO device %s is not available here (OpenVINO %s sees: %s)"
        % (missing[0], ov.version, ", ".join(available) or "no device"),
        hint,
    )


def _config(device: str, threads: int) -> Dict[str, str]:
    if device == "MYRIAD":
        return {}  # the 2022.3 MYRIAD plugin: its defaults (one stream); hints are untested there
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if device.split(".")[0] == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    elif device.startswith("AUTO"):
        # Without this AUTO first runs on the CPU while the accelerator compiles, and a short
        # measurement would time the CPU.
        config["ENABLE_STARTUP_FALLBACK"] = "NO"
    return config


def _static_dims(model: Any) -> Dict[int, List[int]]:
    """Inputs with a dynamic dimension (a Keras batch of -1) and their shapes with it set to 1."""
    fixed: Dict[int, List[int]] = {}
    for i, port in enumerate(model.inputs):
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic:
            raise RunnerError(
                "bad_input",
                "input %d of the model has no fixed rank" % i,
                "export the model with a fixed input shape",
            )
        dims = []
        dynamic = False
        for d in _dims(shape):
            if d.is_static:
                dims.append(int(d.get_length()))
            else:
                dims.append(1)
                dynamic = True
        if dynamic:
            fixed[i] = dims
    return fixed


def _dims(shape: Any) -> List[Any]:
    """The dimensions of a PartialShape by index (iterating one is not in every release's API)."""
    return [shape[i] for i in range(shape.rank.get_length())]


def _shape(port: Any) -> List[int]:
    return [int(d.get_length()) for d in _dims(port.get_partial_shape())]


def _port_name(port: Any) -> str:
    try:
        return str(port.get_any_name())
    except Exception:
        return ""


def _details(ports: List[Any], quant: List[Tuple[float, int]], kind: str) -> List[Dict[str, Any]]:
    out = []
    for i, port in enumerate(ports):
        type_name = port.get_element_type().get_type_name()
        if type_name not in _DTYPES:
            raise RunnerError(
                "bad_input",
                "model %s %d has element type %s, which the runner cannot feed" % (kind, i, type_name),
                "export the model with int8, uint8 or float32 inputs and outputs",
            )
        shape = np.array(_shape(port), dtype=np.int32)
        out.append(
            {
                "index": i,
                "name": _port_name(port),
                "dtype": np.dtype(_DTYPES[type_name]),
                "shape": shape,
                "shape_signature": shape.copy(),
                "quantization": quant[i] if i < len(quant) else (0.0, 0),
            }
        )
    return out


class _CBinding:
    """OpenVINO's C API (libopenvino_c) through ctypes: compile, one infer request, its tensors."""

    _SYMBOLS = (
        "ov_core_create",
        "ov_core_free",
        "ov_core_read_model",
        "ov_model_free",
        "ov_model_reshape_by_port_indexes",
        "ov_core_compile_model_props",
        "ov_compiled_model_get_property",
        "ov_compiled_model_create_infer_request",
        "ov_compiled_model_free",
        "ov_infer_request_get_input_tensor_by_index",
        "ov_infer_request_get_output_tensor_by_index",
        "ov_infer_request_infer",
        "ov_infer_request_free",
        "ov_tensor_data",
        "ov_tensor_get_byte_size",
        "ov_tensor_free",
        "ov_free",
        "ov_get_last_err_msg",
    )

    class Dim(ctypes.Structure):
        _fields_ = [("min", ctypes.c_int64), ("max", ctypes.c_int64)]  # noqa: RUF012 (ctypes' own protocol)

    class PartialShape(ctypes.Structure):
        _fields_ = [("rank", ctypes.c_int64 * 2), ("dims", ctypes.c_void_p)]  # noqa: RUF012 (ctypes' own protocol)

    class Property(ctypes.Structure):
        _fields_ = [("key", ctypes.c_char_p), ("value", ctypes.c_void_p)]  # noqa: RUF012 (ctypes' own protocol)

    @classmethod
    def load(cls, package_dir: str) -> Optional[Any]:
        """The library next to the Python package, or None (older releases, or forced off)."""
        if os.environ.get(BINDING_ENV, "").lower() == "python":
            return None
        for path in sorted(glob.glob(os.path.join(package_dir, "libs", "libopenvino_c.so*"))):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            if all(hasattr(lib, s) for s in cls._SYMBOLS):
                return lib
        return None

    def __init__(
        self, lib: Any, path: str, fixed: Dict[int, List[int]], device: str, config: Dict[str, str]
    ) -> None:
        self.lib = lib
        self._handles: List[Tuple[str, Any]] = []
        try:
            self._open(path, fixed, device, config)
        except BaseException:
            self.close()
            raise

    def _open(self, path: str, fixed: Dict[int, List[int]], device: str, config: Dict[str, str]) -> None:
        P = ctypes.c_void_p
        lib = self.lib
        lib.ov_get_last_err_msg.restype = ctypes.c_char_p
        lib.ov_infer_request_infer.argtypes = [P]
        lib.ov_infer_request_infer.restype = ctypes.c_int
        lib.ov_compiled_model_get_property.argtypes = [P, ctypes.c_char_p, ctypes.POINTER(P)]
        lib.ov_free.argtypes = [P]
        key = str(getattr(lib, "_name", ""))  # the library's path: ctypes never unloads it
        core = _C_CORES.get(key)
        if core is None:  # one core per library for the process, never freed (see _CORES)
            core = P()
            self._check(lib.ov_core_create(ctypes.byref(core)), "create a core")
            _C_CORES[key] = core
        model = P()
        self._check(lib.ov_core_read_model(core, path.encode(), None, ctypes.byref(model)), "read the model")
        try:
            if fixed:
                n = len(fixed)
                index_arr = (ctypes.c_size_t * n)(*sorted(fixed))
                dims_keep = []
                shapes = (self.PartialShape * n)()
                for k, i in enumerate(sorted(fixed)):
                    dims = (self.Dim * len(fixed[i]))(*[self.Dim(d, d) for d in fixed[i]])
                    dims_keep.append(dims)
                    shapes[k].rank[0] = shapes[k].rank[1] = len(fixed[i])
                    shapes[k].dims = ctypes.cast(dims, P)
                self._check(
                    lib.ov_model_reshape_by_port_indexes(model, index_arr, shapes, ctypes.c_size_t(n)),
                    "fix the input shapes",
                )
            values = [ctypes.c_char_p(v.encode()) for v in config.values()]
            props = (self.Property * max(len(config), 1))()
            for k, key in enumerate(config):
                props[k].key = key.encode()
                props[k].value = ctypes.cast(values[k], P)
            compiled = P()
            self._check(
                lib.ov_core_compile_model_props(
                    core, model, device.encode(), ctypes.c_size_t(len(config)), props, ctypes.byref(compiled)
                ),
                "compile",
            )
        finally:
            lib.ov_model_free(model)
        self._handles.append(("ov_compiled_model_free", compiled))
        self._compiled = compiled
        request = P()
        self._check(
            lib.ov_compiled_model_create_infer_request(compiled, ctypes.byref(request)), "create a request"
        )
        self._handles.append(("ov_infer_request_free", request))
        self._request = request
        self._infer = lib.ov_infer_request_infer

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            message = self.lib.ov_get_last_err_msg()
            text = message.decode("utf-8", "replace") if message else "status %d" % status
            raise RuntimeError("cannot %s: %s" % (what, text))

    def tensor_view(self, output: bool, index: int, dtype: Any, shape: List[int]) -> np.ndarray:
        """A NumPy array over the request's own tensor memory (no copy)."""
        P = ctypes.c_void_p
        getter = (
            self.lib.ov_infer_request_get_output_tensor_by_index
            if output
            else self.lib.ov_infer_request_get_input_tensor_by_index
        )
        tensor = P()
        self._check(getter(self._request, ctypes.c_size_t(index), ctypes.byref(tensor)), "get a tensor")
        self._handles.append(("ov_tensor_free", tensor))
        data = P()
        self._check(self.lib.ov_tensor_data(tensor, ctypes.byref(data)), "map a tensor")
        size = ctypes.c_size_t()
        self._check(self.lib.ov_tensor_get_byte_size(tensor, ctypes.byref(size)), "size a tensor")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        if size.value != count * dtype.itemsize or not data.value:
            raise RuntimeError(
                "tensor %d holds %d bytes, expected %d" % (index, size.value, count * dtype.itemsize)
            )
        raw = (ctypes.c_uint8 * size.value).from_address(data.value)
        return np.frombuffer(memoryview(raw), dtype=dtype).reshape(shape)

    def property(self, key: str) -> Optional[str]:
        value = ctypes.c_void_p()
        if self.lib.ov_compiled_model_get_property(self._compiled, key.encode(), ctypes.byref(value)) != 0:
            return None
        try:
            return ctypes.string_at(value.value).decode("utf-8", "replace") if value.value else None
        finally:
            if value.value:
                self.lib.ov_free(value)

    def invoke(self) -> None:
        if self._infer(self._request):
            self._check(-1, "run the model")

    def close(self) -> None:
        while self._handles:
            name, handle = self._handles.pop()
            getattr(self.lib, name)(handle)

    name = "C API (libopenvino_c, ov_infer_request_infer)"


class _PythonBinding:
    """OpenVINO's Python API: the fallback where no libopenvino_c ships (OpenVINO 2022.3)."""

    name = "Python API (InferRequest.infer)"

    def __init__(self, ov: _OpenVINO, model: Any, device: str, config: Dict[str, str]) -> None:
        self._compiled = ov.core.compile_model(model, device, config)
        self._request = self._compiled.create_infer_request()
        self.invoke = self._request.infer

    def tensor_view(self, output: bool, index: int, dtype: Any, shape: List[int]) -> np.ndarray:
        tensor = self._request.get_output_tensor(index) if output else self._request.get_input_tensor(index)
        view = tensor.data
        if view.dtype != np.dtype(dtype) or list(view.shape) != list(shape):
            raise RuntimeError(
                "tensor %d is %s %s, expected %s %s" % (index, view.dtype, view.shape, dtype, shape)
            )
        return view

    def property(self, key: str) -> Optional[str]:
        try:
            value = self._compiled.get_property(key)
        except Exception:
            return None
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        if hasattr(value, "get_type_name"):  # an element type (INFERENCE_PRECISION_HINT)
            return str(value.get_type_name())
        return str(getattr(value, "name", value))

    def close(self) -> None:
        self._request = None
        self._compiled = None


class OpenVINOInterpreter(FixedShapeInterpreter):
    """The Interpreter surface over one OpenVINO infer request (inputs and outputs are views of the
    request's own tensors, so set_tensor is one copy and invoke allocates nothing)."""

    _resize_error = "OpenVINO compiled the model for fixed input shapes; resizing is not supported"

    def __init__(self, binding: Any, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        self._binding = binding
        self._inputs = inputs
        self._outputs = outputs
        self._in_views = [
            binding.tensor_view(False, d["index"], d["dtype"], list(d["shape"])) for d in inputs
        ]
        self._out_views = [
            binding.tensor_view(True, d["index"], d["dtype"], list(d["shape"])) for d in outputs
        ]
        self.invoke = binding.invoke  # the timed call, without a Python frame of ours around it

    def _write_input(self, index: int, value: np.ndarray) -> None:
        np.copyto(self._in_views[index], value)

    def get_tensor(self, index: int) -> np.ndarray:
        return np.array(self._out_views[index], copy=True)

    def close(self) -> None:
        self._in_views = []
        self._out_views = []
        self._binding.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _read(
    ov: _OpenVINO, model_path: str
) -> Tuple[Any, List[str], List[Tuple[float, int]], List[Tuple[float, int]], str]:
    """The OpenVINO model, the .tflite's op names, input/output quantization, and the format."""
    name = os.path.basename(model_path)
    if not os.path.isfile(model_path):
        raise RunnerError(
            "bad_input",
            "model file not found on the device: %s" % model_path,
            "deploy the model first (edgeq does this)",
        )
    if model_path.lower().endswith(".xml"):
        weights = model_path[:-4] + ".bin"
        if not os.path.isfile(weights):
            raise RunnerError(
                "bad_input",
                "%s has no weights next to it (%s is missing)" % (name, os.path.basename(weights)),
                "deploy model.bin next to model.xml with the same name (edgeq compile --delegate openvino writes both)",
            )
        record = ir_record(model_path) or {}
        ops = [str(o) for o in record.get("ops") or []]
        quant_in = [
            (float(d.get("scale", 0.0)), int(d.get("zero_point", 0))) for d in record.get("inputs") or []
        ]
        quant_out = [
            (float(d.get("scale", 0.0)), int(d.get("zero_point", 0))) for d in record.get("outputs") or []
        ]
        fmt = "ir"
    else:
        with open(model_path, "rb") as f:
            data = f.read()
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise RunnerError(
                "bad_input",
                "%s is neither a TFLite model nor an OpenVINO IR (.xml)" % name,
                "pass a .tflite written by edgeq export, or model.xml from edgeq compile --delegate openvino",
            )
        if not model_path.lower().endswith(".tflite"):
            raise RunnerError(
                "bad_input",
                "OpenVINO recognizes TFLite models by the .tflite suffix: %s" % name,
                "rename it to *.tflite",
            )
        if not ov.has_tflite_frontend():
            raise RunnerError(
                "runtime_failure",
                "OpenVINO %s has no TFLite front end and cannot read %s" % (ov.version, name),
                "convert the model to OpenVINO IR on the host (edgeq compile MODEL --delegate openvino with the "
                "intel-ncs2 profile) and deploy model.xml and model.bin",
            )
        ops = tflite_ops(data)
        try:
            info = read_model(data)
        except ModelFileError as exc:
            raise RunnerError(
                "bad_input", "damaged TFLite model %s: %s" % (name, exc), "export it again"
            ) from None
        quant_in = [(float(d["quantization"][0]), int(d["quantization"][1])) for d in info["inputs"]]
        quant_out = [(float(d["quantization"][0]), int(d["quantization"][1])) for d in info["outputs"]]
        fmt = "tflite"
    try:
        model = ov.core.read_model(model_path)
    except Exception as exc:
        text = ov_error_text(exc)
        missing = re.search(r"No translator found for (\S+) node", text)
        if missing:
            raise RunnerError(
                "runtime_failure",
                "OpenVINO %s cannot read %s: its TFLite front end has no translator for %s"
                % (ov.version, name, missing.group(1)),
                "edgeq inspect MODEL --delegate openvino lists every op OpenVINO cannot read; replace them, "
                "or use delegate xnnpack",
            ) from None
        raise RunnerError(
            "bad_input",
            "OpenVINO %s cannot read %s: %s" % (ov.version, name, text),
            "the file looks truncated or corrupt: export the model again and redeploy it",
        ) from None
    return model, ops, quant_in, quant_out, fmt


def placement(ops: List[str], requested: str, executed: List[str], notes: List[str]) -> Dict[str, Any]:
    """Every op on the device OpenVINO ran the model on (the edgeq.placement JSON shape).

    ``delegate`` when that device is the one asked for, or an accelerator AUTO chose; ``cpu`` when
    an accelerator was asked for (AUTO) and OpenVINO ran the model on its CPU device instead.
    """
    on_cpu = bool(executed) and all(d.split(".")[0] == "CPU" for d in executed)
    asked_cpu = requested.split(".")[0] == "CPU"
    where = ", ".join(executed) or requested
    if asked_cpu or not on_cpu:
        state, reason = "delegate", "OpenVINO %s" % where
        if requested.startswith("AUTO"):
            reason += " (chosen by AUTO)"
    else:
        state, reason = "cpu", "OpenVINO ran the model on its CPU device (AUTO found no accelerator for it)"
    entries = [{"index": i, "op": op, "placement": state, "reason": reason} for i, op in enumerate(ops)]
    on = sum(1 for e in entries if e["placement"] == "delegate")
    return {
        "delegate": DELEGATE,
        "source": "device",
        "summary": "%d of %d ops on %s, %d on the CPU" % (on, len(entries), DELEGATE, len(entries) - on),
        "on_delegate": on,
        "on_cpu": len(entries) - on,
        "total": len(entries),
        "ops": entries,
        "notes": list(notes),
    }


def open_model(model_path: str, spec: Any, emitter: Any = None) -> Opened:
    """Read, compile for the requested device, and wrap one infer request as an Interpreter."""
    if spec.runtime not in ("auto", "openvino"):
        raise RunnerError(
            "bad_input",
            "delegate openvino runs on the OpenVINO runtime, not %s" % spec.runtime,
            "set runtime to openvino (or auto) for delegate openvino",
        )
    device = requested_device(spec)
    ov = _OpenVINO()
    t0 = time.perf_counter_ns()
    check_available(ov, device)
    model, ops, quant_in, quant_out, fmt = _read(ov, model_path)
    fixed = _static_dims(model)
    config = _config(device, int(spec.threads))
    if fixed:
        model.reshape(dict((model.inputs[i], dims) for i, dims in fixed.items()))
    lib = _CBinding.load(ov.package_dir)
    try:
        if lib is not None:
            binding = _CBinding(lib, model_path, fixed, device, config)  # type: Any
        else:
            binding = _PythonBinding(ov, model, device, config)
    except Exception as exc:
        raise RunnerError(
            "runtime_failure",
            "OpenVINO %s cannot compile %s for %s: %s"
            % (ov.version, os.path.basename(model_path), device, ov_error_text(exc)),
            "edgeq inspect MODEL --delegate openvino lists the ops; an op this device lacks stops the whole "
            "model (OpenVINO does not fall back per op)",
        ) from None
    inputs = _details(list(model.inputs), quant_in, "input")
    outputs = _details(list(model.outputs), quant_out, "output")
    try:
        interp = OpenVINOInterpreter(binding, inputs, outputs)
    except Exception as exc:
        binding.close()
        raise RunnerError(
            "runtime_failure", "OpenVINO %s: %s" % (ov.version, ov_error_text(exc)), INSTALL_HINT
        ) from None
    init_ms = (time.perf_counter_ns() - t0) / 1e6

    executed_text = binding.property("EXECUTION_DEVICES")
    notes = []
    if executed_text is None:
        executed = [device]
        notes.append(
            "OpenVINO %s does not report EXECUTION_DEVICES: the requested device %s is assumed"
            % (ov.version, device)
        )
    else:
        executed = [d for d in re.split(r"[,\s()\[\]']+", executed_text) if d]
    threads_text = binding.property("INFERENCE_NUM_THREADS")
    threads = int(threads_text) if threads_text and threads_text.isdigit() and int(threads_text) > 0 else None
    if threads is None and device.split(".")[0] == "CPU":
        threads = int(spec.threads)
    precision = binding.property("INFERENCE_PRECISION_HINT")
    full_names = dict((d, ov.device_property(d, "FULL_DEVICE_NAME")) for d in executed)
    if fmt == "ir" and not ops:
        ops = [
            n.get_type_name()
            for n in model.get_ordered_ops()
            if n.get_type_name() not in ("Parameter", "Constant", "Result")
        ]
        notes.append(
            "the IR carries no list of the .tflite's ops (not written by edgeq): placement counts OpenVINO nodes"
        )
    notes.append(
        "OpenVINO compiles the whole model for one device (no per-op fallback): every op ran on %s"
        % (", ".join(executed) or device)
    )
    if device.split(".")[0] not in ("CPU", "AUTO") and threads is None:
        notes.append("threads do not apply to %s" % device)
    details = {
        "device_requested": device,
        "execution_devices": executed,
        "device_names": full_names,
        "openvino_build": ov.build,
        "model_format": fmt,
        "config": config,
        "inference_precision": precision,
        "binding": binding.name,
        "python": sys.version.split()[0],
    }
    return Opened(
        interp,
        init_ms,
        "openvino",
        ov.version,
        DELEGATE,
        placement(ops, device, executed, notes),
        threads,
        notes=["OpenVINO %s on %s (%s)" % (ov.version, ", ".join(executed), binding.name)],
        details=details,
    )


# Movidius Myriad X (NCS2) USB ids: before its firmware is loaded, and after.
MYRIAD_USB_IDS = (("03e7", "2485"), ("03e7", "f63b"))
MYRIAD_UDEV_RULES = ("etc/udev/rules.d/97-myriad-usbboot.rules", "lib/udev/rules.d/97-myriad-usbboot.rules")


def _read_text(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def probe(root: str = "/") -> Dict[str, Any]:
    """What this device offers OpenVINO: the package, its devices, and the system pieces each
    device needs (JSON-able facts for ``edgeq devices check``; ``root`` lets tests use a fake tree)."""
    facts = {"python": sys.version.split()[0]}  # type: Dict[str, Any]
    try:
        ov = _OpenVINO()
        facts.update(
            {
                "ok": True,
                "version": ov.version,
                "build": ov.build,
                "available_devices": ov.available(),
                "tflite_frontend": ov.has_tflite_frontend(),
                "c_api": _CBinding.load(ov.package_dir) is not None,
            }
        )
        facts["device_names"] = dict(
            (d, ov.device_property(d, "FULL_DEVICE_NAME")) for d in facts["available_devices"]
        )
    except RunnerError as exc:
        facts.update({"ok": False, "error": exc.message})
    usb = []
    for dev in sorted(glob.glob(os.path.join(root, "sys/bus/usb/devices/*"))):
        ids = (
            _read_text(os.path.join(dev, "idVendor")).lower(),
            _read_text(os.path.join(dev, "idProduct")).lower(),
        )
        if ids in MYRIAD_USB_IDS:
            usb.append("%s:%s" % ids)
    facts["myriad_usb"] = usb
    facts["myriad_udev_rules"] = any(os.path.isfile(os.path.join(root, p)) for p in MYRIAD_UDEV_RULES)
    accel = sorted(glob.glob(os.path.join(root, "dev/accel/accel*")))
    facts["npu_nodes"] = [os.path.relpath(p, root) for p in accel]
    facts["npu_nodes_usable"] = [os.path.relpath(p, root) for p in accel if os.access(p, os.R_OK | os.W_OK)]
    facts["intel_vpu_driver"] = os.path.isdir(os.path.join(root, "sys/module/intel_vpu"))
    render = sorted(glob.glob(os.path.join(root, "dev/dri/renderD*")))
    facts["gpu_nodes"] = [os.path.relpath(p, root) for p in render]
    facts["gpu_nodes_usable"] = [os.path.relpath(p, root) for p in render if os.access(p, os.R_OK | os.W_OK)]
    return facts


def preflight(spec: Any) -> Dict[str, Any]:
    """Before any work: OpenVINO imports and the requested device is there."""
    ov = _OpenVINO()
    device = requested_device(spec)
    check_available(ov, device)
    return {"runtime": "openvino", "runtime_version": ov.version, "device": device}
