"""Keras model files: save atomically, load a user's or edgeq's own model (float, ternary or QAT)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeq import tfenv
from edgeq.errors import UserInputError
from edgeq.files import atomic_path


def save_model(model: Any, path: Path) -> None:
    """Save under a temporary name next to ``path``, then rename (never a half-written model)."""
    with atomic_path(path) as tmp, tfenv.quiet_native():  # tf_keras warns that .h5 is legacy
        model.save(tmp)


def is_qat(path: Path) -> bool:
    """A QAT model was saved by ``qat`` as .h5 with tfmot's quantize wrappers inside."""
    if path.suffix != ".h5" or not path.is_file():
        return False
    with open(path, "rb") as f:
        return b"QuantizeWrapper" in f.read()


def load_any(path: Path, input_shape: tuple[int, int, int], num_classes: int) -> tuple[Any, bool]:
    """A float / ternary model (checked against the dataset), or a QAT model; and whether it is QAT."""
    if is_qat(path):
        try:
            return load_qat_model(path), True
        except Exception as exc:
            raise UserInputError(f"cannot load QAT model {path.name}: {exc}", "re-run 'edgeq qat'") from exc
    return load_user_model(path, input_shape, num_classes), False


def load_qat_model(path: Path) -> Any:
    """Load a QAT model saved by ``edgeq qat`` (tfmot's and edgeq's custom objects in scope)."""
    from edgeq.ops.layers import custom_objects

    mot = tfenv.tfmot()
    k = tfenv.keras()
    with mot.quantization.keras.quantize_scope(custom_objects()):
        return k.models.load_model(path, compile=False)


def load_user_model(path: Path, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    """Load a user's ``.keras`` / ``.h5`` model and check it fits the dataset."""
    k = tfenv.keras()
    hint = "save it with tf_keras (model.save('teacher.keras')) for inputs of the dataset's shape"
    if not path.exists():
        raise UserInputError(f"model not found: {path}", "check the path")
    if path.suffix not in (".keras", ".h5"):
        raise UserInputError(f"unsupported model file {path.name}: expected .keras or .h5", hint)
    from edgeq.ops.layers import custom_objects  # edgeq's own ternary students load too

    try:
        with k.utils.custom_object_scope(custom_objects()):
            model = k.models.load_model(path, compile=False)
    except Exception as exc:  # tf_keras raises many types for unreadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"cannot load {path.name}: {first}", hint) from exc
    got_in = tuple(model.input_shape[1:])
    if got_in != tuple(input_shape):
        raise UserInputError(
            f"{path.name} takes inputs of shape {got_in} but the dataset has {tuple(input_shape)}", hint
        )
    got_out = model.output_shape[-1]
    if got_out != num_classes:
        raise UserInputError(
            f"{path.name} has {got_out} outputs but the dataset has {num_classes} classes", hint
        )
    return model
