"""Reading ``.tflite`` files: the one place the host parses a flatbuffer.

Through the schema that ships with the runtime (``ai_edge_litert.schema_py_generated`` and its
``tools.flatbuffer_utils`` object API), never by hand. The device-side runner keeps a minimal
stdlib reader of its own (:mod:`edgeq.runner.modelfile`), tested against this one.

>>> m = read_model(Path("model.tflite"))
>>> [op_name(m.model, op) for op in m.model.subgraphs[0].operators]
['CONV_2D', 'MAX_POOL_2D', ...]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgeq.errors import UserInputError
from edgeq.files import sha256_bytes

TFLITE_IDENTIFIER = b"TFL3"
_HINT = "pass a .tflite file written by 'edgeq export' or the TFLite converter"


def schema() -> Any:
    """The generated schema module (``BuiltinOperator``, ``TensorType``, ``BuiltinOptions``, ...)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _utils() -> Any:
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def check_file(path: Path) -> Path:
    """A readable file with the TFLite identifier, or one UserInputError (before any work)."""
    path = Path(path)
    try:
        path.stat()
    except FileNotFoundError:
        raise UserInputError(f"model not found: {path}", "check the path of the .tflite file") from None
    except OSError as exc:  # a name too long for the file system, a component that is a file, ...
        raise UserInputError(
            f"cannot use model path {str(path)[:80]}…: {exc.strerror}", "check the path"
        ) from None
    if not path.is_file():
        raise UserInputError(f"model is not a file: {path}", "pass the .tflite file itself")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise UserInputError(f"cannot read model {path}: {exc.strerror}", "check its permissions") from exc
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise UserInputError(
            f"{path.name} is not a TFLite model (no 'TFL3' identifier at bytes 4-8)",
            "convert the model to .tflite first (edgeq export), then pass the .tflite file",
        )
    return path


def read_bytes(path: Path) -> bytes:
    """The bytes of a file that must be a TFLite flatbuffer."""
    check_file(path)
    return Path(path).read_bytes()


@dataclass(frozen=True)
class TFLiteFile:
    """A parsed model: ``model`` is the schema's ``ModelT`` (object API), ``data`` the file's bytes."""

    name: str
    data: bytes
    model: Any

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.data)

    @property
    def subgraph(self) -> Any:
        return self.model.subgraphs[0]

    def op_name(self, op: Any) -> str:
        return op_name(self.model, op)

    def tensor_type(self, tensor: Any) -> str:
        return tensor_type_name(tensor.type)


def parse(data: bytes, name: str = "model") -> TFLiteFile:
    """Parse flatbuffer bytes; damaged files are one UserInputError."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise UserInputError(f"{name} is not a TFLite model (no TFL3 identifier)", _HINT)
    try:
        model = _utils().read_model_from_bytearray(bytearray(data))
    except Exception as exc:  # flatbuffers raises assorted errors on damaged files
        raise UserInputError(f"{name} is a damaged TFLite model: {exc}", "export it again") from None
    if not model.subgraphs:
        raise UserInputError(f"{name} has no subgraph", "export it again")
    return TFLiteFile(name, bytes(data), model)


def read_model(path: Path) -> TFLiteFile:
    return parse(read_bytes(path), Path(path).name)


def serialize(model: Any) -> bytes:
    """``ModelT`` back to flatbuffer bytes (with the TFL3 identifier)."""
    return bytes(_utils().convert_object_to_bytearray(model))


@cache
def _enum_names(enum_name: str) -> dict[int, str]:
    enum_cls = getattr(schema(), enum_name)
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_name(code: int) -> str:
    return _enum_names("BuiltinOperator").get(code, str(code))


def tensor_type_name(code: int) -> str:
    """``TensorType`` code → lower-case NumPy-style name (``int8``, ``float32``...)."""
    return _enum_names("TensorType").get(code, str(code)).lower()


def builtin_code(model: Any, op: Any) -> int:
    return int(_utils().get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]))


def op_name(model: Any, op: Any) -> str:
    """The op's builtin name (``CONV_2D``), or its custom code for a custom op."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = builtin_code(model, op)
    if builtin == schema().BuiltinOperator.CUSTOM:
        return code.customCode.decode() if code.customCode else "CUSTOM"
    return builtin_name(builtin)


def custom_ops(model: Any) -> list[tuple[int, str]]:
    """(op index, custom code) of every custom op in the first subgraph."""
    out = []
    for i, op in enumerate(model.subgraphs[0].operators or []):
        if builtin_code(model, op) == schema().BuiltinOperator.CUSTOM:
            out.append((i, op_name(model, op)))
    return out
