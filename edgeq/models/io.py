"""Keras model files: save atomically, load a user's or edgeq's own model (float, ternary or QAT) and
check that it fits the data it is about to be trained, distilled or exported with.

A model edgeq saves may get a record next to it (``student.keras`` → ``student.keras.edgeq.json``)
naming the dataset it was trained on, so that a later command given other data (``edgeq export``
without ``--data`` defaults to digits) says so instead of writing the wrong labels.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeq import tfenv
from edgeq.data import DataOptions, Dataset
from edgeq.errors import UserInputError
from edgeq.files import atomic_path, read_json, write_json

RECORD_SCHEMA = "edgeq.keras/1"


def record_path(path: Path) -> Path:
    """``student.keras`` → ``student.keras.edgeq.json`` (never the name of a .tflite's sidecar)."""
    return path.with_name(path.name + ".edgeq.json")


def save_model(model: Any, path: Path, *, dataset: Dataset | None = None) -> None:
    """Save under a temporary name next to ``path``, then rename (never a half-written model).

    With ``dataset``, also write the record of the data it was trained on (see :func:`read_record`).
    """
    with atomic_path(path) as tmp, tfenv.quiet_native():  # tf_keras warns that .h5 is legacy
        model.save(tmp)
    if dataset is not None:
        write_json(
            record_path(path),
            {
                "schema": RECORD_SCHEMA,
                "model": path.name,
                "input_shape": list(dataset.input_shape),
                "labels": list(dataset.labels),
                "dataset": dataset.summary(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )


def read_record(path: Path) -> dict[str, Any] | None:
    """The record :func:`save_model` wrote next to a Keras model, or None."""
    p = record_path(path)
    if not p.is_file():
        return None
    data = read_json(p, "model record", f"delete {p.name}; it is rewritten when the model is saved again")
    return data if isinstance(data, dict) else None


def recorded_data_options(path: Path) -> DataOptions | None:
    """The data a Keras model was trained on (from its record), for a command given no ``--data``."""
    rec = read_record(path)
    d = (rec or {}).get("dataset") or {}
    if not d.get("source"):
        return None
    size = d.get("image_size") or (32, 32)
    return DataOptions(
        source=None if d["source"] == "digits" else str(d.get("path")),
        image_size=(int(size[0]), int(size[1])),
        seed=int(d.get("seed", 0)),
    )


def _data_hint(model_shape: tuple[int, ...]) -> str:
    h, w = (*model_shape, 0, 0)[:2]
    return f"pass the data it was trained on with --data (an image folder also with --image-size {h}x{w})"


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def check_fits(model: Any, path: Path, ds: Dataset) -> None:
    """The model takes the dataset's images, has one output per class, and (when its record says
    which data it was trained on) has the dataset's labels."""
    got_in = tuple(int(d) for d in model.input_shape[1:])
    if got_in != tuple(ds.input_shape):
        raise UserInputError(
            f"{path.name} takes {_dims(got_in)} images, but the dataset {ds.name!r} gives "
            f"{_dims(ds.input_shape)}",
            _data_hint(got_in),
        )
    got_out = int(model.output_shape[-1])
    if got_out != ds.num_classes:
        raise UserInputError(
            f"{path.name} has {got_out} outputs, but the dataset {ds.name!r} has {ds.num_classes} classes",
            _data_hint(got_in),
        )
    rec = read_record(path)
    want = (rec or {}).get("labels")
    if want and list(want) != list(ds.labels):
        trained = (rec or {}).get("dataset") or {}
        where = trained.get("path") or trained.get("source") or "another dataset"
        raise UserInputError(
            f"{path.name} was trained on {where} (labels {', '.join(want[:5])}{', ...' if len(want) > 5 else ''}), "
            f"but the dataset {ds.name!r} has labels {', '.join(ds.labels[:5])}"
            f"{', ...' if ds.num_classes > 5 else ''}",
            f"pass --data {where}" if where != "another dataset" else _data_hint(got_in),
        )


def is_qat(path: Path) -> bool:
    """A QAT model was saved by ``qat`` as .h5 with tfmot's quantize wrappers inside."""
    if path.suffix != ".h5" or not path.is_file():
        return False
    with open(path, "rb") as f:
        return b"QuantizeWrapper" in f.read()


DataSpec = Dataset | tuple[int, int, int]


def _check(model: Any, path: Path, data: DataSpec, num_classes: int | None) -> Any:
    if isinstance(data, Dataset):
        check_fits(model, path, data)
        return model
    got_in = tuple(int(d) for d in model.input_shape[1:])
    if got_in != tuple(data):
        raise UserInputError(
            f"{path.name} takes {_dims(got_in)} images, but the dataset gives {_dims(tuple(data))}",
            _data_hint(got_in),
        )
    if num_classes is not None and int(model.output_shape[-1]) != num_classes:
        raise UserInputError(
            f"{path.name} has {model.output_shape[-1]} outputs, but the dataset has {num_classes} classes",
            _data_hint(got_in),
        )
    return model


def load_any(path: Path, data: DataSpec, num_classes: int | None = None) -> tuple[Any, bool]:
    """A float / ternary / QAT model checked against the dataset; and whether it is QAT.

    ``data`` is the Dataset (input shape, classes and, where the model has a record, labels are
    checked), or the older form ``input_shape, num_classes``.
    """
    return _check(load_keras_file(path), path, data, num_classes), is_qat(path)


def load_qat_model(path: Path) -> Any:
    """Load a QAT model saved by ``edgeq qat`` (tfmot's and edgeq's custom objects in scope)."""
    from edgeq.ops.layers import custom_objects

    mot = tfenv.tfmot()
    k = tfenv.keras()
    with mot.quantization.keras.quantize_scope(custom_objects()), tfenv.quiet_native():
        return k.models.load_model(path, compile=False)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def load_keras_file(path: Path) -> Any:
    """Load a ``.keras`` / ``.h5`` model (float, ternary or QAT) without checking it against data."""
    k = tfenv.keras()
    hint = "save it with tf_keras (model.save('teacher.keras'))"
    if not path.exists():
        raise UserInputError(f"model not found: {path}", "check the path")
    if path.suffix not in (".keras", ".h5"):
        raise UserInputError(f"unsupported model file {path.name}: expected .keras or .h5", hint)
    refuse_keras3(path)
    if is_qat(path):
        try:
            return load_qat_model(path)
        except Exception as exc:
            raise UserInputError(
                f"cannot load QAT model {path.name}: {_first_line(exc)}", "re-run 'edgeq qat'"
            ) from exc
    from edgeq.ops.layers import custom_objects  # edgeq's own ternary students load too

    try:
        with k.utils.custom_object_scope(custom_objects()):
            return k.models.load_model(path, compile=False)
    except Exception as exc:  # tf_keras raises many types for unreadable files
        raise UserInputError(f"cannot load {path.name}: {_first_line(exc)}", hint) from exc


def load_user_model(path: Path, data: DataSpec, num_classes: int | None = None) -> Any:
    """Load a user's ``.keras`` / ``.h5`` model and check it fits the dataset (see :func:`load_any`)."""
    return _check(load_keras_file(path), path, data, num_classes)


# Keras 3 files (``import keras`` in TensorFlow >= 2.16) -------------------------------------------


def saved_keras_version(path: Path) -> str | None:
    """The Keras version that wrote a ``.keras`` or ``.h5`` file, read from the file itself: a
    ``.keras`` zip's ``metadata.json``, an HDF5 file's ``keras_version`` attribute. None when the
    file does not say (or is not readable: loading it will say why)."""
    import json
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                if "metadata.json" not in z.namelist():
                    return None
                version = json.loads(z.read("metadata.json")).get("keras_version")
        else:
            with open(path, "rb") as f:
                if f.read(8) != b"\x89HDF\r\n\x1a\n":
                    return None
            import h5py

            with h5py.File(path, "r") as h5:
                version = h5.attrs.get("keras_version")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if isinstance(version, bytes):
        version = version.decode(errors="replace")
    return str(version) if version else None


def refuse_keras3(path: Path) -> None:
    """tf_keras (Keras 2), which edgeq trains and quantizes with, cannot read a Keras 3 file; say so
    instead of tf_keras's message about ``batch_shape``."""
    version = saved_keras_version(path)
    if version is None or not version.split(".")[0].isdigit() or int(version.split(".")[0]) < 3:
        return
    raise UserInputError(
        f"{path.name} is a Keras 3 file (saved by Keras {version}); edgeq reads Keras 2 (tf_keras) models only",
        "save it from tf_keras: build the same model with 'import tf_keras as keras' (or run your script with "
        "TF_USE_LEGACY_KERAS=1 so that tf.keras is tf_keras), copy the weights with "
        f"model.set_weights(keras3_model.get_weights()), then model.save('{path.stem}_tf_keras.keras')",
    )
