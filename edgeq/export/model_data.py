"""The data a model is scored (``profile --test-data``) or debugged (``inspect --debug-quant``) on,
through the model's own preprocessing.

* The model's own dataset (the source its sidecar records): only its test split, with the seed,
  fractions, image size and colour mode the training used — never a sample it was trained on.
* Any other data: every sample, in file order, resized and converted to what the model takes
  (image size and colour mode from the model and its sidecar), scaled as the model's data was.
* Classes are matched to the model's labels by name, so a test set holding some of the classes, or
  them in another order, is scored against the right outputs.

>>> d = model_test_data(Path("runs/first/model.tflite"), "digits")   # digits' test split, 360 images
>>> d.x.shape, d.y.shape, d.description
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.data import Preprocessing, load_dataset, read_samples
from edgeq.data.datasets import is_digits
from edgeq.data.preprocess import MODES
from edgeq.errors import UserInputError
from edgeq.export.sidecar import read_sidecar


@dataclass(frozen=True)
class ModelData:
    """``x`` float32 NHWC in the model's input shape, ``y`` indices into ``labels`` (the model's)."""

    x: np.ndarray
    y: np.ndarray
    labels: tuple[str, ...]
    description: str
    split: str  # "test": the model's own test split; "all": every sample of other data
    warnings: tuple[str, ...] = ()


def model_io(model: Path) -> tuple[tuple[int, int, int], int]:
    """((H, W, C) of the model's first input, the size of its first output), read from the .tflite."""
    from edgeq.export.tflite_model import describe

    info = describe(Path(model))
    shape = info.tensor(info.inputs[0]).shape
    if len(shape) != 4:
        raise UserInputError(
            f"{Path(model).name} takes inputs of shape {list(shape)}, not images (N, H, W, C)",
            "score it with your own code; edgeq's test data are images",
        )
    out = info.tensor(info.outputs[0]).shape
    return (int(shape[1]), int(shape[2]), int(shape[3])), int(out[-1]) if out else 1


def model_preprocessing(side: Mapping[str, Any] | None, shape: tuple[int, int, int]) -> Preprocessing:
    """The sidecar's preprocessing, or (no sidecar) what the model's input shape implies."""
    h, w, c = shape
    rec = (side or {}).get("preprocessing") or ((side or {}).get("dataset") or {}).get("preprocessing")
    if rec:
        pre = Preprocessing.from_dict(rec)
        if pre.channels == c:
            return Preprocessing((h, w), pre.colour_mode, pre.resize, pre.divide_by)
    if c not in MODES:
        raise UserInputError(
            f"the model takes {c}-channel images; edgeq's test data have 1, 3 or 4 channels",
            "score it with your own code",
        )
    return Preprocessing((h, w), MODES[c], "bilinear", 255.0)


def same_source(own: Mapping[str, Any], data: str | Path | None) -> bool:
    """Whether ``data`` names the dataset the sidecar records (digits, or the same file or folder)."""
    if own.get("source") == "digits":
        return is_digits(data)
    if is_digits(data) or not own.get("path"):
        return False
    try:
        return Path(str(own["path"])).resolve() == Path(str(data)).expanduser().resolve()
    except OSError:
        return False


def model_test_data(model: Path, data: str | Path | None = None, *, limit: int | None = None) -> ModelData:
    """The samples to score ``model`` on, from ``data`` ('digits', a .npz or an image folder; None: the
    model's own dataset as its sidecar records it), through the model's own preprocessing.

    ``limit``: at most this many samples (the first ones).
    """
    model = Path(model)
    side = read_sidecar(model)
    shape, outputs = model_io(model)
    pre = model_preprocessing(side, shape)
    own = (side or {}).get("dataset") or {}
    model_labels = tuple(str(v) for v in (side or {}).get("labels") or ()) or None
    warnings: list[str] = []
    if data is None:
        if not own.get("source"):
            raise UserInputError(
                f"{model.name} has no sidecar naming the data it was made from",
                "pass the data with --data ('digits', a .npz file or an image folder)",
            )
        data = "digits" if own["source"] == "digits" else str(own.get("path"))
        if not is_digits(data) and not Path(data).exists():
            raise UserInputError(
                f"the dataset {data} that {model.name} was made from is missing",
                "pass the data with --data ('digits', a .npz file or an image folder)",
            )

    if own and same_source(own, data):
        size = own.get("image_size") or list(pre.image_size)
        ds = load_dataset(
            None if is_digits(data) else data,
            image_size=(int(size[0]), int(size[1])),
            seed=int(own.get("seed", 0)),
            val_fraction=float(own.get("val_fraction", 0.15)),
            test_fraction=float(own.get("test_fraction", 0.2)),
            colour_mode=pre.colour_mode if own.get("source") == "folder" else None,
        )
        if own.get("sha256") and ds.fingerprint() != own["sha256"]:
            warnings.append(
                f"{ds.name} has changed since {model.name} was made (its sha256 differs from the "
                "sidecar's): its test split may hold images the model was trained on"
            )
        x, y, labels, name = ds.x_test, ds.y_test, ds.labels, ds.name
        split = "test"
        description = f"the test split of {name}, the model's own dataset ({len(y)} of {_total(ds)} samples)"
    else:
        s = read_samples(data, image_size=pre.image_size, colour_mode=pre.colour_mode, fit=True, copies=1)
        x, y, labels, name, split = s.x, s.y, s.labels, s.name, "all"
        warnings += list(s.warnings)
        warnings += _range_warning(name, s.x, own.get("value_range"))
        description = f"every sample of {name} ({len(y)}), preprocessed as the model's data"
    if tuple(x.shape[1:]) != shape:
        raise UserInputError(
            f"the test data have shape {tuple(x.shape[1:])} but {model.name} takes {shape}",
            "pass test data of the model's image size",
        )
    y, labels = _to_model_labels(y, labels, model_labels, name)
    if len(y) and int(y.max()) >= outputs:
        raise UserInputError(
            f"{name} has {len(labels)} classes but {model.name} has {outputs} outputs",
            "pass test data with the model's classes",
        )
    if limit is not None and limit < len(y):
        x, y = x[:limit], y[:limit]
        description += f"; the first {limit}"
    return ModelData(
        np.ascontiguousarray(x, dtype=np.float32), y, labels, description, split, tuple(warnings)
    )


def _range_warning(name: str, x: np.ndarray, model_range: Any) -> list[str]:
    """A test set whose values live on another scale than the model's data (e.g. 0-255 floats for a
    model trained on [0, 1]) would be scored wrongly: say so."""
    if not model_range or not x.size:
        return []
    top, model_top = float(np.abs(x).max()), max(abs(float(v)) for v in model_range)
    if model_top > 0 and top > 0 and not 0.25 <= top / model_top <= 4.0:
        return [
            f"{name} has values up to {top:g} but the model's data went up to {model_top:g}: "
            "it is on another scale, and the accuracy may be meaningless"
        ]
    return []


def _total(ds: Any) -> int:
    return len(ds.y_train) + len(ds.y_val) + len(ds.y_test)


def _to_model_labels(
    y: np.ndarray, data_labels: tuple[str, ...], model_labels: tuple[str, ...] | None, name: str
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``y`` as indices of the model's outputs: classes matched by name (or, for data whose classes
    are bare numbers, by number)."""
    if model_labels is None or tuple(data_labels) == tuple(model_labels):
        return y.astype(np.int64), tuple(model_labels or data_labels)
    if set(data_labels) <= set(model_labels):
        index = np.array([model_labels.index(label) for label in data_labels], dtype=np.int64)
        return index[y], model_labels
    if all(label.isdigit() and int(label) < len(model_labels) for label in data_labels):
        index = np.array([int(label) for label in data_labels], dtype=np.int64)
        return index[y], model_labels
    unknown = [label for label in data_labels if label not in model_labels]
    raise UserInputError(
        f"{name} has classes the model does not know ({', '.join(unknown[:5])}"
        f"{', ...' if len(unknown) > 5 else ''}); its labels are {', '.join(model_labels[:10])}"
        f"{', ...' if len(model_labels) > 10 else ''}",
        "pass test data whose classes (folder names, or the .npz 'labels') are the model's",
    )
